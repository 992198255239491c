"""Weights in motion: check a trainer -> engine weight sync where the tensors are.

* WeightManifest: the digests of the full tensors, with their names, dtypes and shapes
  (JSON: the `predicate.tensors` listing of a signature bundle, plus optional segment digests).
  `.sign()` writes exactly the bundle sign_model would write for those tensors, so one object
  serves a signed release and a sync check.
* ManifestBuilder (sending side): the manifest of tensors laid out over ranks in any layout
  (FSDP2, TP, ...), hashed where they live, no gathering.
* SyncVerifier (receiving side): checks the engine's tensors, in any layout (DTensor Shard(d)
  on any dim, Replicate, 2-D meshes, fused and renamed tensors, explicit layouts), against a
  manifest, without gathering them; every rank reaches the same verdict, and a mismatch names
  the tensor and the ranks whose bytes differ.

Both plan once (sentry.syncplan) and then check with a few op calls and one all-gather; see
docs/DISTRIBUTED.md ("Weight syncs") for the scheme, the layouts and their costs.
"""
import dataclasses
import hashlib
import json
import math
import time

import numpy as np
import torch
import torch.distributed as dist

import sentry_ops

from ..formats import bundle as bundle_format
from . import collectives
from . import syncplan
from ..oms import trusted_digests as expected_mod
from ..errors import FormatError, VerificationError
from ..io.fileio import atomic_write, read_input
from .layout import Concat, Fused, Region, is_dtensor, local_tensor  # noqa: F401  (public)

# A manifest's JSON is read whole; its largest part is the segment digests (up to
# DEFAULT_SEGMENTS x 64 hex characters per tensor), far below this for any real model.
MAX_MANIFEST_BYTES = 1 << 30
DEFAULT_SEGMENTS = 64  # segment digests per tensor a manifest keeps by default (at most)


def _ms(t0):
    return (time.perf_counter() - t0) * 1e3


# ---------------------------------------------------------------------------------------------
# the manifest


@dataclasses.dataclass
class WeightManifest:
    """Full-tensor digests. tensors: {name: (safetensors dtype, shape, 32-byte digest)};
    segments: {name: (level, [32-byte node values])}: the tree's nodes of 2^level leaves, in
    order, which finish to the digest (used only to say which ranks hold bad bytes)."""

    algorithm: str
    tensors: dict
    segments: dict = dataclasses.field(default_factory=dict)
    source: str = "weight manifest"

    def digests(self):
        return {n: d for n, (_, _, d) in self.tensors.items()}

    def expected(self):
        return expected_mod.Expected(self.algorithm, self.digests(),
                                     {n: (dt, tuple(sh)) for n, (dt, sh, _) in self.tensors.items()},
                                     self.source)

    def entries(self):
        """The predicate.tensors entries: {name, dtype, shape, digest (hex)}, sorted by name."""
        return [{"name": n, "dtype": dt, "shape": list(sh), "digest": d.hex()}
                for n, (dt, sh, d) in sorted(self.tensors.items())]

    def to_json(self):
        doc = {"tensors": {"hash_type": self.algorithm, "entries": self.entries()}}
        if self.segments:
            doc["segments"] = {n: {"level": k, "digests": [v.hex() for v in values]}
                               for n, (k, values) in sorted(self.segments.items())}
        return json.dumps(doc, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, data, source="weight manifest"):
        doc = bundle_format.load_json(data, source, "weight manifest")
        if not isinstance(doc, dict) or set(doc) - {"tensors", "segments"} or "tensors" not in doc:
            raise FormatError(f"{source}: a weight manifest is an object with 'tensors' (and "
                              "optionally 'segments')")
        listing = bundle_format.parse_tensor_listing(data, source, "weight manifest")
        tensors = {e["name"]: (e["dtype"], tuple(e["shape"]), bytes.fromhex(e["digest"]))
                   for e in listing["entries"]}
        segments = _parse_segments(doc.get("segments", {}), tensors, listing["hash_type"], source)
        return cls(listing["hash_type"], tensors, segments, source)

    def save(self, path):
        atomic_write(path, self.to_json().encode())

    @classmethod
    def load(cls, path):
        return cls.from_json(read_input(path, "weight manifest", MAX_MANIFEST_BYTES), str(path))

    def sign(self, private_key, signature_path, *, model_name="model", password=None,
             certificate_chain=None):
        """Writes the OMS bundle of these tensors (method `tensors`, as sign_model writes it).
        Segments are not signed: a verifier checks them against the signed digests."""
        from ..oms.signing import sign_tensor_entries

        return sign_tensor_entries(self.entries(), private_key, signature_path,
                                   algorithm=self.algorithm, model_name=model_name,
                                   password=password, certificate_chain=certificate_chain)

    @classmethod
    def from_signature(cls, signature_path, *, public_key=None, certificate_chain=None):
        """The tensors a signature lists, after checking it (VerificationError otherwise)."""
        e = expected_mod.resolve(signature_path, public_key=public_key,
                                 certificate_chain=certificate_chain)
        return cls(e.algorithm, {n: (*e.layouts[n], e.digests[n]) for n in e.digests},
                   source=e.source)


def _parse_segments(doc, tensors, algorithm, source):
    if not isinstance(doc, dict):
        raise FormatError(f"{source}: segments: not an object")
    out = {}
    for name, seg in doc.items():
        where = f"{source}: segments['{name}']"
        if name not in tensors:
            raise FormatError(f"{where}: no such tensor")
        if not isinstance(seg, dict) or set(seg) != {"level", "digests"}:
            raise FormatError(f"{where}: expected {{level, digests}}")
        level, values = seg["level"], seg["digests"]
        if type(level) is not int or not 0 <= level < 63 or not isinstance(values, list):
            raise FormatError(f"{where}: bad level or digests")
        want = _segment_count(tensors[name], algorithm, level)
        if len(values) != want:
            raise FormatError(f"{where}: {len(values)} digests, level {level} has {want}")
        raw = []
        for v in values:
            b = bytes.fromhex(v) if isinstance(v, str) and len(v) == 64 else b""
            if len(b) != 32 or v != v.lower():
                raise FormatError(f"{where}: a digest is not 64 lower-case hex characters")
            raw.append(b)
        out[name] = (level, raw)
    return out


def _leaves(meta, algorithm):
    dtype, shape = meta[0], meta[1]
    from ..formats.safetensors_format import byte_length

    return max(1, -(-byte_length(dtype, list(shape)) // syncplan.LEAF_BYTES[algorithm]))


def _segment_count(meta, algorithm, level):
    return -(-_leaves(meta, algorithm) // (1 << level))


def segment_level(meta, algorithm, budget):
    """The level of at most `budget` segments that splits the tensor into two or more, or
    None (a tensor of one leaf, or no budget)."""
    n = _leaves(meta, algorithm)
    if n < 2 or budget < 2:
        return None
    level = 0
    while -(-n // (1 << level)) > budget:
        level += 1
    return min(level, (n - 1).bit_length() - 1)


# ---------------------------------------------------------------------------------------------
# reports and errors


@dataclasses.dataclass
class SyncReport:
    """What a check found, the same on every rank. digests: {name: hex of the full digest as
    finished from the ranks' parts}; ranks: {name: ranks whose bytes or layout are at fault};
    holders: {name: ranks holding bytes of it}; problems: {name: why}."""

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
    ranks: dict = dataclasses.field(default_factory=dict)
    source: str = ""

    @property
    def ok(self):
        return not (self.changed or self.missing or self.unexpected)

    def describe(self, limit=10):
        parts = [f"'{n}' (ranks {self.ranks.get(n, self.holders.get(n, []))}"
                 + (f": {self.problems[n]}" if n in self.problems else "") + ")"
                 for n in self.changed[:limit]]
        return "; ".join(parts)


class SyncMismatchError(VerificationError):
    """The tensors do not match the manifest; .report has the details, .ranks the ranks at
    fault (all tensors), .tensor_ranks the ranks per tensor."""

    def __init__(self, report, what="the tensors"):
        self.report = report
        self.tensor_ranks = dict(report.ranks)
        detail = report.describe()
        ranks = {r for n in report.changed for r in report.ranks.get(n, [])}
        super().__init__(f"{report.source}: {what} do not match" + (f": {detail}" if detail else ""),
                         changed=report.changed, missing=report.missing,
                         unexpected=report.unexpected, ranks=ranks)


# ---------------------------------------------------------------------------------------------
# the shared engine: a plan of this rank's tensors and its device tables


def state_of(tensors):
    if isinstance(tensors, torch.nn.Module):
        state = tensors.state_dict()
    elif isinstance(tensors, dict):
        state = tensors
    else:
        raise FormatError(f"expected an nn.Module or a state dict, got {type(tensors).__name__}")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise FormatError(f"state dict entry {name!r} is not a named tensor")
    return state


def exchange_group(state, group):
    """The group to exchange over: `group`, else the one 1-D mesh of the DTensors, else the
    default group."""
    if group is not None:
        return group
    meshes = {id(t.device_mesh): t.device_mesh for t in state.values() if is_dtensor(t)}
    if len(meshes) == 1:
        mesh = next(iter(meshes.values()))
        if mesh.ndim == 1:
            return mesh.get_group()
    if len(meshes) > 1 and not (dist.is_initialized() and all(
            m.size() == dist.get_world_size() for m in meshes.values())):
        raise FormatError("DTensors on several device meshes: pass the group to exchange over")
    return None


class Engine:
    """This rank's plan over `group` and the check: hash_runs, one all-gather, finish_runs."""

    def __init__(self, state, group, *, layout, mapping, algorithm, full_shapes, what,
                 segment_budget=0):
        self.group = exchange_group(state, group)
        self.world, self.rank = collectives.world(self.group)
        self.algorithm, self.what = algorithm, what
        self.keys = sorted(state)
        failure = None
        try:
            self.sources, part = syncplan.collect(state, layout, mapping, full_shapes)
        except Exception as exc:  # told to the other ranks, so that none waits for this one
            failure, part = exc, {"error": f"{type(exc).__name__}: {exc}"}
        parts = collectives.gather_objects(part, self.group)
        if failure is not None:
            raise failure
        errors = [f"rank {r} could not take part: {p['error']}" for r, p in enumerate(parts)
                  if "error" in p]
        if errors:
            raise FormatError(f"{what}: " + "; ".join(errors))
        self.parts = parts
        levels = {}
        for p in parts if segment_budget else ():
            for name, meta in zip(p["names"], p["meta"]):
                level = segment_level(meta, algorithm, segment_budget)
                if level is not None:
                    levels[name] = level
        self.plan = syncplan.Plan(parts, self.rank, algorithm, segment_levels=levels)
        self.shapes = [(t.shape, t.dtype) for t in self.sources]
        self.comm = collectives.comm_device(self.group)
        self.device = self.sources[0].device if self.sources else self.comm
        self._upload()

    def _upload(self):
        header, body = self.plan.local[self.rank]
        self.header = list(header)
        self.body = torch.from_numpy(body).to(self.device)
        fheader, fbody, _ = self.plan.finish
        self.fheader = list(fheader)
        self.fbody = fbody.to(self.comm)
        self.trailer = torch.zeros(syncplan.TRAILER - 4, dtype=torch.uint8, device=self.device)

    def sources_of(self, tensors):
        """The local tensors of a state with the planned keys, dtypes and shapes."""
        if tensors is None:
            return self.sources
        state = state_of(tensors)
        if len(state) != len(self.keys):
            raise FormatError(f"{self.what}: {len(state)} tensors, the plan has {len(self.keys)}")
        out = []
        for key, (shape, dtype) in zip(self.keys, self.shapes):
            t = state.get(key)
            local = local_tensor(t) if t is not None else None
            if local is None or local.shape != shape or local.dtype != dtype:
                raise FormatError(f"{self.what}: tensor '{key}' is not laid out as planned "
                                  "(make a new verifier for a new layout)")
            out.append(local)
        return out

    def set_fingerprint(self, raw):
        self.trailer[:8] = torch.frombuffer(bytearray(raw[:8]), dtype=torch.uint8)

    def run(self, sources):
        """(gathered messages, roots [Q, 32], finish status) on the exchange device."""
        M = self.plan.message_bytes
        srcs = [s if s.device == self.device else s.to(self.device) for s in sources]
        with torch.no_grad():
            msg, status = torch.ops.sentry.hash_runs.default(srcs, self.body, self.header, M,
                                                             self.algorithm)
            msg[M - syncplan.TRAILER:M - 4] = self.trailer
            msg[M - 4:] = status.view(torch.uint8)
            if msg.device != self.comm:
                msg = msg.to(self.comm)
            gathered = collectives.gather_flat(msg, self.group)
            roots, fstatus = torch.ops.sentry.finish_runs.default(gathered, self.fbody,
                                                                  self.fheader, self.algorithm)
        return gathered, roots, fstatus

    def trailers(self, gathered):
        """uint8 [world, TRAILER] view: each rank's fingerprint and status."""
        M = self.plan.message_bytes
        return gathered.view(self.world, M)[:, M - syncplan.TRAILER:]

    def check_status(self, trailers):
        """Raises on every rank alike when a rank's hash_runs or the finish refused a plan
        entry, or when the ranks were given different manifests."""
        status = trailers[:, -4:]
        bad = [r for r in range(self.world) if status[r].any()]
        if bad:
            raise FormatError(f"{self.what}: ranks {bad} found plan entries out of bounds")
        prints = {bytes(row[:8]) for row in trailers}
        if len(prints) > 1:
            raise FormatError(f"{self.what}: the ranks were given different manifests")


def fingerprint(expected):
    """8 bytes that differ between manifests (all ranks must check against the same)."""
    h = hashlib.sha256(expected.algorithm.encode())
    for name in sorted(expected.digests):
        h.update(name.encode() + b"\0" + expected.digests[name])
    return h.digest()[:8]


def _tensor_first_trees(plan):
    """{tensor index: its first tree (copy 0)}."""
    firsts = np.flatnonzero(plan.tree_copy == 0)
    return dict(zip(plan.tree_tensor[firsts].tolist(), firsts.tolist()))


# ---------------------------------------------------------------------------------------------
# sending side


class ManifestBuilder:
    """The manifest of tensors laid out over the ranks of `group` (every rank calls build()).

    tensors: a module or state dict of this rank's tensors (DTensors, or plain tensors placed by
    `layout`, see sentry.layout); mapping renames them to manifest names (str) or splits fused
    ones (Fused(names, dim, sizes)). segments: segment digests kept per tensor (at most), for
    receivers to name the ranks holding bad bytes; 0 for none.
    """

    def __init__(self, tensors, group=None, *, layout=None, mapping=None, algorithm="blake3",
                 segments=DEFAULT_SEGMENTS):
        if algorithm not in syncplan.LEAF_BYTES:
            raise FormatError(f"unknown tensor algorithm '{algorithm}'")
        state = state_of(tensors)
        self._tensors = tensors
        self.engine = Engine(state, group, layout=dict(layout or {}), mapping=dict(mapping or {}),
                             algorithm=algorithm, full_shapes={}, what="weight manifest",
                             segment_budget=segments)
        self.algorithm = algorithm
        plan = self.engine.plan
        # Where each tensor's digest and segments come out of the finish (copy 0), and which
        # tensors have several copies to compare.
        self._firsts = _tensor_first_trees(plan)
        copies = np.bincount(plan.tree_tensor, minlength=len(plan.names))
        self._copied = np.flatnonzero(copies > 1).tolist()
        Q, self._segments = len(plan.tree_tensor), {}
        rows = plan.finish[2].numpy()
        for k in np.flatnonzero(plan.tree_copy[rows[:, 0]] == 0) if len(rows) else ():
            name = plan.names[plan.tree_tensor[rows[k, 0]]]
            self._segments.setdefault(name, []).append(Q + int(k))

    def build(self, tensors=None):
        """A WeightManifest of the current values; raises on every rank alike when the ranks'
        parts do not tile a tensor or copies of the same bytes differ."""
        e, plan = self.engine, self.engine.plan
        sources = e.sources_of(tensors if tensors is not None else
                               (self._tensors if isinstance(self._tensors, torch.nn.Module)
                                else None))
        gathered, roots, fstatus = e.run(sources)
        outputs = int(e.fheader[7])
        host = torch.cat([roots.reshape(-1), e.trailers(gathered).reshape(-1),
                          fstatus.view(torch.uint8)]).cpu().numpy()
        e.check_status(host[32 * outputs:-4].reshape(e.world, syncplan.TRAILER))
        if host[-4:].any():
            raise FormatError("weight manifest: the finish found plan entries out of bounds")
        values = host[:32 * outputs].reshape(outputs, 32)
        if plan.problems:
            raise FormatError("weight manifest: " + "; ".join(
                f"'{n}' (ranks {plan.blame.get(n, plan.holders[n])}: {why})"
                for n, why in sorted(plan.problems.items())[:10]))
        disagree = {}
        for t in self._copied:
            q = np.flatnonzero(plan.tree_tensor == t)
            if (values[q] != values[q[0]]).any():
                disagree[plan.names[t]] = syncplan.replica_disagreement(
                    plan, gathered.cpu().numpy(), t)
        if disagree:
            report = SyncReport(e.world, e.rank, self.algorithm, {}, sorted(disagree), [], [],
                                {n: plan.holders[n] for n in disagree},
                                {n: "copies of the same bytes differ" for n in disagree},
                                plan.message_bytes, {}, disagree, "weight manifest")
            raise SyncMismatchError(report, "the sending ranks' copies")
        tensors = {plan.names[t]: (*plan.meta[plan.names[t]], values[q].tobytes())
                   for t, q in self._firsts.items()}
        segments = {}
        for name, rows in self._segments.items():
            blob = values[rows].tobytes()
            segments[name] = (plan.segment_levels[name],
                              [blob[i:i + 32] for i in range(0, len(blob), 32)])
        return WeightManifest(self.algorithm, tensors, segments)


# ---------------------------------------------------------------------------------------------
# receiving side


class SyncVerifier:
    """Checks this rank's tensors, laid out over the ranks of `group`, against a manifest;
    every rank calls check(). Plans once (one exchange of layouts); each check is one hash_runs
    call, one all-gather of a fixed-size message, one finish_runs call and one host copy.

    tensors: a module or state dict (DTensors, or plain tensors placed by `layout`); mapping:
    {engine name: manifest name | Fused(names, dim)}; manifest: a WeightManifest, a signature
    path (with public_key or certificate_chain), {name: digest} (with algorithm) or Expected.
    """

    def __init__(self, tensors, manifest, group=None, *, layout=None, mapping=None,
                 public_key=None, certificate_chain=None, algorithm=None):
        self._tensors = tensors
        self._keys = dict(public_key=public_key, certificate_chain=certificate_chain,
                          algorithm=algorithm)
        try:
            state = state_of(tensors)
            self.expected, self.segments = self._resolve(manifest)
        except Exception as exc:  # noqa: BLE001  the others must not wait for this rank
            _join_failed(exc, group, tensors)
        full_shapes = {n: sh for n, (_, sh) in (self.expected.layouts or {}).items()}
        self.engine = Engine(state, group, layout=dict(layout or {}), mapping=dict(mapping or {}),
                             algorithm=self.expected.algorithm, full_shapes=full_shapes,
                             what="sync check")
        self._manifest_id = None
        self._use(manifest, self.expected, self.segments)

    def _resolve(self, manifest):
        if isinstance(manifest, WeightManifest):
            return manifest.expected(), dict(manifest.segments)
        return expected_mod.resolve(manifest, **self._keys), {}

    def _use(self, manifest, expected=None, segments=None):
        if manifest is self._manifest_id and expected is None:
            return
        if expected is None:
            expected, segments = self._resolve(manifest)
        print_ = fingerprint(expected)
        if print_ == getattr(self, "_print", None) and expected.layouts == self.expected.layouts:
            self.expected, self.segments, self._manifest_id = expected, segments or {}, manifest
            return  # the same digests: the device tables stand
        self._print = print_
        plan = self.engine.plan
        if expected.algorithm != plan.algorithm:
            raise FormatError(f"{expected.source}: digests are {expected.algorithm}, the plan "
                              f"{plan.algorithm}: make a new verifier")
        self.expected, self.segments, self._manifest_id = expected, segments or {}, manifest
        Q = len(plan.tree_tensor)
        table = np.zeros((len(plan.names) + 1, 32), dtype=np.uint8)
        known = np.zeros(len(plan.names) + 1, dtype=bool)
        for i, name in enumerate(plan.names):
            if name in expected.digests:
                table[i] = np.frombuffer(expected.digests[name], dtype=np.uint8)
                known[i] = True
        comm = self.engine.comm
        self.want = torch.from_numpy(table[plan.tree_tensor] if Q else table[:0]).to(comm)
        self.known = torch.from_numpy(known[plan.tree_tensor] if Q else known[:0]).to(comm)
        self.meta_problems = {}
        if expected.layouts is not None:
            for name in plan.names:
                if name in expected.layouts and name not in plan.problems:
                    want = (expected.layouts[name][0], tuple(expected.layouts[name][1]))
                    if want != plan.meta[name]:
                        self.meta_problems[name] = (
                            f"signed as {want[0]} {list(want[1])}, laid out as "
                            f"{plan.meta[name][0]} {list(plan.meta[name][1])}")
        self.engine.set_fingerprint(print_)

    def check(self, manifest=None, tensors=None, raise_on_mismatch=True):
        """A SyncReport (the same on every rank); raises SyncMismatchError naming the tensors
        and the ranks at fault unless raise_on_mismatch=False. manifest: a new manifest for
        this sync (same names, dtypes and shapes); tensors: the state to check, when its
        tensors were replaced rather than updated in place."""
        timings = {}
        t0 = time.perf_counter()
        if manifest is not None:
            self._use(manifest)
        e, plan = self.engine, self.engine.plan
        if tensors is None and isinstance(self._tensors, torch.nn.Module):
            tensors = self._tensors
        sources = e.sources_of(tensors)
        gathered, roots, fstatus = e.run(sources)
        Q = len(plan.tree_tensor)
        bad = ((roots[:Q] != self.want).any(dim=1) & self.known).to(torch.uint8)
        host = torch.cat([roots[:Q].reshape(-1), bad, e.trailers(gathered).reshape(-1),
                          fstatus.view(torch.uint8)]).cpu().numpy()
        timings["hash, exchange, finish"] = _ms(t0)
        t0 = time.perf_counter()
        e.check_status(host[33 * Q:-4].reshape(e.world, syncplan.TRAILER))
        if host[-4:].any():
            raise FormatError("sync check: the finish found plan entries out of bounds")
        values, bad_trees = host[:32 * Q].reshape(Q, 32), np.flatnonzero(host[32 * Q:33 * Q])
        report = self._report(values, bad_trees, gathered, timings)
        timings["compare"] = _ms(t0)
        if raise_on_mismatch and not report.ok:
            raise SyncMismatchError(report)
        return report

    def _report(self, values, bad_trees, gathered, timings):
        e, plan, expected = self.engine, self.engine.plan, self.expected
        names = set(plan.names)
        digests = {plan.names[t]: values[q].tobytes().hex()
                   for t, q in _tensor_first_trees(plan).items()}
        problems = {**{n: p for n, p in plan.problems.items() if n in expected.digests},
                    **self.meta_problems}
        ranks = {n: plan.blame.get(n, plan.holders[n]) for n in problems}
        bad = sorted({int(plan.tree_tensor[q]) for q in bad_trees} -
                     {plan.names.index(n) for n in problems})
        if bad:
            host = gathered.cpu().numpy()
            unsettled = []
            for t in bad:
                name = plan.names[t]
                ranks[name], problems[name], settled = syncplan.attribute(
                    plan, host, expected.digests[name], t)
                if not settled:
                    unsettled.append(t)
            self._narrow_by_segments(unsettled, ranks, problems)
        return SyncReport(e.world, e.rank, plan.algorithm, digests,
                          sorted(n for n in problems if n in expected.digests),
                          sorted(set(expected.digests) - names),
                          sorted(names - set(expected.digests)),
                          dict(plan.holders), problems, plan.message_bytes, timings, ranks,
                          expected.source)

    def _narrow_by_segments(self, bad, ranks, problems):
        """For tensors whose copies agree (so no copy says who is wrong), a second round with
        the manifest's segment digests names the ranks holding the bad segments."""
        plan = self.engine.plan
        todo = {}
        for t in bad:
            name = plan.names[t]
            if name in self.segments and _authentic(self.segments[name], self.expected.digests[name],
                               plan.totals[t], plan.algorithm):
                todo[name] = self.segments[name][0]
        if not todo:
            return
        e = self.engine
        keep = set(todo)
        parts = [{**p, "runs": np.asarray(p["runs"]).reshape(-1, 5)[
            np.isin(np.asarray(p["runs"]).reshape(-1, 5)[:, 2],
                    [i for i, n in enumerate(p["names"]) if n in keep])]} for p in e.parts]
        sub = syncplan.Plan(parts, e.rank, plan.algorithm, segment_levels=todo)
        narrowed = syncplan.run_segments(sub, e, self.segments)
        for name, (found, where) in narrowed.items():
            if found:
                ranks[name] = found
                problems[name] = f"bytes {where} differ"


def _authentic(segment, digest, total, algorithm):
    """Whether segment digests finish to the (trusted) digest: only then are they used."""
    level, values = segment
    if len(values) < 2:
        return False
    firsts = [k << level for k in range(len(values))]
    rows = torch.frombuffer(bytearray(b"".join(values)), dtype=torch.uint8).view(-1, 32)
    try:
        root = sentry_ops.finish_subtrees(rows, firsts, int(total), algorithm)
    except ValueError:
        return False
    return bytes(root.tolist()) == digest


def _join_failed(failure, group, tensors):
    """Takes part in the layout exchange with this rank's error (so that the others name it
    rather than wait), then raises it."""
    if group is None:
        try:
            group = exchange_group(state_of(tensors), None)
        except FormatError:
            pass
    collectives.gather_objects({"error": f"{type(failure).__name__}: {failure}"}, group)
    raise failure
