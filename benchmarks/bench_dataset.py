"""Dataset verification costs: one DatasetChecker.check() of a 512x3x32x32 uint8 batch; a
training epoch over CIFAR-shaped synthetic data with on-the-fly verification on and off, for
each reader (torch DataLoader, and the packed array read into GPU memory by GPUDirect Storage
or a pinned double buffer); and the read bandwidth of both ways into GPU memory.

    python benchmarks/bench_dataset.py --device cuda
"""
import argparse
import os
import statistics
import tempfile
import time

import torch

from sentry.datasets.stores import get_image_dataloader, manifest_for_store, open_store, synthetic_cifar, write_packed
from sentry import gds
from sentry.datasets.manifest import DatasetChecker, build_manifest


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_cost(device, reps=500, batch=512):
    n = 50_000
    samples = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,))
    manifest = build_manifest(samples.to(device), labels, ["source-0"] * n)
    checker = DatasetChecker(manifest, device, check_every=10 ** 9)
    order = torch.randperm(n)
    batches = [(samples[i].to(device), labels[i].to(device), i.to(device))
               for i in order[: batch * 20].split(batch)]
    for x, y, idx in batches:
        checker.check(x, y, idx)
    _sync(device)
    device_us, wall_us = [], []
    for r in range(reps):
        x, y, idx = batches[r % len(batches)]
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            t0 = time.perf_counter()
            checker.check(x, y, idx)
            wall_us.append((time.perf_counter() - t0) * 1e6)
            end.record()
            end.synchronize()
            device_us.append(start.elapsed_time(end) * 1e3)
        else:
            t0 = time.perf_counter()
            checker.check(x, y, idx)
            wall_us.append((time.perf_counter() - t0) * 1e6)
    checker.raise_if_failed()
    med = statistics.median
    print(f"check() of one {batch}x3x32x32 uint8 batch on {device}: "
          + (f"{med(device_us):.1f} us on the device (events), " if device_us else "")
          + f"{med(wall_us):.1f} us host time to enqueue")


def small_cnn(device):
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.BatchNorm2d(64),
        torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64 * 8 * 8, 10),
    ).to(device)


def epoch_overhead(device, n, batch, epochs, reader):
    samples, labels, sources = synthetic_cifar(n)
    with tempfile.TemporaryDirectory() as tmp:
        write_packed(tmp, samples, labels, sources)
        manifest = manifest_for_store(open_store(tmp), device=device)
        loader, _ = get_image_dataloader(tmp, batch, device, manifest=manifest, drop_last=True,
                                         reader=reader)
        if reader != "dataloader":
            r = loader.dataloader.resident
            reader = f"{reader} -> {r.method}, {r.nbytes / r.seconds / 1e9:.2f} GB/s load"
            if r.note:
                print(f"  ({reader.split()[0]} fell back to pinned: {r.note})")
        model = small_cnn(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        mean = torch.tensor([0.5, 0.5, 0.5], device=device).view(1, 3, 1, 1)

        def epoch(verify):
            loader.set_verify(verify)
            _sync(device)
            t0 = time.perf_counter()
            for x, y, _ in loader:
                out = model(x.float().div_(255).sub_(mean))
                loss = torch.nn.functional.cross_entropy(out, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            _sync(device)
            return time.perf_counter() - t0

        epoch(True)  # warm-up
        on, off = [], []
        for _ in range(epochs):  # interleaved, so drift affects both alike
            off.append(epoch(False))
            on.append(epoch(True))
    m_on, m_off = statistics.median(on), statistics.median(off)
    print(f"epoch of {n} samples, batch {batch}, on {device}, reader {reader}: verification off "
          f"{m_off * 1e3:.1f} ms, "
          f"on {m_on * 1e3:.1f} ms: {100 * (m_on / m_off - 1):+.2f}% (median of {epochs})")


def _drop_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_bandwidth(device, gib, reps=3):
    """GB/s of reading one file into GPU memory, from the page cache (warm) and after asking
    the kernel to drop the file's cached pages (cold; fadvise, so only if it honours it)."""
    ok, why = gds.cufile_status()
    print(f"cuFile: {'usable' if ok else 'not usable'}: {why}")
    nbytes = int(gib * (1 << 30))
    with tempfile.TemporaryDirectory(dir=os.environ.get("SENTRY_BENCH_DIR")) as tmp:
        path = os.path.join(tmp, "blob.bin")
        block = os.urandom(1 << 24)
        with open(path, "wb") as f:
            for _ in range(nbytes // len(block)):
                f.write(block)
        os.sync()
        out = torch.empty(nbytes // len(block) * len(block), dtype=torch.uint8, device=device)
        for method in ("auto", "pinned"):
            for cache in ("cold", "warm"):
                times = []
                for _ in range(reps):
                    if cache == "cold":
                        _drop_cache(path)
                    _sync(device)
                    t0 = time.perf_counter()
                    used = gds.read_into(path, out, method=method)
                    _sync(device)
                    times.append(time.perf_counter() - t0)
                t = statistics.median(times)
                if used.note and cache == "cold":
                    print(f"  ({method} fell back to pinned: {used.note})")
                print(f"read {out.numel() / 1e9:.2f} GB into {device} by {method} -> "
                      f"{used.method}, {cache} page "
                      f"cache: {t * 1e3:.1f} ms, {out.numel() / t / 1e9:.2f} GB/s (median of {reps})")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--samples", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--readers", default="dataloader,auto",
                   help="comma-separated: dataloader, gds, pinned, auto (CUDA only but dataloader)")
    p.add_argument("--read-gib", type=float, default=2.0, help="file size of the read benchmark")
    args = p.parse_args()
    device = torch.device(args.device)
    check_cost(device)
    for reader in args.readers.split(","):
        if reader == "dataloader" or device.type == "cuda":
            epoch_overhead(device, args.samples, args.batch, args.epochs, reader)
    if device.type == "cuda" and args.read_gib > 0:
        read_bandwidth(device, args.read_gib)


if __name__ == "__main__":
    main()
