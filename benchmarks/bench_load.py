"""Verified loading next to unverified loaders, side by side in one run (issue 13).

A model-shaped fp32 state dict with random values (sentry/pipeline/shaped_models.py shapes; GPT-2-XL: 6.55 GB)
is written as N safetensors shards and signed twice: a Sentry bundle (sign_files: a SHA-256 per
file and a digest per tensor) and a plain OpenSSF Model Signing `files` bundle (a SHA-256 per
file only, as the reference tool and NGC write). Then each loader brings the whole model to the
device, warm page cache (best and median of --reps) and, with --cold, once each after
`echo 3 > /proc/sys/vm/drop_caches` (root), next to `cat` of the files:

- safetensors.torch.load_file(device=...)            no verification
- fastsafetensors 0.5.0 (nogds)                      no verification
- runai-model-streamer 0.17.1 (to host, then .to)    no verification
- model_signing verify (the reference), then the safetensors load
- sentry.load_verified with the Sentry bundle, and with the plain OMS bundle

Peers that are not importable are skipped. On a CPU machine (--device cpu) the hashing tools
b3sum and sha256sum over the same files are the comparison.

    python benchmarks/bench_load.py --device cuda --cold --json out.json
    python benchmarks/bench_load.py --device cpu --model gpt2 --shards 2
"""
import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sentry import bundle as bundle_format  # noqa: E402
from sentry.crypto import PrivateKey, write_private_key, write_public_key  # noqa: E402
from sentry.oms.loader import load_verified  # noqa: E402
from sentry.pipeline.shaped_models import MODELS, model_shapes  # noqa: E402
from sentry.oms.signing import _sign_statement, sign_files  # noqa: E402
from sentry.signatures.trust import open_bundle  # noqa: E402


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def generate(directory, model, shards, device):
    """Writes the model as `shards` safetensors files of about equal size (random values,
    made on the GPU when there is one); returns the file paths."""
    from safetensors.torch import save_file

    marker = directory + ".made"  # beside the model: not one of its files
    want = f"{model} {shards}"
    if os.path.exists(marker) and open(marker).read() == want:
        return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                      if f.endswith(".safetensors"))
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    entries = model_shapes()[model]
    sizes = [torch.Size(shape).numel() * torch.empty(0, dtype=getattr(torch, dt)).element_size()
             for _, dt, shape in entries]
    per_shard = sum(sizes) / shards
    gen = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device=gen).manual_seed(0)
    paths, part, acc = [], {}, 0
    for (name, dt, shape), size in zip(entries, sizes):
        part[name] = torch.randn(shape, generator=g, device=gen).to(getattr(torch, dt)).cpu()
        acc += size
        if acc >= per_shard * (len(paths) + 1) or name == entries[-1][0]:
            path = os.path.join(directory, f"model-{len(paths) + 1:05d}-of-{shards:05d}.safetensors")
            save_file(part, path, metadata={"format": "pt"})
            paths.append(path)
            part = {}
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump({"model": model}, f)
    with open(marker, "w") as f:
        f.write(want)
    subprocess.run(["sync"], check=False)
    return paths


def sign(directory, workdir):
    """(private key path, public key path, Sentry bundle, plain OMS files bundle)."""
    key = PrivateKey.generate("P-256")
    priv, pub = os.path.join(workdir, "key.pem"), os.path.join(workdir, "key.pub")
    write_private_key(priv, key)
    write_public_key(pub, key.public_key())
    sentry_sig = os.path.join(workdir, "sentry.sig")
    plain_sig = os.path.join(workdir, "oms.sig")
    for p in (sentry_sig, plain_sig):
        if os.path.exists(p):
            os.remove(p)
    t0 = time.perf_counter()
    sign_files(directory, priv, sentry_sig)
    print(f"sign_files: {time.perf_counter() - t0:.2f} s", flush=True)
    # The same file digests without Sentry's tensor table: what the reference tool writes.
    statement, _, _ = open_bundle(sentry_sig, key.public_key())
    plain = bundle_format.make_statement(
        statement.model_name, statement.resources, method="files", hash_type="sha256",
        allow_symlinks=statement.allow_symlinks, ignore_paths=statement.ignore_paths)
    _sign_statement(plain, key, None, plain_sig)
    return priv, pub, sentry_sig, plain_sig


def loaders(files, directory, pub, sentry_sig, plain_sig, device, args):
    """{label: function returning the loaded {name: tensor}} of every importable loader."""
    from safetensors.torch import load_file

    def safetensors_load():
        return {k: v for f in files for k, v in load_file(f, device=device).items()}

    out = {"safetensors.load_file (unverified)": safetensors_load}
    if device.startswith("cuda"):
        try:
            from fastsafetensors import fastsafe_open

            def fastsafetensors_load():
                # fastsafetensors wants a device with an index ("cuda:0", not "cuda").
                where = str(torch.device(device, 0) if device == "cuda" else device)
                with fastsafe_open(filenames=files, device=where, nogds=True) as f:
                    return {k: f.get_tensor(k) for k in f.keys()}

            out["fastsafetensors (nogds, unverified)"] = fastsafetensors_load
        except ImportError as exc:
            print(f"skipped fastsafetensors: {exc}")
        try:
            from runai_model_streamer import SafetensorsStreamer

            def runai_load():
                with SafetensorsStreamer() as s:
                    s.stream_files(files)
                    return {k: v.to(device, non_blocking=True) for k, v in s.get_tensors()}

            out["runai-model-streamer (host, then .to; unverified)"] = runai_load
        except ImportError as exc:
            print(f"skipped runai-model-streamer: {exc}")
    try:
        import pathlib

        from model_signing import verifying

        def reference_then_load():
            verifying.Config().use_elliptic_key_verifier(public_key=pathlib.Path(pub)).verify(
                pathlib.Path(directory), pathlib.Path(plain_sig))
            return safetensors_load()

        out["model_signing verify (reference), then safetensors"] = reference_then_load
    except ImportError as exc:
        print(f"skipped the reference model_signing: {exc}")
    tune = dict(threads=args.threads, block_size=args.block_size, pinned_bytes=args.pinned_bytes)
    out["sentry.load_verified, Sentry bundle"] = lambda: load_verified(
        directory, sentry_sig, public_key=pub, device=device, **tune)
    out["sentry.load_verified, plain OMS sha256 bundle"] = lambda: load_verified(
        directory, plain_sig, public_key=pub, device=device, **tune)
    return out


def drop_caches():
    subprocess.run(["sync"], check=False)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def time_it(fn, device):
    gc.collect()
    _sync(device)
    t0 = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - t0, result


def host_peak():
    """Peak pinned host memory of the caching host allocator, where torch reports it."""
    try:
        stats = torch.cuda.host_memory_stats()
    except (AttributeError, RuntimeError):
        return None
    for key in ("allocated_bytes.peak", "reserved_bytes.peak", "allocations.peak"):
        if key in stats:
            return stats[key]
    return None


def reset_host_peak():
    try:
        torch.cuda.reset_peak_host_memory_stats()
    except (AttributeError, RuntimeError):
        pass


def command_seconds(cmd, files):
    t0 = time.perf_counter()
    subprocess.run(cmd + files, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gpt2-xl", choices=MODELS)
    p.add_argument("--shards", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dir", default="/tmp/sentry-bench-load")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--cold", action="store_true", help="also after dropping caches")
    p.add_argument("--cold-reps", type=int, default=1,
                   help="rounds of cold loads, every loader once a round")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--block-size", type=int, default=None)
    p.add_argument("--pinned-bytes", type=int, default=None)
    p.add_argument("--only", default=None, help="run only loaders whose label contains this")
    p.add_argument("--sweep", action="store_true",
                   help="also time load_verified (Sentry bundle, warm) at other block sizes and "
                        "thread counts")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = args.device
    model_dir = os.path.join(args.dir, "model")
    os.makedirs(args.dir, exist_ok=True)
    t0 = time.perf_counter()
    files = generate(model_dir, args.model, args.shards, device)
    nbytes = sum(os.path.getsize(f) for f in files)
    print(f"{args.model}: {len(files)} files, {nbytes / 1e9:.2f} GB in {model_dir} "
          f"({time.perf_counter() - t0:.1f} s to make)", flush=True)
    _, pub, sentry_sig, plain_sig = sign(model_dir, args.dir)
    table = loaders(files, model_dir, pub, sentry_sig, plain_sig, device, args)
    if args.only:
        table = {k: v for k, v in table.items() if args.only in k or "safetensors.load_file" in k}

    rows = {}
    reference = None
    for label, fn in table.items():
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            reset_host_peak()
        base = torch.cuda.memory_allocated() if device.startswith("cuda") else 0
        try:
            _, result = time_it(fn, device)  # warm-up: page cache, allocators, pinned memory
        except Exception as exc:  # a peer that fails is reported, not fatal
            print(f"{label}: FAILED: {type(exc).__name__}: {exc}", flush=True)
            continue
        if reference is None:
            reference = {k: v for k, v in result.items()}
        elif label.startswith("sentry"):
            assert sorted(result) == sorted(reference), label
            assert all(torch.equal(result[k], reference[k]) for k in reference), label
        del result
        times = []
        for _ in range(args.reps):
            seconds, result = time_it(fn, device)
            times.append(seconds)
            del result
        row = {"best_s": min(times), "median_s": statistics.median(times)}
        if device.startswith("cuda"):
            row["gpu_peak_over_model_GB"] = (torch.cuda.max_memory_allocated() - base - nbytes) / 1e9
            peak = host_peak()
            if peak is not None:
                row["pinned_peak_GB"] = peak / 1e9
        rows[label] = row
        print(f"{label:<52} warm best {row['best_s']:6.3f} s  median {row['median_s']:6.3f} s  "
              f"{nbytes / row['best_s'] / 1e9:6.2f} GB/s"
              + (f"  GPU peak - model {row['gpu_peak_over_model_GB']:+.2f} GB"
                 if "gpu_peak_over_model_GB" in row else "")
              + (f"  pinned peak {row['pinned_peak_GB']:.2f} GB" if "pinned_peak_GB" in row else ""),
              flush=True)
    reference = None

    if args.sweep:
        print("\nload_verified, Sentry bundle, warm, by block size and threads:")
        for block, threads in ((4 << 20, None), (16 << 20, None), (32 << 20, None),
                               (8 << 20, 8), (8 << 20, 32)):
            fn = lambda: load_verified(model_dir, sentry_sig, public_key=pub, device=device,  # noqa: E731
                                       block_size=block, threads=threads)
            time_it(fn, device)
            best = min(time_it(fn, device)[0] for _ in range(args.reps))
            label = f"  block {block >> 20} MiB, threads {threads or 'all CPUs'}"
            rows[f"sweep{label}"] = {"best_s": best}
            print(f"{label:<52} warm best {best:6.3f} s  {nbytes / best / 1e9:6.2f} GB/s", flush=True)

    tools = {"cat (sequential read)": ["cat"]}
    if device == "cpu":
        tools.update({"b3sum": ["b3sum"], "sha256sum": ["sha256sum"]})
    for label, cmd in tools.items():
        if shutil.which(cmd[0]):
            command_seconds(cmd, files)
            s = min(command_seconds(cmd, files) for _ in range(args.reps))
            rows[label] = {"best_s": s}
            print(f"{label:<52} warm best {s:6.3f} s  {nbytes / s / 1e9:6.2f} GB/s", flush=True)

    if args.cold:
        if not drop_caches():
            print("cold: cannot write /proc/sys/vm/drop_caches (needs root); skipped")
        else:
            for label, cmd in tools.items():
                if shutil.which(cmd[0]):
                    drop_caches()
                    s = command_seconds(cmd, files)
                    rows[label]["cold_s"] = s
                    print(f"{label:<52} cold {s:6.3f} s  {nbytes / s / 1e9:6.2f} GB/s", flush=True)
            # Round robin over the loaders, --cold-reps times: one cold read of a disk varies by
            # 10-30% from one moment to the next, so each round times every loader close together.
            cold = {label: [] for label in table if label in rows}
            for rep in range(args.cold_reps):
                for label in cold:
                    drop_caches()
                    seconds, result = time_it(table[label], device)
                    del result
                    cold[label].append(seconds)
                    print(f"{label:<52} cold {seconds:6.3f} s  {nbytes / seconds / 1e9:6.2f} GB/s"
                          f"  (round {rep + 1})", flush=True)
            for label, times in cold.items():
                rows[label]["cold_s"] = min(times)
                rows[label]["cold_all_s"] = times
            if cold and args.cold_reps > 1:
                print("\ncold, best and median of the rounds:")
                for label, times in cold.items():
                    print(f"  {label:<52} best {min(times):6.3f} s  median "
                          f"{statistics.median(times):6.3f} s", flush=True)

    base = rows.get("safetensors.load_file (unverified)", {}).get("best_s")
    if base:
        print("\nrelative to safetensors.load_file (warm best):")
        for label, row in rows.items():
            print(f"  {label:<52} {row['best_s'] / base:5.2f} x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "bytes": nbytes, "files": len(files),
                       "device": device, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
