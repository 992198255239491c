"""verify_model end to end on model-shaped state dicts, beside the bare hash of the same tensors.

verify_model (C++, sentry::verify_model) launches the hash of every tensor (one hash_tensors call
per device) while background threads read the bundle, check its ECDSA signature and, at the same
time, parse the statement (a bundle already verified with the same key is memoised), then matches
names, dtypes and shapes, uploads the expected digests once, compares on the device and copies
one flag per tensor back. Issue 13's targets, on an H200:
GPT-2-XL-shaped end to end <= its bare hash + 1 ms, ResNet-152-shaped <= 1.5 ms.

For each model this prints: the bare hash (hash_tensors, synchronised); verify_model through
Python (sentry.verify_model) on a bundle opened for the first time (the memo of verified bundles
cleared before each call; once back to back, once 20 ms after the previous call, when the
background threads have gone to sleep and must be woken) and on a memoised one (the same bytes,
already verified with the same key); through the binding alone (no Python argument checks); and
both Python cases again with no background threads (every host step in order on the calling
thread); each as median and min over --reps runs after warm-up, the overhead over the bare hash,
the target, and the median of each step verify_model reports.

    python benchmarks/bench_verify.py                       # both models, cuda if present
    python benchmarks/bench_verify.py --models resnet152 --device cpu --reps 5
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout

from sentry_ops import _C, hash_tensors  # noqa: E402
from sentry.crypto import PrivateKey  # noqa: E402
from sentry.pipeline.shaped_models import MODELS, shaped_state_dict, state_dict_bytes  # noqa: E402
from sentry.oms.signing import sign_model, verify_model  # noqa: E402

TARGETS = {"gpt2-xl": ("hash + 1 ms", lambda hash_ms: hash_ms + 1.0),
           "resnet152": ("1.5 ms", lambda hash_ms: 1.5)}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _times(fn, device, reps, warmup=3, before=None):
    """Wall milliseconds of each of `reps` calls (each ends synchronised), after warm-up;
    `before` runs untimed before each call."""
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(reps):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def bench(model, device, algorithm, reps):
    state = shaped_state_dict(model, device)
    key = PrivateKey.generate("P-256")
    public = key.public_key()
    names, tensors = list(state), list(state.values())
    with tempfile.TemporaryDirectory() as tmp:
        sig = os.path.join(tmp, "model.sig")
        sign_model(state, key, sig, algorithm=algorithm)
        size = os.path.getsize(sig)
        hash_ms = _times(lambda: hash_tensors(tensors, algorithm), device, reps)
        parts = {}

        def python_verify():
            result = verify_model(state, sig, public_key=public)
            for k, v in result.timings_ms.items():
                parts.setdefault(k, []).append(v)

        first_ms = _times(python_verify, device, reps, before=_C.bundle.clear_bundle_memo)
        first_parts, parts = parts, {}

        def after_idle():  # the background threads spin 1 ms after their work, then sleep
            _C.bundle.clear_bundle_memo()
            time.sleep(0.02)

        idle_ms = _times(python_verify, device, reps, before=after_idle)
        parts = {}
        python_ms = _times(python_verify, device, reps)
        memo_parts, parts = parts, {}
        trust = _C.bundle.Trust.public_key(public._key)
        binding_ms = _times(lambda: _C.bundle.verify_model(names, tensors, sig, trust), device, reps)
        # The same with every host step in order on the calling thread (no background threads).
        threads = _C.bundle.background_threads()
        _C.bundle.set_background_threads(0)
        try:
            serial_first_ms = _times(python_verify, device, reps, before=_C.bundle.clear_bundle_memo)
            serial_first_parts, parts = parts, {}
            serial_ms = _times(python_verify, device, reps)
            parts = {}
        finally:
            _C.bundle.set_background_threads(threads)
    label, target = TARGETS.get(model, ("-", lambda h: float("nan")))
    hash_med = statistics.median(hash_ms)
    e2e = statistics.median(first_ms)
    print(f"\n{model}: {len(state)} tensors, {state_dict_bytes(state) / 1e9:.2f} GB on {device}, "
          f"{algorithm}; bundle {size / 1e3:.0f} kB")
    print(f"  {'':36} {'median':>9} {'min':>9}")
    for what, ms in (("bare hash (hash_tensors + sync)", hash_ms),
                     ("sentry.verify_model, first open", first_ms),
                     ("first open, 20 ms after the last call", idle_ms),
                     ("sentry.verify_model, bundle memoised", python_ms),
                     ("_C.bundle.verify_model, memoised", binding_ms),
                     ("no background threads: first open", serial_first_ms),
                     ("no background threads: memoised", serial_ms)):
        print(f"  {what:<36} {statistics.median(ms):8.3f}  {min(ms):8.3f} ms")
    goal = target(hash_med)
    repeat = statistics.median(python_ms)
    print(f"  first open: overhead over the bare hash {e2e - hash_med:.3f} ms; target {label} = "
          f"{goal:.3f} ms: {'met' if e2e <= goal else 'NOT met'}")
    print(f"  bundle memoised: overhead {repeat - hash_med:.3f} ms; target: "
          f"{'met' if repeat <= goal else 'NOT met'}")
    for title, steps in (("first open", first_parts), ("memoised", memo_parts),
                         ("first open, no background threads", serial_first_parts)):
        print(f"  steps, {title} (median ms):")
        for k, v in steps.items():
            print(f"    {k:<26} {statistics.median(v):8.3f}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["gpt2-xl", "resnet152"], choices=MODELS)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--algorithm", default="blake3")
    p.add_argument("--reps", type=int, default=30)
    args = p.parse_args()
    device = torch.device(args.device)
    print(f"verify_model vs the bare hash; torch {torch.__version__}, "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}")
    for model in args.models:
        bench(model, device, args.algorithm, args.reps)


if __name__ == "__main__":
    main()
