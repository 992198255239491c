"""`sentry demo`: hash a model-shaped state dict where it lives and show a tamper caught.

The embedded default is a ResNet-152-shaped state dict (932 tensors, 0.24 GB) with random
weights, built from the shape list in sentry/data, so the demo needs no download.
"""
import hashlib
import time

import torch

from sentry_ops import ALGORITHMS, hash_tensors

from . import digests_hex
from .models import shaped_state_dict, state_dict_bytes


def model_root(names, digests):
    """SHA-256 over the raw tensor digests in name order: the ROOT of SPEC §2."""
    order = sorted(range(len(names)), key=lambda i: names[i])
    raw = digests.cpu()
    return hashlib.sha256(b"".join(bytes(raw[i].tolist()) for i in order)).hexdigest()


def _timed(fn, device, reps=5):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, (time.perf_counter() - t0) / reps


def run(model="resnet152", device=None, show=3):
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"sentry demo: {model}-shaped state dict with random weights on {device}")
    state = shaped_state_dict(model, device)
    names, tensors = list(state), list(state.values())
    nbytes = state_dict_bytes(state)
    print(f"  {len(tensors)} tensors, {nbytes / 1e9:.3f} GB\n")
    roots = {}
    for algorithm in ALGORITHMS:
        digests, seconds = _timed(lambda: hash_tensors(tensors, algorithm), device)
        roots[algorithm] = model_root(names, digests)
        hexes = digests_hex(digests)
        print(f"  {algorithm}: {seconds * 1e3:.2f} ms per model, {nbytes / seconds / 1e9:.2f} GB/s")
        for name, h in list(zip(names, hexes))[:show]:
            print(f"    {h}  {name}")
        print(f"    ... ({len(names) - show} more)")
        print(f"    model root (SHA-256 of the digests in name order): {roots[algorithm]}\n")
        if device.type == "cuda":
            on_cpu = hash_tensors([t.cpu() for t in tensors], algorithm)
            same = torch.equal(on_cpu, digests.cpu())
            print(f"    CPU kernel gives the same {len(names)} digests: {same}\n")
            if not same:
                raise SystemExit("sentry demo: CPU and CUDA digests differ")

    # Tamper: flip one bit of one weight, in place, and find it by digest.
    victim = names[len(names) // 2]
    before = hash_tensors(tensors)
    flat = state[victim].view(-1).view(torch.uint8)
    flat[flat.numel() // 2] ^= 1
    after = hash_tensors(tensors)
    changed = [names[i] for i in torch.nonzero((before != after).any(dim=1)).flatten().tolist()]
    print(f"  tamper: flipped one bit of '{victim}'")
    print(f"    tensors whose digest changed: {changed}")
    if changed != [victim]:
        raise SystemExit("sentry demo: the tampered tensor was not identified")
    print("    caught: exactly the tampered tensor differs")
    return 0
