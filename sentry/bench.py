"""Hashing benchmark: model-shaped state dicts through hash_tensors, against the naive way.

Prints a table (algorithm, device, ms per model, GB/s, fraction of the device's copy
bandwidth) and the naive baseline (`.cpu()` then hashlib.sha256 per tensor). Timings are the
median of repeated runs after warm-up; CUDA times come from CUDA events on the current stream.
"""
import argparse
import hashlib
import json
import statistics
import time

import torch

from sentry_ops import ALGORITHMS, hash_rows, hash_tensors

from .models import MODELS, real_state_dict, shaped_state_dict, state_dict_bytes


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device, reps, warmup=3):
    """(median device ms, median wall ms including launch and sync) over reps calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    device_ms, wall_ms = [], []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            start.record()
            fn()
            end.record()
            end.synchronize()
            wall_ms.append((time.perf_counter() - t0) * 1e3)
            device_ms.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            wall_ms.append((time.perf_counter() - t0) * 1e3)
            device_ms.append(wall_ms[-1])
    return statistics.median(device_ms), statistics.median(wall_ms)


def copy_read_bandwidth(device, nbytes=1 << 30):
    """Bytes read per second by a device-to-device copy (half its read + write traffic)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    ms, _ = time_call(lambda: dst.copy_(src), device, reps=10)
    return nbytes / (ms / 1e3)


def naive_ms(state_dict):
    """The prototype's way: copy each tensor to the host, then hashlib.sha256 it."""
    tensors = list(state_dict.values())
    device = tensors[0].device
    _sync(device)
    t0 = time.perf_counter()
    for t in tensors:
        host = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        hashlib.sha256(host).digest()
    return (time.perf_counter() - t0) * 1e3


def build_state_dict(model, device, source):
    if source in ("real", "auto"):
        sd = real_state_dict(model, device)
        if sd is not None:
            return sd, "real"
        if source == "real":
            raise SystemExit(f"cannot build the real {model}: torchvision/transformers missing")
    return shaped_state_dict(model, device), "shapes"


def run(models, devices, algorithms, reps, source, naive, out_json):
    rows = []
    header = (f"{'model':<18} {'tensors':>7} {'GB':>6} {'algorithm':<12} {'device':<6} "
              f"{'ms/model':>9} {'wall ms':>8} {'GB/s':>8} {'% copy':>7} {'naive ms':>9} {'x naive':>8}")
    print(header)
    print("-" * len(header))
    for device_name in devices:
        device = torch.device(device_name)
        copy_bw = copy_read_bandwidth(device)
        print(f"# {device_name}: copy reads {copy_bw / 1e9:.0f} GB/s "
              f"({2 * copy_bw / 1e12:.2f} TB/s read + write); threads={torch.get_num_threads()}")
        for model in models:
            sd, how = build_state_dict(model, device, source)
            tensors = list(sd.values())
            nbytes = state_dict_bytes(sd)
            base_ms = naive_ms(sd) if naive else None
            for algorithm in algorithms:
                ms, wall = time_call(lambda: hash_tensors(tensors, algorithm), device, reps)
                gbps = nbytes / (ms / 1e3) / 1e9
                row = dict(model=model, source=how, tensors=len(tensors), gb=nbytes / 1e9,
                           algorithm=algorithm, device=device_name, ms=ms, wall_ms=wall,
                           gbps=gbps, copy_fraction=gbps * 1e9 / copy_bw, naive_ms=base_ms)
                rows.append(row)
                naive_txt = f"{base_ms:9.1f} {base_ms / wall:8.1f}" if base_ms else f"{'-':>9} {'-':>8}"
                print(f"{model:<18} {len(tensors):>7} {nbytes / 1e9:6.3f} {algorithm:<12} "
                      f"{device_name:<6} {ms:9.3f} {wall:8.3f} {gbps:8.1f} "
                      f"{100 * row['copy_fraction']:6.1f}% {naive_txt}")
            del sd, tensors
        batch = torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8, device=device)
        for algorithm in algorithms:
            ms, wall = time_call(lambda: hash_rows(batch, algorithm), device, reps)
            print(f"# hash_rows 512x3x32x32 uint8 {algorithm} on {device_name}: "
                  f"{ms * 1e3:.1f} us device, {wall * 1e3:.1f} us wall")
            rows.append(dict(model="rows-512x3x32x32", algorithm=algorithm, device=device_name,
                             ms=ms, wall_ms=wall))
    if out_json:
        with open(out_json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


def cpu_scaling(algorithms, nbytes=256 << 20, reps=5):
    """GB/s of one large CPU tensor for 1 .. all threads (the CPU kernels' scaling)."""
    x = torch.empty(nbytes, dtype=torch.uint8).random_()
    total = torch.get_num_threads()
    print(f"# CPU scaling, one {nbytes >> 20} MiB tensor")
    for algorithm in algorithms:
        line = []
        for threads in sorted({1, 2, total} & set(range(1, total + 1))):
            torch.set_num_threads(threads)
            ms, _ = time_call(lambda: hash_tensors([x], algorithm), torch.device("cpu"), reps, 1)
            line.append(f"{threads} threads {nbytes / ms / 1e6:.2f} GB/s")
        torch.set_num_threads(total)
        print(f"#   {algorithm:<12} " + ", ".join(line))
    buf = x.numpy()
    t0 = time.perf_counter()
    hashlib.sha256(buf).digest()
    print(f"#   hashlib (OpenSSL) sha256, 1 thread: {nbytes / (time.perf_counter() - t0) / 1e9:.2f} GB/s")


def main(argv=None):
    p = argparse.ArgumentParser(prog="sentry bench", description=__doc__)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--devices", nargs="+", default=None, help="default: cuda if present, and cpu")
    p.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--source", default="shapes", choices=["shapes", "real", "auto"],
                   help="shape lists kept in the repo, or the real torchvision/transformers models")
    p.add_argument("--no-naive", action="store_true", help="skip the .cpu() + hashlib baseline")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    devices = args.devices or (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]
    run(args.models, devices, args.algorithms, args.reps, args.source, not args.no_naive, args.json)
    if "cpu" in devices:
        cpu_scaling(args.algorithms)
    return 0
