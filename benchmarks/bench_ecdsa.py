"""ECDSA P-256 verification throughput: torch.ops.sentry.ecdsa_p256_verify on CUDA against the
same op's CPU kernel (OpenSSL, all intra-op threads), batches 2^10 .. 2^20, in one run.

    python benchmarks/bench_ecdsa.py [--min-log 10] [--max-log 20] [--json out.json]

Inputs: --distinct (default 4096) random (key, message) pairs signed by OpenSSL through the
`cryptography` package, tiled to each batch size (signing a million fresh pairs in Python would
take minutes). Tiling does not help either kernel: every row is verified from scratch, nothing
is cached between rows. Every result is checked to be all True. CUDA times: CUDA events around
the op on the current stream, median of --reps after warm-up. CPU times: wall clock, median of
--cpu-reps.
"""
import argparse
import json
import random
import statistics
import time

import torch
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

import sentry_ops  # noqa: F401  registers torch.ops.sentry

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def signed_rows(count, seed=0):
    rng = random.Random(seed)
    keys, digests, sigs = bytearray(), bytearray(), bytearray()
    for _ in range(count):
        sk = ec.derive_private_key(rng.randrange(1, N), ec.SECP256R1())
        digest = rng.randbytes(32)
        der = sk.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        r, s = utils.decode_dss_signature(der)
        pub = sk.public_key().public_numbers()
        keys += pub.x.to_bytes(32, "big") + pub.y.to_bytes(32, "big")
        digests += digest
        sigs += r.to_bytes(32, "big") + s.to_bytes(32, "big")
    as_rows = lambda b, w: torch.frombuffer(b, dtype=torch.uint8).view(count, w)  # noqa: E731
    return as_rows(keys, 64), as_rows(digests, 32), as_rows(sigs, 64)


def tile(t, n):
    reps = (n + t.shape[0] - 1) // t.shape[0]
    return t.repeat(reps, 1)[:n].contiguous()


def time_cuda(args, reps, warmup=2):
    for _ in range(warmup):
        out = torch.ops.sentry.ecdsa_p256_verify(*args)
    torch.cuda.synchronize()
    ms = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = torch.ops.sentry.ecdsa_p256_verify(*args)
        end.record()
        end.synchronize()
        ms.append(start.elapsed_time(end))
    return statistics.median(ms), out


def time_cpu(args, reps):
    ms, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = torch.ops.sentry.ecdsa_p256_verify(*args)
        ms.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ms), out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--min-log", type=int, default=10)
    p.add_argument("--max-log", type=int, default=20)
    p.add_argument("--distinct", type=int, default=4096, help="signed pairs, tiled to each batch")
    p.add_argument("--reps", type=int, default=5, help="CUDA repetitions per batch (median)")
    p.add_argument("--cpu-reps", type=int, default=3)
    p.add_argument("--cpu-max-log", type=int, default=None,
                   help="largest batch (log2) also run on the CPU (default: --max-log)")
    p.add_argument("--no-cpu", action="store_true")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)

    cuda = torch.cuda.is_available()
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    base = signed_rows(args.distinct)
    print(f"# {args.distinct} distinct OpenSSL-signed (key, message) pairs, tiled to each batch "
          f"(signed in {time.perf_counter() - t0:.1f} s)")
    print(f"# CUDA: {torch.cuda.get_device_name() if cuda else 'none'}; "
          f"CPU: OpenSSL op on {threads} threads (torch.get_num_threads())")
    cpu_max = args.max_log if args.cpu_max_log is None else args.cpu_max_log
    if not args.no_cpu:  # one core, for the per-core figure
        torch.set_num_threads(1)
        ms, out = time_cpu(base, 1)
        assert bool(out.all())
        torch.set_num_threads(threads)
        print(f"# OpenSSL, 1 thread: {args.distinct / ms * 1e3:,.0f} verifies/s")
    header = (f"{'batch':>9} {'cuda ms':>10} {'cuda verifies/s':>16} {'cpu ms':>10} "
              f"{'cpu verifies/s':>15} {'cuda/cpu':>9}")
    print(header)
    print("-" * len(header))
    rows = []
    for log in range(args.min_log, args.max_log + 1):
        n = 1 << log
        host = [tile(t, n) for t in base]
        row = {"batch": n, "distinct": args.distinct, "cpu_threads": threads}
        if cuda:
            dev = [t.cuda() for t in host]
            ms, out = time_cuda(dev, args.reps)
            assert bool(out.all()), f"CUDA: {int((~out).sum())} of {n} valid signatures failed"
            row.update(cuda_ms=ms, cuda_per_s=n / ms * 1e3)
            del dev, out
        if not args.no_cpu and log <= cpu_max:
            ms, out = time_cpu(host, args.cpu_reps)
            assert bool(out.all()), f"CPU: {int((~out).sum())} of {n} valid signatures failed"
            row.update(cpu_ms=ms, cpu_per_s=n / ms * 1e3)
        both = "cuda_per_s" in row and "cpu_per_s" in row
        ratio = row["cuda_per_s"] / row["cpu_per_s"] if both else None
        fmt = lambda k, f: format(row[k], f) if k in row else "-"  # noqa: E731
        print(f"{n:>9} {fmt('cuda_ms', '10.3f'):>10} {fmt('cuda_per_s', '16,.0f'):>16} "
              f"{fmt('cpu_ms', '10.1f'):>10} {fmt('cpu_per_s', '15,.0f'):>15} "
              f"{(format(ratio, '9.1f') if ratio else '-'):>9}")
        rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
