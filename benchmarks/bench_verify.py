"""verify_model end to end on a model-shaped state dict: read the bundle, check the ECDSA
signature, parse the statement, hash on the device, compare on the device.

    python benchmarks/bench_verify.py --model gpt2-xl --device cuda
"""
import argparse
import os
import statistics
import tempfile
import time

import torch

from sentry.crypto import PrivateKey
from sentry.models import MODELS, shaped_state_dict, state_dict_bytes
from sentry.signing import sign_model, verify_model


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="gpt2-xl", choices=MODELS)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--algorithm", default="blake3")
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    state = shaped_state_dict(args.model, args.device)
    key = PrivateKey.generate("P-256")
    with tempfile.TemporaryDirectory() as tmp:
        sig = os.path.join(tmp, "model.sig")
        t0 = time.perf_counter()
        sign_model(state, key, sig, algorithm=args.algorithm)
        sign_ms = (time.perf_counter() - t0) * 1e3
        public = key.public_key()
        for _ in range(3):
            verify_model(state, sig, public_key=public)
        totals, parts = [], {}
        for _ in range(args.reps):
            t0 = time.perf_counter()
            result = verify_model(state, sig, public_key=public)
            totals.append((time.perf_counter() - t0) * 1e3)
            for k, v in result.timings_ms.items():
                parts.setdefault(k, []).append(v)
    print(f"verify_model {args.model} ({len(state)} tensors, {state_dict_bytes(state) / 1e9:.2f} GB) "
          f"on {args.device}, {args.algorithm}; sign took {sign_ms:.1f} ms")
    print(f"  end to end: median {statistics.median(totals):.2f} ms, min {min(totals):.2f} ms "
          f"over {args.reps} runs")
    for k, v in parts.items():
        print(f"  {k:<18} {statistics.median(v):8.3f} ms")


if __name__ == "__main__":
    main()
