"""Integrity across ranks, on torch.distributed collectives only (gloo, NCCL, any backend).

* check_replicas: data-parallel replicas hold the same tensors; each rank hashes its own
  (one hash_tensors call), the [N, 32] digests are all-gathered, and ranks whose digest of a
  tensor differs from the others' (or from a signature's) are named with the tensor.
* verify_sharded: tensors laid out over ranks (DTensor Shard(d) on any dim or Replicate, on
  any mesh; FSDP2; or an explicit layout) checked against digests of the full tensors without
  gathering them: sentry.weightsync.SyncVerifier, with its plan cached between calls.
* sentry.weightsync (re-exported here): WeightManifest, ManifestBuilder, SyncVerifier and the
  layout descriptions Region, Concat, Fused, for trainer -> engine weight syncs.

The scheme and message sizes: docs/DISTRIBUTED.md. Without an initialised process group all
run as a world of one. Ranks are ranks within `group`. With NCCL, set the current CUDA device
(torch.cuda.set_device) first: the exchanges go through it.
"""
import collections
import dataclasses
import hashlib
import json
import time

import torch

from . import collectives
from ..oms import trusted_digests as expected_mod
from ..errors import FormatError, VerificationError
from .layout import local_tensor
from ..formats.safetensors_format import safetensors_dtype_name
from .weightsync import (Concat, Fused, ManifestBuilder, Region, SyncMismatchError,  # noqa: F401
                         SyncReport, SyncVerifier, WeightManifest, exchange_group, state_of)

_world = collectives.world
_gather_rows = collectives.gather_rows
_gather_objects = collectives.gather_objects
_local = local_tensor
_state = state_of


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
        super().__init__(report.summary(), changed=sorted(report.tensors),
                         ranks=set(report.diverging) | set(report.metadata))


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

ShardedReport = SyncReport  # what verify_sharded returns (the fields it always had, and ranks)

_VERIFIERS = collections.OrderedDict()  # local layout key -> SyncVerifier (the last few)
_CACHED = 4


def _layout_key(state, layout, mapping, group, algorithm):
    """This process's key of a layout: equal keys give equal plans (hash() is per process;
    the ranks agree through the plans' own fingerprints)."""
    items = []
    for name in sorted(state):
        t = state[name]
        local = local_tensor(t)
        mesh = (tuple(t.placements), id(t.device_mesh)) if local is not t else None
        items.append((name, tuple(t.shape), tuple(local.shape), local.dtype, local.device, mesh))
    return hash((tuple(items), repr(sorted(layout.items())), repr(sorted(mapping.items())),
                 id(group), algorithm))


def verify_sharded(module_or_shards, expected, layout=None, group=None, *, public_key=None,
                   certificate_chain=None, algorithm=None, raise_on_mismatch=True,
                   mapping=None):
    """Verifies tensors laid out over the ranks of `group` against digests of the full
    tensors (`expected`: a WeightManifest, a signature path with public_key/certificate_chain,
    or {name: digest} with algorithm), without gathering them. Every rank must call it.

    A tensor's layout comes from its DTensor placements (Shard(d) on any dim, Replicate, any
    mesh), or from layout[name] = (start_row, full_shape), a Region or a Concat for plain local
    tensors; any other tensor is taken as held whole (each rank's copy is checked). mapping
    renames (str) or splits fused tensors (Fused). Returns a SyncReport; raises
    SyncMismatchError (a VerificationError) naming the tensors and the ranks whose bytes differ,
    unless raise_on_mismatch=False.

    The plan is cached: a repeated call on the same layout costs one small all-gather more
    than SyncVerifier.check (the ranks agree that they all reuse it).
    """
    failure, verifier, key = None, None, None
    layout, mapping = dict(layout or {}), dict(mapping or {})
    try:
        state = state_of(module_or_shards)
        trusted = (expected if isinstance(expected, WeightManifest) else
                   expected_mod.resolve(expected, public_key=public_key,
                                        certificate_chain=certificate_chain, algorithm=algorithm))
        exchange = exchange_group(state, group)
        key = _layout_key(state, layout, mapping, exchange, trusted.algorithm)
        verifier = _VERIFIERS.get(key)
    except Exception as exc:  # told to the other ranks below, so that none waits for this one
        failure, exchange = exc, group
    mine = verifier.engine.plan.fingerprint if verifier is not None else bytes(8)
    flag = b"\xff" if failure is not None else b"\x00"
    rows = collectives.gather_rows(torch.frombuffer(bytearray(mine + flag), dtype=torch.uint8),
                                   exchange)
    rows = [bytes(r) for r in rows.numpy()]
    if any(r[8] for r in rows):
        errors = collectives.gather_objects(
            f"{type(failure).__name__}: {failure}" if failure is not None else None, exchange)
        if failure is not None:
            raise failure
        raise FormatError("verify_sharded: " + "; ".join(
            f"rank {r} could not take part: {e}" for r, e in enumerate(errors) if e))
    if len(set(rows)) > 1 or rows[0][:8] == bytes(8):  # not every rank has this plan: plan anew
        verifier = SyncVerifier(state, trusted, exchange, layout=layout, mapping=mapping)
        _VERIFIERS[key] = verifier
        while len(_VERIFIERS) > _CACHED:
            _VERIFIERS.popitem(last=False)
    else:
        _VERIFIERS.move_to_end(key)
    return verifier.check(trusted, tensors=state, raise_on_mismatch=raise_on_mismatch)
