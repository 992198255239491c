"""Trainer -> engine weight-sync checks across ranks, side by side with the approach of the
engines' pull requests (gather the shards, .cpu(), hashlib.sha256 per tensor).

    torchrun --nproc-per-node=2 benchmarks/bench_weightsync.py                  # 2 GPUs, NCCL
    torchrun --nproc-per-node=2 benchmarks/bench_weightsync.py --device cpu --small  # gloo smoke

1. GPT-2-XL shapes, bf16, FSDP2 layout (every tensor a DTensor Shard(0) over the ranks):
   verify_sharded against the full tensors' digests (its plan cached after the first call),
   and SyncVerifier.check.
2. Llama-3-8B shapes, bf16. The sending side is an FSDP2-style trainer (Shard(0) of every
   tensor, HF names): ManifestBuilder.build. The receiving side is a vLLM-style TP layout
   (qkv_proj = the rank's shards of q, k, v concatenated; gate_up_proj likewise; o_proj and
   down_proj split by columns; embed_tokens and lm_head by vocabulary rows; norms replicated):
   SyncVerifier.check against that manifest, then the peer approach on the same tensors.

Printed per check: median ms over --iters (wall clock, host sync included), the bytes each rank
sends, the plan's one-time cost; for the peer approach its ms and bytes. The model tensors are
random (sentry.pipeline.shaped_models shapes, nothing downloaded); every rank builds the same full tensors from
a seed and keeps its part. --json writes everything (rank 0).
"""
import argparse
import hashlib
import json
import os
import statistics
import time

import torch
import torch.distributed as dist

from sentry import distributed as sd
from sentry.parallel.layout import Concat, Region
from sentry.pipeline.shaped_models import llama_shapes, model_shapes, state_dict_of
from sentry.parallel.weightsync import ManifestBuilder, SyncVerifier, WeightManifest


def timed(fn, iters, device):
    """(median ms, last result) of fn() called iters times, each timed from an idle device."""
    times, out = [], None
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dist.barrier()
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out


def full_digests(full, algorithm):
    names = sorted(full)
    rows = torch.ops.sentry.hash_tensors.default([full[n] for n in names], algorithm).cpu()
    return {n: bytes(r.tolist()) for n, r in zip(names, rows)}


def dtensor_rows(full, mesh):
    """FSDP2's layout: Shard(0) of every tensor (torch.chunk sizes), as DTensors."""
    from torch.distributed.tensor import DTensor, Replicate, Shard

    rank, world = dist.get_rank(), dist.get_world_size()
    out = {}
    for name, t in full.items():
        if t.dim() == 0:
            out[name] = DTensor.from_local(t, mesh, [Replicate()], run_check=False)
            continue
        chunks = t.chunk(world)
        local = chunks[rank] if rank < len(chunks) else t[t.shape[0]:]
        out[name] = DTensor.from_local(local, mesh, [Shard(0)], run_check=False,
                                       shape=t.shape, stride=t.stride())
    return out


def bench_fsdp2(args, device, mesh, out):
    shapes = model_shapes()[args.gpt2]
    full = state_dict_of([(k, "bfloat16", s) for k, _, s in shapes], device, seed=1)
    digests = full_digests(full, args.algorithm)
    state = dtensor_rows(full, mesh)
    t0 = time.perf_counter()
    sd._VERIFIERS.clear()
    first = sd.verify_sharded(state, digests, algorithm=args.algorithm)
    plan_ms = (time.perf_counter() - t0) * 1e3
    assert first.ok
    vs_ms, report = timed(lambda: sd.verify_sharded(state, digests, algorithm=args.algorithm),
                          args.iters, device)
    verifier = SyncVerifier(state, digests, algorithm=args.algorithm)
    check_ms, check = timed(verifier.check, args.iters, device)
    local = sum(t._local_tensor.numel() * 2 for t in state.values())
    out["fsdp2"] = {"model": args.gpt2, "tensors": len(full), "bytes_per_rank": local,
                    "plan_ms": plan_ms, "verify_sharded_ms": vs_ms, "check_ms": check_ms,
                    "sends_bytes": report.bytes_sent + 9, "check_sends_bytes": check.bytes_sent,
                    "parts_ms": check.timings_ms}


def vllm_layout(full, rank, world, layers, hidden, intermediate, heads, kv_heads):
    """The receiving side's tensors and layout: what vLLM's TP linear layers hold."""
    head_dim = hidden // heads
    q, kv = heads * head_dim, kv_heads * head_dim
    state, layout = {}, {}

    def rows(name, key=None):
        key = key or name
        t = full[name]
        step = t.shape[0] // world
        state[key] = t[rank * step:(rank + 1) * step]
        layout[key] = Region(name, tuple(t.shape), (rank * step, 0), (step, t.shape[1]))

    def cols(name):
        t = full[name]
        step = t.shape[1] // world
        state[name] = t[:, rank * step:(rank + 1) * step].contiguous()
        layout[name] = Region(name, tuple(t.shape), (0, rank * step), (t.shape[0], step))

    def fused(key, names):
        parts, pieces = [], []
        for n in names:
            t = full[n]
            step = t.shape[0] // world
            parts.append(Region(n, tuple(t.shape), (rank * step, 0), (step, t.shape[1])))
            pieces.append(t[rank * step:(rank + 1) * step])
        state[key] = torch.cat(pieces, 0)
        layout[key] = Concat(tuple(parts), 0)

    rows("model.embed_tokens.weight")
    rows("lm_head.weight")
    state["model.norm.weight"] = full["model.norm.weight"].clone()
    for i in range(layers):
        p = f"model.layers.{i}"
        fused(f"{p}.self_attn.qkv_proj.weight",
              [f"{p}.self_attn.{x}_proj.weight" for x in "qkv"])
        cols(f"{p}.self_attn.o_proj.weight")
        fused(f"{p}.mlp.gate_up_proj.weight", [f"{p}.mlp.gate_proj.weight",
                                               f"{p}.mlp.up_proj.weight"])
        cols(f"{p}.mlp.down_proj.weight")
        for n in ("input_layernorm", "post_attention_layernorm"):
            state[f"{p}.{n}.weight"] = full[f"{p}.{n}.weight"].clone()
    return state, layout


def peer_check(state, layout, world):
    """The PRs' way: every sharded engine tensor gathered whole on every rank (split back into
    its fused parts), copied to the host, and hashed with hashlib, tensor by tensor."""
    out = {}
    for key in sorted(state):
        local = state[key]
        entry = layout.get(key)
        if entry is None:
            out[key] = hashlib.sha256(local.cpu().view(torch.uint8).numpy()).hexdigest()
            continue
        parts = entry.parts if isinstance(entry, Concat) else (entry,)
        dim = 1 if parts[0].shape[1] != parts[0].full_shape[1] else 0
        gathered = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(gathered, local.contiguous())
        at = 0
        for part in parts:
            size = part.shape[dim]
            pieces = [g.narrow(dim, at, size) for g in gathered]
            at += size
            whole = torch.cat(pieces, dim).cpu()
            out[part.name] = hashlib.sha256(whole.view(torch.uint8).numpy()).hexdigest()
    return out


def bench_llama(args, device, out):
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = dict(hidden=args.hidden, intermediate=args.intermediate, layers=args.layers,
               heads=args.heads, kv_heads=args.kv_heads)
    shapes = llama_shapes(vocab=args.vocab, **cfg)
    full = state_dict_of(shapes, device, seed=2)
    # The sending side: FSDP2-style rows of every (unfused, HF-named) tensor.
    trainer, trainer_layout = {}, {}
    for name, t in full.items():
        step = -(-t.shape[0] // world)
        lo = min(rank * step, t.shape[0])
        trainer[name] = t[lo:lo + step]
        trainer_layout[name] = (lo, tuple(t.shape))
    t0 = time.perf_counter()
    builder = ManifestBuilder(trainer, layout=trainer_layout, algorithm=args.algorithm)
    builder_plan_ms = (time.perf_counter() - t0) * 1e3
    build_ms, manifest = timed(builder.build, args.iters, device)
    ok_manifest = manifest.digests() == full_digests(full, args.algorithm)
    # The receiving side: vLLM's TP layout.
    state, layout = vllm_layout(full, rank, world, **cfg)
    engine_bytes = sum(t.numel() * t.element_size() for t in state.values())
    t0 = time.perf_counter()
    verifier = SyncVerifier(state, WeightManifest.from_json(manifest.to_json()), layout=layout)
    plan_ms = (time.perf_counter() - t0) * 1e3
    check_ms, report = timed(verifier.check, args.iters, device)
    assert report.ok
    out["llama_tp"] = {"tensors": len(full), "engine_tensors": len(state),
                       "engine_bytes_per_rank": engine_bytes, "manifest_ok": ok_manifest,
                       "manifest_plan_ms": builder_plan_ms, "manifest_ms": build_ms,
                       "manifest_sends_bytes": builder.engine.plan.message_bytes,
                       "plan_ms": plan_ms, "check_ms": check_ms,
                       "sends_bytes": report.bytes_sent, "parts_ms": report.timings_ms}
    del trainer, builder
    if not args.skip_peer:
        full.clear()  # the peer approach gathers its own copies
        if device.type == "cuda":
            torch.cuda.empty_cache()
        peer_ms, hexes = timed(lambda: peer_check(state, layout, world), 1, device)
        out["llama_tp"].update(peer_ms=peer_ms, peer_sends_bytes=engine_bytes - sum(
            state[k].numel() * state[k].element_size() for k in state if k not in layout),
            peer_tensors=len(hexes))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--algorithm", default="blake3", choices=["blake3", "sha256-tree"])
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--gpt2", default="gpt2-xl", help="model_shapes.json entry for part 1")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--intermediate", type=int, default=14336)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--small", action="store_true", help="tiny shapes, for a smoke test")
    p.add_argument("--skip-peer", action="store_true", help="leave out the peer approach")
    p.add_argument("--json", help="write the results here (rank 0)")
    args = p.parse_args()
    if args.small:
        args.gpt2, args.layers, args.hidden, args.intermediate = "gpt2", 2, 256, 512
        args.heads, args.kv_heads, args.vocab, args.iters = 4, 2, 1000, min(args.iters, 3)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if device.type == "cpu":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    out = {"device": str(device), "world": dist.get_world_size(), "algorithm": args.algorithm}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    with torch.no_grad():
        bench_fsdp2(args, device, mesh, out)
        bench_llama(args, device, out)
    if dist.get_rank() == 0:
        f, m = out["fsdp2"], out["llama_tp"]
        print(f"{out['world']} ranks, {out['device']} ({out.get('gpu', 'cpu')}), {args.algorithm}")
        print(f"FSDP2 {f['model']} bf16 ({f['tensors']} tensors, {f['bytes_per_rank'] / 1e9:.2f}"
              f" GB a rank): verify_sharded {f['verify_sharded_ms']:.2f} ms (first call, "
              f"planning: {f['plan_ms']:.0f} ms), SyncVerifier.check {f['check_ms']:.2f} ms; "
              f"sends {f['sends_bytes'] / 1e3:.1f} kB a rank")
        print(f"Llama-8B-shaped bf16, trainer FSDP2 -> engine TP={out['world']} (fused qkv, "
              f"gate_up): {m['engine_bytes_per_rank'] / 1e9:.2f} GB a rank")
        print(f"  sending side ManifestBuilder.build {m['manifest_ms']:.2f} ms (plan "
              f"{m['manifest_plan_ms']:.0f} ms, sends {m['manifest_sends_bytes'] / 1e6:.2f} MB), "
              f"digests equal hash_tensors of the full tensors: {m['manifest_ok']}")
        print(f"  receiving side SyncVerifier.check {m['check_ms']:.2f} ms (plan "
              f"{m['plan_ms']:.0f} ms), sends {m['sends_bytes'] / 1e6:.2f} MB a rank; parts "
              f"{ {k: round(v, 2) for k, v in m['parts_ms'].items()} }")
        if "peer_ms" in m:
            print(f"  peer approach (gather, .cpu(), hashlib per tensor): {m['peer_ms']:.0f} ms,"
                  f" sends {m['peer_sends_bytes'] / 1e9:.2f} GB a rank "
                  f"({m['peer_ms'] / m['check_ms']:.0f}x the check)")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(out, fh, indent=2)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
