"""Random layouts of full tensors over ranks, as plain local tensors with explicit layouts
(sentry.layout's Region / Concat / Fused), for test_syncplan.py (ranks simulated in one
process) and sync_worker.py (real gloo ranks). The full tensors are the manifest; each
generator returns, per rank, (state, layout, mapping) that together hold every byte.

Split points are random: inside a leaf, on leaf boundaries, repeated (empty shards).
"""
import math
import random

import torch

from sentry.layout import Concat, Fused, Region

DTYPES = (torch.int32, torch.float16, torch.uint8, torch.float32)


def random_full(rng, count=6, max_bytes=20 * 1024):
    """{name: tensor}: 1- to 3-D tensors of 0 to ~max_bytes bytes, rows off leaf sizes."""
    g = torch.Generator().manual_seed(rng.randrange(1 << 30))
    out = {}
    for i in range(count):
        dtype = rng.choice(DTYPES)
        size = torch.tensor([], dtype=dtype).element_size()
        dims = rng.randrange(1, 4)
        budget = rng.randrange(0, max_bytes) // size
        shape = []
        for d in range(dims):
            left = max(1, budget // max(1, math.prod(shape)))
            shape.append(rng.randrange(0 if rng.random() < 0.05 else 1,
                                       max(2, int(left ** (1 / (dims - d))) + 2)))
        t = torch.randint(0, 255, shape, generator=g, dtype=torch.int32).to(dtype) \
            if dtype != torch.float16 else torch.randn(shape, generator=g).to(dtype)
        out[f"t{i}.w"] = t
    return out


def cuts(rng, n, parts):
    """parts + 1 sorted boundaries in [0, n] (repeats: empty parts)."""
    return [0] + sorted(rng.randrange(n + 1) for _ in range(parts - 1)) + [n]


def box(t, offset, shape):
    return t[tuple(slice(o, o + s) for o, s in zip(offset, shape))].clone()


def split_box(rng, full_shape, offset, shape, dim, parts):
    """`parts` boxes splitting box (offset, shape) along dim at random points."""
    b = cuts(rng, shape[dim], parts)
    return [(tuple(offset[d] + (b[i] if d == dim else 0) for d in range(len(shape))),
             tuple(b[i + 1] - b[i] if d == dim else shape[d] for d in range(len(shape))))
            for i in range(parts)]


def sharded(rng, full, world, mesh=None, replicate_some=True):
    """Each tensor split along random dims over a mesh (world, or W1 x W2: rank = i * W2 + j);
    on a 2-D mesh a tensor may be replicated along one mesh dim (TP x DP, HSDP)."""
    mesh = mesh or (world,)
    states = [dict() for _ in range(world)]
    layouts = [dict() for _ in range(world)]
    for name, t in full.items():
        shape = tuple(t.shape)
        if not shape:
            for r in range(world):
                states[r][name] = t.clone()
            continue
        if replicate_some and rng.random() < 0.15:  # held whole everywhere
            for r in range(world):
                states[r][name] = t.clone()
            continue
        boxes = {(): ((0,) * len(shape), shape)}
        for axis, n in enumerate(mesh):
            if len(mesh) > 1 and rng.random() < 0.3:  # replicated along this mesh dim
                boxes = {k + (i,): v for k, v in boxes.items() for i in range(n)}
                continue
            dim = rng.randrange(len(shape))
            splits = {}  # replicas of a box are split alike, as a mesh dim splits them
            for v in boxes.values():
                if v not in splits:
                    splits[v] = split_box(rng, shape, *v, dim, n)
            boxes = {k + (i,): b for k, v in boxes.items() for i, b in enumerate(splits[v])}
        for coords, (offset, bshape) in boxes.items():
            r = 0
            for c, n in zip(coords, mesh):
                r = r * n + c
            states[r][name] = box(t, offset, bshape)
            layouts[r][name] = Region(name, shape, offset, bshape)
    return [(states[r], layouts[r], {}) for r in range(world)]


def fused(rng, full, world):
    """Groups of tensors fused along a dim (their other dims equal): either a box of the
    concatenation (Fused in the mapping; a DTensor of a fused parameter) or, vLLM-style, each
    rank's shards of every part concatenated (Concat of Regions)."""
    names = sorted(full)
    states = [dict() for _ in range(world)]
    layouts = [dict() for _ in range(world)]
    mappings = [dict() for _ in range(world)]
    # Reshape the full tensors into fusable groups: same trailing shape along dim 0 or 1.
    groups = []
    for k in range(0, len(names) - 2, 3):
        groups.append(names[k:k + 3])
    rest = names[3 * len(groups):]
    for gi, group in enumerate(groups):
        dim = next(d for d in (0, 1) if fuse_dims_agree(full, group, d))
        base = [t for t in (full[n] for n in group)]
        fused_name = f"fused{gi}.w"
        if rng.random() < 0.5:
            cat = torch.cat(base, dim)
            shape = tuple(cat.shape)
            sdim = rng.randrange(len(shape))
            for r, (offset, bshape) in enumerate(split_box(rng, shape, (0,) * len(shape), shape,
                                                           sdim, world)):
                states[r][fused_name] = box(cat, offset, bshape)
                layouts[r][fused_name] = Region(fused_name, shape, offset, bshape)
                mappings[r][fused_name] = Fused(tuple(group), dim)
        else:
            sdim = rng.randrange(base[0].dim())
            if sdim == dim:
                per = [split_box(rng, tuple(t.shape), (0,) * t.dim(), tuple(t.shape), sdim,
                                 world) for t in base]
            else:  # the parts share that dim: split alike, or they would not fit
                b = cuts(rng, base[0].shape[sdim], world)
                per = [[(tuple(b[r] if d == sdim else 0 for d in range(t.dim())),
                         tuple(b[r + 1] - b[r] if d == sdim else t.shape[d]
                               for d in range(t.dim()))) for r in range(world)] for t in base]
            for r in range(world):
                parts = [Region(n, tuple(t.shape), *per[i][r]) for i, (n, t)
                         in enumerate(zip(group, base))]
                states[r][fused_name] = torch.cat([box(t, *per[i][r]) for i, t in
                                                   enumerate(base)], dim)
                layouts[r][fused_name] = Concat(tuple(parts), dim)
    for name in rest:
        for r in range(world):
            states[r]["engine." + name] = full[name].clone()  # renamed, held whole
            mappings[r]["engine." + name] = name
    return [(states[r], layouts[r], mappings[r]) for r in range(world)]


def fusable_full(rng, world_count=3):
    """Full tensors in groups of three that share every dim but one of the first two."""
    g = torch.Generator().manual_seed(rng.randrange(1 << 30))
    out = {}
    for gi in range(world_count):
        dim = rng.randrange(2)
        other = [rng.randrange(1, 40), rng.randrange(1, 300)]
        dtype = rng.choice(DTYPES)
        for k in range(3):
            shape = list(other)
            shape[dim] = rng.randrange(0, 30)
            out[f"g{gi}.{'qkv'[k]}"] = torch.randint(0, 255, shape, generator=g,
                                                     dtype=torch.int32).to(dtype)
    out["lone.w"] = torch.randint(0, 255, (rng.randrange(1, 3000),), generator=g,
                                  dtype=torch.int32).to(torch.uint8)
    return out


def fuse_dims_agree(full, group, dim):
    shapes = [tuple(full[n].shape) for n in group]
    return all(s[:dim] + s[dim + 1:] == shapes[0][:dim] + shapes[0][dim + 1:] for s in shapes)


def flip_one_bit(rng, states, rank, name=None):
    """Flips a random bit of a random non-empty local tensor of `rank`; returns its key."""
    keys = [k for k, t in sorted(states[rank].items()) if t.numel() and (name is None or k == name)]
    key = rng.choice(keys)
    t = states[rank][key]
    flat = t.view(-1).view(torch.uint8) if t.dim() else t.view(1).view(torch.uint8)
    flat[rng.randrange(flat.numel())] ^= 1 << rng.randrange(8)
    return key


__all__ = ["random_full", "sharded", "fused", "fusable_full", "flip_one_bit", "random"]
