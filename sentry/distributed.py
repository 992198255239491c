"""Integrity across ranks, on torch.distributed collectives only (gloo, NCCL, any backend).

* check_replicas: data-parallel replicas hold the same tensors; each rank hashes its own
  (one hash_tensors call), the [N, 32] digests are all-gathered, and ranks whose digest of a
  tensor differs from the others' (or from a signature's) are named with the tensor.
* verify_sharded: a model whose tensors are split by rows across ranks (DTensor Shard(0), FSDP2,
  or an explicit layout) checked against digests of the full tensors without gathering them:
  each rank reduces its whole leaves to a few subtree values (hash_subtrees), the ranks exchange
  those and the partial leaves at shard boundaries, and every rank finishes every root.

The scheme and message sizes: docs/DISTRIBUTED.md. Without an initialised process group both
run as a world of one. Ranks are ranks within `group`. With NCCL, set the current CUDA device
(torch.cuda.set_device) first: the small exchanges go through it.
"""
import dataclasses
import hashlib
import json
import pickle
import time

import torch
import torch.distributed as dist

from sentry_ops import finish_subtrees, hash_subtrees, leaf_bytes, shard_pieces
from sentry_ops._subtrees import leaf_count, shard_leaves

from . import expected as expected_mod
from .errors import FormatError, VerificationError
from .safetensors_format import safetensors_dtype_name

# ---------------------------------------------------------------------------------------------
# collectives (a world of one without a process group)


def _world(group):
    if not (dist.is_available() and dist.is_initialized()):
        return 1, 0
    return dist.get_world_size(group), dist.get_rank(group)


def _comm_device(group):
    """CPU tensors for gloo (and any backend set that has a CPU one), the current CUDA device
    for NCCL, which takes nothing else."""
    backend = str(dist.get_backend(group)).lower()
    if "gloo" in backend or "mpi" in backend or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def _gather_rows(t, group):
    """[world, *t.shape] on the host: t from every rank (same shape on every rank)."""
    world, _ = _world(group)
    if world == 1:
        return t.unsqueeze(0).cpu()
    t = t.to(_comm_device(group)).contiguous()
    out = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(out, t, group=group)
    return torch.stack(out).cpu()


def _gather_objects(obj, group):
    """all_gather_object: for the small, variable-size parts (pickled; fine at these sizes)."""
    world, _ = _world(group)
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj, group=group)
    return out


def _local(t):
    """A DTensor's local part, or the tensor itself."""
    return t.to_local() if _is_dtensor(t) else t


def _is_dtensor(t):
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without DTensor
        return False
    return isinstance(t, DTensor)


def _state(module_or_state_dict):
    if isinstance(module_or_state_dict, torch.nn.Module):
        state = module_or_state_dict.state_dict()
    elif isinstance(module_or_state_dict, dict):
        state = module_or_state_dict
    else:
        raise FormatError(f"expected an nn.Module or a state dict, got "
                          f"{type(module_or_state_dict).__name__}")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise FormatError(f"state dict entry {name!r} is not a named tensor")
    return state


def _hash_by_device(tensors, algorithm):
    """uint8 [N, 32]: one hash_tensors call per device, the rows on the first tensor's device."""
    devices = {}
    for i, t in enumerate(tensors):
        devices.setdefault(t.device, []).append(i)
    if len(devices) <= 1:
        return torch.ops.sentry.hash_tensors.default(tensors, algorithm)
    out = torch.empty(len(tensors), 32, dtype=torch.uint8, device=tensors[0].device)
    for idx in devices.values():
        out[idx] = torch.ops.sentry.hash_tensors.default([tensors[i] for i in idx],
                                                         algorithm).to(out.device)
    return out


def _ms(t0):
    return (time.perf_counter() - t0) * 1e3


# ---------------------------------------------------------------------------------------------
# replicas


@dataclasses.dataclass
class ReplicaReport:
    """What check_replicas found. diverging: {rank: [tensor names]}; tensors: {name: [ranks]};
    metadata: {rank: how its names, dtypes or shapes differ} (then digests were not compared);
    reference: what each rank was compared with."""

    world_size: int
    rank: int
    reference: str
    diverging: dict
    tensors: dict
    metadata: dict
    timings_ms: dict

    @property
    def ok(self):
        return not self.diverging and not self.metadata

    def summary(self):
        if self.ok:
            return f"{self.world_size} replicas agree"
        if self.metadata:
            return "replicas differ in their tensors: " + "; ".join(
                f"rank {r}: {d}" for r, d in sorted(self.metadata.items()))
        return f"replicas diverge from {self.reference}: " + "; ".join(
            f"rank {r}: {', '.join(names[:10])}" + (f" ... ({len(names)} in all)"
                                                      if len(names) > 10 else "")
            for r, names in sorted(self.diverging.items()))


class ReplicaMismatchError(VerificationError):
    """Replicas differ; .ranks names the diverging ranks, .report has the details."""

    def __init__(self, report):
        self.report = report
        self.ranks = sorted(set(report.diverging) | set(report.metadata))
        super().__init__(report.summary(), changed=sorted(report.tensors))


def _metadata(names, tensors):
    return [[n, safetensors_dtype_name(t.dtype), list(t.shape)] for n, t in zip(names, tensors)]


def _describe_metadata(mine, reference):
    mine = {n: (d, s) for n, d, s in mine}
    ref = {n: (d, s) for n, d, s in reference}
    parts = []
    for label, names in (("missing", sorted(set(ref) - set(mine))),
                         ("extra", sorted(set(mine) - set(ref))),
                         ("dtype/shape differs", sorted(n for n in set(ref) & set(mine)
                                                        if ref[n] != mine[n]))):
        if names:
            parts.append(f"{label}: {', '.join(names[:10])}")
    return "; ".join(parts), sorted(set(ref) ^ set(mine)) + sorted(
        n for n in set(ref) & set(mine) if ref[n] != mine[n])


def _vote(values):
    """Index of the reference value among per-rank values: the most common, ties going to the
    value of the lowest rank. Returns (reference value, whether it had a strict majority)."""
    counts = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    best = max(counts.values())
    ref = next(v for v in values if counts[v] == best)  # the lowest rank among the most common
    return ref, best * 2 > len(values)


def check_replicas(module_or_state_dict, group=None, *, algorithm="blake3", expected=None,
                   public_key=None, certificate_chain=None, raise_on_mismatch=True):
    """Compares the tensors of data-parallel replicas across the ranks of `group`; every rank
    must call it. Returns a ReplicaReport (the same on every rank); raises ReplicaMismatchError
    naming ranks and tensors when they differ, unless raise_on_mismatch=False.

    Each rank is compared with the majority of ranks (ties: the value of the lowest rank, so
    with two replicas rank 0 is the reference), or with `expected` (a signature path with
    public_key/certificate_chain, or digests) when given, which also attributes a two-replica
    disagreement. DTensors are compared by their local parts (e.g. HSDP replicas of a shard:
    pass the replicate group).
    """
    timings = {}
    t0 = time.perf_counter()
    world, rank = _world(group)
    failure, trusted = None, None
    try:
        state = _state(module_or_state_dict)
        names = sorted(state)
        tensors = [_local(state[n]) for n in names]
        if expected is not None:
            trusted = expected_mod.resolve(expected, public_key=public_key,
                                           certificate_chain=certificate_chain)
            algorithm = trusted.algorithm
        # The hash runs (on a GPU: asynchronously) while the metadata is exchanged.
        with torch.no_grad():
            digests = _hash_by_device(tensors, algorithm) if tensors else \
                torch.empty(0, 32, dtype=torch.uint8)
        meta = [algorithm, _metadata(names, tensors)]
    except Exception as exc:  # told to the other ranks, so that none waits for this one
        failure = exc
        meta = ["error", f"{type(exc).__name__}: {exc}"]
    timings["launch hash"] = _ms(t0)

    t0 = time.perf_counter()
    meta_digest = hashlib.sha256(json.dumps(meta).encode()).digest()
    all_meta = _gather_rows(torch.frombuffer(bytearray(meta_digest), dtype=torch.uint8), group)
    meta_rows = [bytes(r) for r in all_meta.numpy()]
    timings["exchange metadata"] = _ms(t0)
    report = ReplicaReport(world, rank, "", {}, {}, {}, timings)
    if len(set(meta_rows)) > 1:
        # Names, dtypes or shapes differ (a digest exchange of different sizes would hang).
        all_meta = _gather_objects(meta, group)
        if failure is not None:
            raise failure
        ref_row, _ = _vote(meta_rows)
        ref = all_meta[meta_rows.index(ref_row)]
        report.reference = f"rank {meta_rows.index(ref_row)}'s tensor list"
        for r, (row, theirs) in enumerate(zip(meta_rows, all_meta)):
            if row == ref_row:
                continue
            if theirs[0] == "error":
                report.metadata[r] = "could not take part: " + theirs[1]
            elif theirs[0] != ref[0]:
                report.metadata[r] = f"hashes with {theirs[0]}, not {ref[0]}"
            else:
                text, involved = _describe_metadata(theirs[1], ref[1])
                report.metadata[r] = text
                for n in involved:
                    report.tensors.setdefault(n, []).append(r)
    elif failure is not None:  # every rank failed the same way
        raise failure
    else:
        t0 = time.perf_counter()
        everyone = _gather_rows(digests, group)  # [world, N, 32]
        timings["exchange digests"] = _ms(t0)
        t0 = time.perf_counter()
        if trusted is not None:
            missing = sorted(set(trusted.digests) - set(names))
            unexpected = sorted(set(names) - set(trusted.digests))
            if missing or unexpected:
                raise VerificationError(f"{trusted.source}: the replicas' tensors do not match "
                                        "the trusted list", missing=missing,
                                        unexpected=unexpected)
            report.reference = trusted.source
        else:
            report.reference = ("the majority of ranks (ties: the lowest rank's copy)"
                                if world > 2 else "rank 0" if world == 2 else "itself")
        flat = everyone.numpy()
        for i, name in enumerate(names):
            values = [bytes(flat[r, i]) for r in range(world)]
            ref = trusted.digests[name] if trusted is not None else _vote(values)[0]
            bad = [r for r, v in enumerate(values) if v != ref]
            if bad:
                report.tensors[name] = bad
                for r in bad:
                    report.diverging.setdefault(r, []).append(name)
        timings["compare"] = _ms(t0)
    if raise_on_mismatch and not report.ok:
        raise ReplicaMismatchError(report)
    return report


# ---------------------------------------------------------------------------------------------
# sharded models


@dataclasses.dataclass
class ShardedReport:
    """What verify_sharded found (the same on every rank). digests: {name: hex of the full
    tensor's digest as finished from all ranks' parts}; holders: {name: ranks holding bytes of
    it}; problems: {name: why it could not be verified as laid out}."""

    world_size: int
    rank: int
    algorithm: str
    digests: dict
    changed: list
    missing: list
    unexpected: list
    holders: dict
    problems: dict
    bytes_sent: int
    timings_ms: dict

    @property
    def ok(self):
        return not (self.changed or self.missing or self.unexpected)


def _row_layout(name, local, start_row, full_shape):
    full_shape = tuple(int(d) for d in full_shape)
    if len(full_shape) == 0:
        return None  # a 0-dim tensor has no rows: every rank holds it whole
    if tuple(local.shape[1:]) != full_shape[1:] or local.dim() != len(full_shape):
        raise FormatError(f"tensor '{name}': local shape {list(local.shape)} is not a row shard "
                          f"of {list(full_shape)}")
    if start_row < 0 or start_row + local.shape[0] > full_shape[0]:
        raise FormatError(f"tensor '{name}': rows [{start_row}, {start_row + local.shape[0]}) "
                          f"are outside its {full_shape[0]} rows")
    row_bytes = local.element_size()
    for d in full_shape[1:]:
        row_bytes *= d
    return start_row * row_bytes, row_bytes * full_shape[0], full_shape


def _dtensor_layout(name, t):
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    placements = tuple(t.placements)
    if all(isinstance(p, Replicate) for p in placements):
        return None
    if t.device_mesh.ndim != 1 or not (isinstance(placements[0], Shard)
                                       and placements[0].dim == 0):
        raise FormatError(f"tensor '{name}': DTensor placements {placements} on a "
                          f"{t.device_mesh.ndim}-D mesh; verify_sharded takes Shard(0) or "
                          "Replicate on a 1-D mesh (give an explicit layout otherwise)")
    _, offset = compute_local_shape_and_global_offset(t.shape, t.device_mesh, placements)
    return _row_layout(name, t.to_local(), offset[0], t.shape)


def _mesh_group(state):
    groups = {id(t.device_mesh): t.device_mesh for t in state.values() if _is_dtensor(t)}
    if len(groups) > 1:
        raise FormatError("DTensors on several device meshes: pass the group to exchange over")
    return next(iter(groups.values())).get_group() if groups else None


def _byte_view(t):
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def verify_sharded(module_or_shards, expected, layout=None, group=None, *, public_key=None,
                   certificate_chain=None, algorithm=None, raise_on_mismatch=True):
    """Verifies tensors split by rows across the ranks of `group` against digests of the full
    tensors (`expected`: a signature path with public_key/certificate_chain, or {name: digest}
    with algorithm), without gathering them. Every rank must call it.

    A tensor's layout comes from its DTensor placements (Shard(0) or Replicate on a 1-D mesh:
    DTensor, FSDP2), or from layout[name] = (start_row, full_shape) for plain local tensors;
    any other tensor is taken as held whole by every rank (each rank's copy is checked).
    Returns a ShardedReport; raises VerificationError naming the tensors (and the ranks holding
    them) that differ, unless raise_on_mismatch=False.
    """
    timings = {}
    t0 = time.perf_counter()
    failure, trusted, state = None, None, None
    try:
        state = _state(module_or_shards)
        if group is None:
            group = _mesh_group(state)
    except FormatError as exc:  # reported after the exchange below (over the default group)
        failure = exc
    world, rank = _world(group)
    try:
        if failure is not None:
            raise failure
        trusted = expected_mod.resolve(expected, public_key=public_key,
                                       certificate_chain=certificate_chain, algorithm=algorithm)
        parts = _local_parts(state, dict(layout or {}), trusted.algorithm)
    except Exception as exc:  # told to the other ranks, so that none waits for this one
        failure = exc
        parts = {_ERROR: f"{type(exc).__name__}: {exc}"}
    timings["hash local"] = _ms(t0)

    t0 = time.perf_counter()
    bytes_sent = len(pickle.dumps(parts))
    everyone = _gather_objects(parts, group)
    timings["exchange"] = _ms(t0)
    if failure is not None:
        raise failure
    errors = [f"rank {r} could not take part: {p[_ERROR]}" for r, p in enumerate(everyone)
              if _ERROR in p]
    if errors:
        raise FormatError("verify_sharded: " + "; ".join(errors))

    t0 = time.perf_counter()
    report = _finish_all(everyone, trusted, world, rank, bytes_sent, timings)
    timings["finish"] = _ms(t0)
    if raise_on_mismatch and not report.ok:
        detail = "; ".join(f"'{n}' (ranks {report.holders.get(n, [])}"
                           + (f": {report.problems[n]}" if n in report.problems else "") + ")"
                           for n in report.changed[:10])
        raise VerificationError(f"{trusted.source}: the sharded model does not match"
                                + (f": {detail}" if detail else ""),
                                changed=report.changed, missing=report.missing,
                                unexpected=report.unexpected)
    return report


_ERROR = ("error",)  # the key of a rank's failure in its parts (tensor names are strings)


def _local_parts(state, layout, algorithm):
    """This rank's message: {name: ("shard", start, nbytes, total, full shape, dtype, piece
    values, [(offset, boundary bytes)]) or ("whole", shape, dtype, digest)}."""
    unknown = sorted(set(layout) - set(state))
    if unknown:
        raise FormatError(f"layout names tensors this rank does not have: {unknown[:10]}")
    sharded, whole = [], []  # (name, local, start, total, full shape) / (name, tensor)
    for name in sorted(state):
        t = state[name]
        if _is_dtensor(t):
            local, place = t.to_local(), _dtensor_layout(name, t)
        elif name in layout:
            start_row, full_shape = layout[name]
            local, place = t, _row_layout(name, t, int(start_row), full_shape)
        else:
            local, place = t, None
        if place is None:
            whole.append((name, local))
        else:
            sharded.append((name, local, *place))

    with torch.no_grad():
        views = [_byte_view(local) for _, local, _, _, _ in sharded]
        values, by_device = {}, {}
        for i, v in enumerate(views):
            by_device.setdefault(v.device, []).append(i)
        for idx in by_device.values():  # one hash_subtrees call per device
            rows = hash_subtrees([views[i] for i in idx], [sharded[i][2] for i in idx],
                                 [sharded[i][3] for i in idx], algorithm).cpu()
            at = 0
            for i in idx:
                k = len(shard_pieces(sharded[i][2], views[i].numel(), sharded[i][3], algorithm))
                values[i] = rows[at:at + k].numpy().tobytes()
                at += k
        # The bytes outside each shard's whole leaves (< 1 leaf at each end), one host copy.
        size = leaf_bytes(algorithm)
        edges = []
        for i, (_, _, start, total, _) in enumerate(sharded):
            nbytes = views[i].numel()
            first, end, _ = shard_leaves(start, nbytes, total, algorithm)
            if first == end:
                cuts = [(start, start + nbytes)]
            else:
                cuts = [(start, first * size), (min(end * size, total), start + nbytes)]
            edges.append([(a, views[i][a - start:b - start]) for a, b in cuts if b > a])
        flat = [v for e in edges for _, v in e]
        if len({v.device for v in flat}) > 1:
            flat = [v.cpu() for v in flat]
        host = torch.cat(flat).cpu().numpy().tobytes() if flat else b""
        whole_digests = _hash_by_device([t for _, t in whole], algorithm).cpu() if whole else None

    parts, at = {}, 0
    for i, (name, local, start, total, full_shape) in enumerate(sharded):
        frags = []
        for a, v in edges[i]:
            frags.append((a, host[at:at + v.numel()]))
            at += v.numel()
        parts[name] = ("shard", start, views[i].numel(), total, full_shape, _dtype_name(local),
                       values[i], frags)
    for j, (name, t) in enumerate(whole):
        parts[name] = ("whole", tuple(t.shape), _dtype_name(t), bytes(whole_digests[j].tolist()))
    return parts


def _dtype_name(t):
    return safetensors_dtype_name(t.dtype)


def _finish_all(everyone, trusted, world, rank, bytes_sent, timings):
    """Every rank runs this on the same gathered parts and reaches the same report."""
    algorithm = trusted.algorithm
    names = sorted({n for parts in everyone for n in parts})
    report = ShardedReport(world, rank, algorithm, {}, [], sorted(set(trusted.digests) - set(names)),
                           sorted(set(names) - set(trusted.digests)), {}, {}, bytes_sent, timings)
    plans = {}
    for name in names:
        held = [(r, parts[name]) for r, parts in enumerate(everyone) if name in parts]
        report.holders[name] = [r for r, _ in held]
        kinds = {p[0] for _, p in held}
        if kinds != {"shard"} and kinds != {"whole"}:
            report.problems[name] = "sharded on some ranks, whole on others"
        elif kinds == {"whole"}:
            bad = [r for r, p in held if name in trusted.digests and p[3] != trusted.digests[name]]
            shapes = {(p[1], p[2]) for _, p in held}
            _check_layout(report, trusted, name, *next(iter(shapes)), len(shapes))
            if bad:
                report.problems.setdefault(name, f"differs on ranks {bad}")
        else:
            shapes = {(tuple(p[4]), p[5]) for _, p in held}
            _check_layout(report, trusted, name, *next(iter(shapes)), len(shapes))
            problem = _tiling_problem(held)
            if problem:
                report.problems.setdefault(name, problem)
            elif name not in report.problems:
                plans[name] = held
    digests = _finish_roots(plans, algorithm)
    for name, raw in digests.items():
        report.digests[name] = raw.hex()
        if name in trusted.digests and raw != trusted.digests[name]:
            report.problems.setdefault(name, "the bytes differ")
    report.changed = sorted(n for n in report.problems if n in trusted.digests)
    return report


def _check_layout(report, trusted, name, shape, dtype, variants):
    if variants > 1:
        report.problems[name] = "the ranks disagree on its dtype or full shape"
    elif trusted.layouts is not None and name in trusted.layouts:
        want = trusted.layouts[name]
        if (dtype, tuple(shape)) != (want[0], tuple(want[1])):
            report.problems[name] = (f"signed as {want[0]} {list(want[1])}, laid out as {dtype} "
                                     f"{list(shape)}")


def _tiling_problem(held):
    """Why the ranks' byte ranges do not tile the tensor exactly, or None."""
    totals = {p[3] for _, p in held}
    if len(totals) > 1:
        return f"the ranks disagree on its size ({sorted(totals)} bytes)"
    total = totals.pop()
    pos, owner = 0, None
    for start, stop, r in sorted((p[1], p[1] + p[2], r) for r, p in held if p[2] > 0):
        if start > pos:
            return f"bytes [{pos}, {start}) are on no rank"
        if start < pos:
            return f"rank {r}'s bytes [{start}, {stop}) overlap rank {owner}'s"
        pos, owner = stop, r
    if pos != total:
        return f"bytes [{pos}, {total}) are on no rank"
    return None


def _finish_roots(plans, algorithm):
    """{name: 32-byte digest} from the gathered parts of correctly tiled tensors."""
    size = leaf_bytes(algorithm)
    tiny, leaves, pieces = {}, {}, {}  # name -> bytes / {leaf: [(offset, bytes)]} / [(leaf, value)]
    for name, held in plans.items():
        total = held[0][1][3]
        frags = [f for _, p in held for f in p[7]]
        if leaf_count(total, algorithm) == 1:  # the only leaf is the root: hash its bytes
            tiny[name] = b"".join(b for _, b in sorted(frags))
            continue
        by_leaf = leaves.setdefault(name, {})
        for offset, data in frags:  # a fragment may straddle a leaf boundary: split it
            while data:
                g = offset // size
                take = min(len(data), (g + 1) * size - offset)
                by_leaf.setdefault(g, []).append((offset, data[:take]))
                offset, data = offset + take, data[take:]
        got = pieces.setdefault(name, [])
        for r, p in held:
            firsts = [f for f, _ in shard_pieces(p[1], p[2], total, algorithm)]
            if len(p[6]) != 32 * len(firsts):
                raise FormatError(f"tensor '{name}': rank {r} sent {len(p[6]) // 32} subtree "
                                  f"values for {len(firsts)} pieces")
            got += [(f, p[6][32 * k:32 * k + 32]) for k, f in enumerate(firsts)]
    out = {}
    if tiny:
        blobs = [torch.frombuffer(bytearray(b), dtype=torch.uint8) if b else
                 torch.empty(0, dtype=torch.uint8) for b in tiny.values()]
        rows = torch.ops.sentry.hash_tensors.default(blobs, algorithm)
        out.update((n, bytes(r)) for n, r in zip(tiny, rows.numpy()))
    # The boundary leaves, whole again, hashed as shards of one leaf each (one call).
    jobs = [(name, g, b"".join(d for _, d in sorted(frs))) for name, by_leaf in leaves.items()
            for g, frs in sorted(by_leaf.items())]
    if jobs:
        totals = {name: plans[name][0][1][3] for name in leaves}
        rows = hash_subtrees([torch.frombuffer(bytearray(b), dtype=torch.uint8) for _, _, b in jobs],
                             [g * size for _, g, _ in jobs], [totals[n] for n, _, _ in jobs],
                             algorithm)
        for (name, g, _), row in zip(jobs, rows.numpy()):
            pieces[name].append((g, bytes(row)))
    for name, got in pieces.items():
        got.sort()
        values = torch.frombuffer(bytearray(b"".join(v for _, v in got)), dtype=torch.uint8)
        total = plans[name][0][1][3]
        out[name] = bytes(finish_subtrees(values.view(-1, 32), [f for f, _ in got], total,
                                          algorithm).tolist())
    return out
