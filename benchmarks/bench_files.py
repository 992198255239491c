"""Signing and verifying a model directory on the CPU, warm page cache, side by side with
sha256sum and b3sum of the same files.

Makes (once) a directory of safetensors shards with model-like tensors (a few large, many
medium, some small), reads it once to warm the page cache, then times, best of --reps:

  sha256sum, b3sum            the peers: SHA-256 and BLAKE3 of every file
  sign_files sha256           OMS files method (SHA-256 per file) + per-tensor BLAKE3 listing
  verify_files sha256         the same bundle checked
  sign_files blake3           BLAKE3 per file + per-tensor BLAKE3 listing
  verify_files blake3         the same bundle checked
  sentry hash (blake3)        model_files.hash_file of every file, as `sentry hash` does

GB/s is the directory's size over the wall time (1 GB = 1e9 bytes); "CPU s" is the CPU time
(user + system, all threads, peers' processes included) of the same best run, which a busy
machine distorts less than the wall time.

    python benchmarks/bench_files.py --dir /tmp/sentry_bench_files --gb 1.5
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np


def make_model(directory, total_bytes, shards, seed=0):
    """Shards of about total_bytes / shards each: tensors of 64 MiB, 4 MiB and 16 KiB."""
    import torch
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_shard = total_bytes // shards
    for s in range(shards):
        state, size, k = {}, 0, 0
        for nbytes in (64 << 20, 4 << 20, 16 << 10):
            while size + nbytes <= per_shard * {64 << 20: 0.7, 4 << 20: 0.98, 16 << 10: 1}[nbytes]:
                state[f"shard{s}.t{k}"] = torch.from_numpy(
                    rng.integers(0, 256, nbytes, dtype=np.uint8)).view(torch.float32)
                size += nbytes
                k += 1
        save_file(state, os.path.join(directory, f"model-{s:05d}-of-{shards:05d}.safetensors"))


def files_of(directory):
    if not os.path.isdir(directory):  # not made yet
        return []
    return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if f.endswith(".safetensors"))


def best(fn, reps):
    """(wall seconds, CPU seconds) of the fastest of reps runs."""
    runs = []
    for _ in range(reps):
        c0, t0 = os.times(), time.perf_counter()
        fn()
        t1, c1 = time.perf_counter(), os.times()
        cpu = sum(b - a for a, b in zip(c0[:4], c1[:4]))  # user, system, children's too
        runs.append((t1 - t0, cpu))
    return min(runs)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "sentry_bench_files"))
    p.add_argument("--gb", type=float, default=1.5, help="directory size to make")
    p.add_argument("--shards", type=int, default=3)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()

    import sentry
    from sentry import model_files
    from sentry.crypto import PrivateKey

    if not files_of(args.dir):
        make_model(args.dir, int(args.gb * 1e9), args.shards)
    files = files_of(args.dir)
    total = sum(os.path.getsize(f) for f in files)
    for f in files:  # warm the page cache
        with open(f, "rb") as fh:
            while fh.read(64 << 20):
                pass
    key = PrivateKey.generate("P-256")
    public = key.public_key()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        def peer(cmd):
            if shutil.which(cmd[0]) is None:
                return None
            return best(lambda: subprocess.run(cmd + files, check=True, stdout=subprocess.DEVNULL),
                        args.reps)

        rows.append(("sha256sum", peer(["sha256sum"])))
        rows.append(("b3sum", peer(["b3sum"])))
        rows.append(("b3sum --num-threads 1", peer(["b3sum", "--num-threads", "1"])))
        for hash_type in ("sha256", "blake3"):
            sig = os.path.join(tmp, f"{hash_type}.sig")
            rows.append((f"sign_files {hash_type} (+ tensor listing)", best(
                lambda: sentry.sign_files(args.dir, key, sig, hash_type=hash_type), args.reps)))
            rows.append((f"verify_files {hash_type}", best(
                lambda: sentry.verify_files(args.dir, sig, public_key=public), args.reps)))
        rows.append(("sentry hash (blake3 per file)", best(
            lambda: [model_files.hash_file(f, "blake3") for f in files], args.reps)))

    print(f"{len(files)} files, {total / 1e9:.2f} GB in {args.dir}, warm page cache, "
          f"{os.cpu_count()} CPUs, best of {args.reps}  (python {sys.version.split()[0]})")
    print(f"  {'':<36} {'seconds':>8} {'GB/s':>7} {'CPU s':>7}")
    for name, result in rows:
        if result is None:
            print(f"  {name:<36} {'(not installed)':>16}")
        else:
            seconds, cpu = result
            print(f"  {name:<36} {seconds:8.3f} {total / seconds / 1e9:7.2f} {cpu:7.2f}")


if __name__ == "__main__":
    main()
