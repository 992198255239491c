"""What integrity checks cost inside the loop, on a GPT-2-shaped model (124M parameters).

* forward pass, batch x seq tokens, with and without an IntegrityGuard hook (blake3): median
  time of each (CUDA events on a GPU), and the overhead in percent; the same with the check
  inside a torch.compile'd step (--compile);
* check()'s host cost: GPT-2's 149 tensors shrunk to a few bytes each, on the CPU, so what is
  timed is the Python work of finding the tensors and checking the module's structure, which a
  GPU check adds to its launch time (the hash_tensors call alone is timed beside it);
* check_replicas and verify_sharded (rows of every tensor split evenly over the ranks) over
  torch.distributed: median time and bytes each rank sends.

    python benchmarks/bench_guard.py --device cuda
    torchrun --nproc-per-node=2 benchmarks/bench_guard.py --device cuda     # NCCL
    python benchmarks/bench_guard.py --device cpu --batch 1 --seq 64 --iters 3  # smoke test
    python benchmarks/bench_guard.py --host-only    # check()'s Python cost only, no GPU needed

Without torchrun the distributed checks run as a world of one. The model is transformers'
GPT2LMHeadModel(GPT2Config()) (random weights, nothing downloaded) when transformers is
installed, else a stand-in with the same parameter names and shapes and the same computation.
"""
import argparse
import json
import os
import statistics
import time
import timeit

import torch
import torch.nn.functional as F

from sentry import IntegrityGuard
from sentry.distributed import check_replicas, verify_sharded


class _Conv1D(torch.nn.Module):  # GPT-2's linear layer: weight [in, out]
    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(n_in, n_out) * 0.02)
        self.bias = torch.nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(
            *x.shape[:-1], -1)


class _Block(torch.nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.attn = torch.nn.Module()
        self.attn.c_attn, self.attn.c_proj = _Conv1D(d, 3 * d), _Conv1D(d, d)
        self.mlp = torch.nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = _Conv1D(d, 4 * d), _Conv1D(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn.c_proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh"))


class StandInGPT2(torch.nn.Module):
    """GPT-2 small: the names and shapes of GPT2LMHeadModel's state dict, lm_head tied to wte."""

    def __init__(self, vocab=50257, positions=1024, d=768, layers=12, heads=12):
        super().__init__()
        self.transformer = torch.nn.Module()
        self.transformer.wte = torch.nn.Embedding(vocab, d)
        self.transformer.wpe = torch.nn.Embedding(positions, d)
        self.transformer.h = torch.nn.ModuleList(_Block(d, heads) for _ in range(layers))
        self.transformer.ln_f = torch.nn.LayerNorm(d)
        self.lm_head = torch.nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.transformer.wte(ids) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def gpt2(device, dtype):
    torch.manual_seed(0)  # every rank builds the same replica
    try:
        import transformers

        with torch.device(device):
            model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
        what = "transformers GPT2LMHeadModel(GPT2Config())"
    except ImportError:
        with torch.device(device):
            model = StandInGPT2()
        what = "stand-in GPT-2 (transformers not installed)"
    return model.to(dtype).eval(), what


class Timer:
    """Milliseconds of a callable: CUDA events on a GPU (no sync inside the timed region)."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def median_pair(timer, plain, guarded, iters, burst=1):
    """Medians of two callables, measured alternately (drift hits both alike). With ``burst``
    > 1 each sample is ``burst`` calls back to back, divided by ``burst``: the steady state of
    a serving or training loop, where the host enqueues ahead of the device, rather than one
    call starting on an idle device (which also exposes the host's launch time)."""
    a, b = [], []

    def repeat(fn):
        def run():
            for _ in range(burst):
                fn()
        return run

    for _ in range(iters):
        a.append(timer(repeat(plain)) / burst)
        b.append(timer(repeat(guarded)) / burst)
    return statistics.median(a), statistics.median(b)


def bench_forward(model, args, device, timer, out):
    ids = torch.randint(0, 50257, (args.batch, args.seq), device=device)
    guard = IntegrityGuard.snapshot(model, algorithm=args.algorithm)
    hashed = sum(t.numel() * t.element_size() for t in guard._tensors())
    with torch.no_grad():
        for _ in range(args.warmup):
            model(ids)
            guard.check()

        def plain():
            model(ids)

        def guarded():
            guard.attach()
            model(ids)
            guard.detach()

        base, with_guard = median_pair(timer, plain, guarded, args.iters)
        steady = median_pair(timer, plain, guarded, args.iters, burst=args.burst)
        check = statistics.median(timer(guard.check) for _ in range(args.iters))
    assert guard.passed()
    out["forward"] = {"tokens": [args.batch, args.seq], "tensors": len(guard.names),
                      "hashed_bytes": hashed, "plain_ms": base, "guarded_ms": with_guard,
                      "overhead_pct": 100 * (with_guard - base) / base, "check_ms": check,
                      "steady_plain_ms": steady[0], "steady_guarded_ms": steady[1],
                      "steady_overhead_pct": 100 * (steady[1] - steady[0]) / steady[0]}
    if args.compile:
        torch._dynamo.reset()
        step_plain = torch.compile(lambda ids: model(ids), fullgraph=True)
        step_guarded = torch.compile(lambda ids: (model(ids), guard.check()), fullgraph=True)
        with torch.no_grad():
            for _ in range(args.warmup):
                step_plain(ids)
                step_guarded(ids)
            base, with_guard = median_pair(timer, lambda: step_plain(ids),
                                           lambda: step_guarded(ids), args.iters)
            steady = median_pair(timer, lambda: step_plain(ids), lambda: step_guarded(ids),
                                 args.iters, burst=args.burst)
        out["forward_compiled"] = {"plain_ms": base, "guarded_ms": with_guard,
                                   "overhead_pct": 100 * (with_guard - base) / base,
                                   "steady_plain_ms": steady[0], "steady_guarded_ms": steady[1],
                                   "steady_overhead_pct": 100 * (steady[1] - steady[0]) / steady[0]}


def bench_host(out, calls=2000, repeats=15):
    """Microseconds per check() and per bare hash_tensors call on a tiny CPU GPT-2: the best of
    `repeats` runs of `calls` calls, the two alternated, in this thread's CPU time (so that other
    work on a shared machine does not count)."""
    torch.manual_seed(0)
    model = StandInGPT2(vocab=8, positions=8, d=4, layers=12, heads=2).eval()
    guard = IntegrityGuard.snapshot(model)
    tensors = guard._tensors()
    hash_tensors = torch.ops.sentry.hash_tensors.default
    check, bare = [], []
    for _ in range(repeats):
        check.append(timeit.Timer(guard.check, timer=time.thread_time).timeit(calls) / calls * 1e6)
        bare.append(timeit.Timer(lambda: hash_tensors(tensors, "blake3"), timer=time.thread_time)
                    .timeit(calls) / calls * 1e6)
    assert guard.passed()
    out["host"] = {"tensors": len(guard.names),
                   "modules": sum(1 for _ in model.named_modules(remove_duplicate=False)),
                   "check_us": min(check), "hash_us": min(bare),
                   "overhead_us": min(check) - min(bare)}


def print_host(h):
    print(f"check() host cost, tiny CPU GPT-2 ({h['tensors']} names, {h['modules']} modules): "
          f"{h['check_us']:.1f} us per call, of which hash_tensors {h['hash_us']:.1f} us; "
          f"Python overhead {h['overhead_us']:.1f} us")


def bench_distributed(model, args, out):
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    state = model.state_dict()
    times = []
    for _ in range(args.dist_iters):
        t0 = time.perf_counter()
        report = check_replicas(state, algorithm=args.algorithm)
        times.append((time.perf_counter() - t0) * 1e3)
    out["check_replicas"] = {"world": world, "ms": statistics.median(times),
                             "sends_bytes": 32 * (len(state) + 1), "parts_ms": report.timings_ms}
    # Rows of every tensor split evenly (torch.chunk, as DTensor Shard(0) does): this rank keeps
    # its rows only; the digests to match are those of the full tensors.
    names = sorted(state)
    full = torch.ops.sentry.hash_tensors.default([state[n] for n in names], args.algorithm)
    expected = {n: bytes(d.tolist()) for n, d in zip(names, full.cpu())}
    local, layout = {}, {}
    for n in names:
        t = state[n]
        if t.dim() == 0:
            local[n] = t
            continue
        step = -(-t.shape[0] // world)
        start = min(rank * step, t.shape[0])
        local[n] = t[start:start + step]
        layout[n] = (start, tuple(t.shape))
    times = []
    for _ in range(args.dist_iters):
        t0 = time.perf_counter()
        report = verify_sharded(local, expected, layout, algorithm=args.algorithm)
        times.append((time.perf_counter() - t0) * 1e3)
    out["verify_sharded"] = {"world": world, "ms": statistics.median(times),
                             "sends_bytes": report.bytes_sent, "parts_ms": report.timings_ms}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--algorithm", default="blake3", choices=["blake3", "sha256-tree"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--burst", type=int, default=10, help="calls per sample in the steady state")
    p.add_argument("--dist-iters", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also time a torch.compile'd step")
    p.add_argument("--no-distributed", action="store_true")
    p.add_argument("--host-only", action="store_true", help="only check()'s host cost (CPU)")
    p.add_argument("--json", help="write the results here (rank 0)")
    args = p.parse_args()

    if args.host_only:
        out = {}
        bench_host(out)
        print_host(out["host"])
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if "WORLD_SIZE" in os.environ:  # under torchrun
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    model, what = gpt2(device, getattr(torch, args.dtype))
    out = {"model": what, "device": str(device), "dtype": args.dtype, "algorithm": args.algorithm}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    bench_forward(model, args, device, Timer(device), out)
    bench_host(out)
    if not args.no_distributed:
        bench_distributed(model, args, out)
    if local_rank == 0 and (not os.environ.get("RANK") or os.environ["RANK"] == "0"):
        f = out["forward"]
        print(f"{what}, {out['device']}, {args.dtype}, {args.algorithm}")
        print(f"forward {args.batch}x{args.seq} tokens: {f['plain_ms']:.2f} ms; guarded "
              f"{f['guarded_ms']:.2f} ms; overhead {f['overhead_pct']:+.1f}% "
              f"(check alone {f['check_ms']:.3f} ms: {f['tensors']} names, "
              f"{f['hashed_bytes'] / 1e6:.0f} MB hashed)")
        print(f"  steady state ({args.burst} back to back): {f['steady_plain_ms']:.2f} ms; guarded "
              f"{f['steady_guarded_ms']:.2f} ms; overhead {f['steady_overhead_pct']:+.1f}%")
        print_host(out["host"])
        if "forward_compiled" in out:
            c = out["forward_compiled"]
            print(f"compiled step: {c['plain_ms']:.2f} ms; with check {c['guarded_ms']:.2f} ms; "
                  f"overhead {c['overhead_pct']:+.1f}%")
            print(f"  steady state: {c['steady_plain_ms']:.2f} ms; with check "
                  f"{c['steady_guarded_ms']:.2f} ms; overhead {c['steady_overhead_pct']:+.1f}%")
        for key in ("check_replicas", "verify_sharded"):
            if key in out:
                r = out[key]
                print(f"{key} ({r['world']} ranks): {r['ms']:.2f} ms, sends "
                      f"{r['sends_bytes'] / 1e3:.1f} kB per rank")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(out, fh, indent=2)
    if "WORLD_SIZE" in os.environ:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
