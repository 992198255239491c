"""Hashing benchmark: model-shaped state dicts through hash_tensors, against the naive way.

Prints a table (algorithm, device, ms per model, GB/s, fraction of the device's copy
bandwidth) and the naive baseline (`.cpu()` then hashlib.sha256 per tensor). Timings are the
median of repeated runs after warm-up; CUDA times come from CUDA events on the current stream.
Each row is printed as soon as it is measured; what is being measured goes to stderr.
Run it as `sentry bench`, `python3 -m sentry.bench` or `python3 benchmarks/bench_hash.py`.
"""
import argparse
import hashlib
import json
import statistics
import sys
import time

import torch

from sentry_ops import ALGORITHMS, hash_rows, hash_tensors

from .arguments import positive_int
from ..pipeline.shaped_models import MODELS, real_state_dict, shaped_state_dict, state_dict_bytes


def _progress(text):
    """What is being measured, on stderr; on a terminal the next row overwrites it."""
    if sys.stderr.isatty():
        print(f"\r\033[K{text}", end="", file=sys.stderr, flush=True)
    else:
        print(text, file=sys.stderr, flush=True)


def _row(text):
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    print(text, flush=True)


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
    for name in devices:
        if torch.device(name).type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--devices {name}: CUDA is not available on this machine")
    rows = []
    header = (f"{'model':<18} {'tensors':>7} {'GB':>6} {'algorithm':<12} {'device':<6} "
              f"{'ms/model':>9} {'wall ms':>8} {'GB/s':>8} {'% copy':>7} {'naive ms':>9} {'x naive':>8}")
    _row(header)
    _row("-" * len(header))
    total = len(devices) * len(models) * len(algorithms)
    done = 0
    for device_name in devices:
        device = torch.device(device_name)
        _progress(f"bench: {device_name}: copy bandwidth")
        copy_bw = copy_read_bandwidth(device)
        _row(f"# {device_name}: copy reads {copy_bw / 1e9:.0f} GB/s "
             f"({2 * copy_bw / 1e12:.2f} TB/s read + write); threads={torch.get_num_threads()}")
        for model in models:
            _progress(f"bench: [{done + 1}/{total}] {model} on {device_name}: building the state dict")
            sd, how = build_state_dict(model, device, source)
            tensors = list(sd.values())
            nbytes = state_dict_bytes(sd)
            if naive:
                _progress(f"bench: [{done + 1}/{total}] {model} on {device_name}: naive baseline")
            base_ms = naive_ms(sd) if naive else None
            for algorithm in algorithms:
                done += 1
                _progress(f"bench: [{done}/{total}] {model} {algorithm} on {device_name}: "
                          f"{reps} runs")
                ms, wall = time_call(lambda: hash_tensors(tensors, algorithm), device, reps)
                gbps = nbytes / (ms / 1e3) / 1e9
                row = dict(model=model, source=how, tensors=len(tensors), gb=nbytes / 1e9,
                           algorithm=algorithm, device=device_name, ms=ms, wall_ms=wall,
                           gbps=gbps, copy_fraction=gbps * 1e9 / copy_bw, naive_ms=base_ms)
                rows.append(row)
                naive_txt = f"{base_ms:9.1f} {base_ms / wall:8.1f}" if base_ms else f"{'-':>9} {'-':>8}"
                _row(f"{model:<18} {len(tensors):>7} {nbytes / 1e9:6.3f} {algorithm:<12} "
                     f"{device_name:<6} {ms:9.3f} {wall:8.3f} {gbps:8.1f} "
                     f"{100 * row['copy_fraction']:6.1f}% {naive_txt}")
            del sd, tensors
        batch = torch.randint(0, 256, (512, 3, 32, 32), dtype=torch.uint8, device=device)
        for algorithm in algorithms:
            _progress(f"bench: hash_rows {algorithm} on {device_name}")
            ms, wall = time_call(lambda: hash_rows(batch, algorithm), device, reps)
            _row(f"# hash_rows 512x3x32x32 uint8 {algorithm} on {device_name}: "
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
    _row(f"# CPU scaling, one {nbytes >> 20} MiB tensor")
    for algorithm in algorithms:
        line = []
        for threads in sorted({1, 2, total} & set(range(1, total + 1))):
            _progress(f"bench: CPU scaling, {algorithm}, {threads} threads")
            torch.set_num_threads(threads)
            ms, _ = time_call(lambda: hash_tensors([x], algorithm), torch.device("cpu"), reps, 1)
            line.append(f"{threads} threads {nbytes / ms / 1e6:.2f} GB/s")
        torch.set_num_threads(total)
        _row(f"#   {algorithm:<12} " + ", ".join(line))
    buf = x.numpy()
    t0 = time.perf_counter()
    hashlib.sha256(buf).digest()
    _row(f"#   hashlib (OpenSSL) sha256, 1 thread: "
         f"{nbytes / (time.perf_counter() - t0) / 1e9:.2f} GB/s")


def add_arguments(p):
    """The benchmark's options, on `p` (this module's parser and `sentry bench`'s)."""
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS, metavar="MODEL",
                   help="model shapes to hash, of %(choices)s (default: all)")
    p.add_argument("--devices", nargs="+", default=None, metavar="DEVICE",
                   help="devices to hash on, e.g. cuda cpu (default: cuda if present, and cpu)")
    p.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS,
                   metavar="ALGORITHM", help="digests to time, of %(choices)s (default: all)")
    p.add_argument("--reps", type=positive_int, default=10,
                   help="timed runs per row, after 3 warm-up runs; the median is shown "
                   "(default: %(default)s)")
    p.add_argument("--source", default="shapes", choices=["shapes", "real", "auto"],
                   help="state dicts from the shape lists kept in the package, the real "
                   "torchvision/transformers models, or those when installed "
                   "(default: %(default)s)")
    p.add_argument("--no-naive", action="store_true",
                   help="skip the naive baseline (.cpu() then hashlib.sha256 per tensor)")
    p.add_argument("--json", metavar="PATH", help="also write the rows to this JSON file (default: none)")
    return p


def run_args(args):
    """Runs the benchmark for parsed `add_arguments` options; returns the exit code."""
    devices = args.devices or (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]
    run(args.models, devices, args.algorithms, args.reps, args.source, not args.no_naive, args.json)
    if "cpu" in devices:
        cpu_scaling(args.algorithms)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m sentry.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    args = add_arguments(p).parse_args(argv)
    try:
        return run_args(args)
    except ValueError as exc:
        print(f"{p.prog}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
