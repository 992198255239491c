"""Signed dataset manifests and verification of samples as they stream (docs/FORMAT.md §8).

A manifest binds, for every sample: its source (the party that vouches for it), its global
index, its label and the digest of its raw bytes before augmentation, computed with
``sentry_ops.hash_rows`` on whatever device the samples are on; and, per source, the dtype and
shape of its samples (``SampleLayout``), so the same bytes cannot be read as other values.

- ``build_manifest(samples, labels, sources)`` hashes the samples and returns a ``Manifest``.
- ``sign_manifest(manifest, private_keys, out_dir)`` writes one DSSE bundle per source (the
  bundle format of models, with the predicate ``https://sentry.dev/dataset-manifest/v2``).
- ``load_manifest(bundle_paths, public_keys)`` checks every signature with its source's key (all
  in one batch, see sentry/ecdsa.py), parses strictly and merges.
- ``DatasetChecker(manifest, device)`` checks batches on the device: hash, gather the signed
  digests and labels by sample index, compare, and keep a failure state on the device; the host
  reads it only every ``check_every`` batches and at the end of the epoch (``finish``).

Everything is keyed by the sample index, so nothing depends on shuffling or batch composition.
"""
import bisect
import dataclasses
import hashlib
import json
import os
import re
import struct
import typing

import torch

from sentry_ops import ALGORITHMS, check_digests, hash_rows

from ..formats import bundle as bundle_format
from ..formats.bundle import _check_hex, _check_keys, _check_list, _check_object, _check_text, _is_int
from ..signatures.keys import PublicKey
from ..signatures.ecdsa import verify_messages
from ..errors import FormatError, VerificationError

PREDICATE_TYPE = "https://sentry.dev/dataset-manifest/v2"
#: v1 signed no dtype or shape: its samples' bytes could be read as any type. Refused by name.
PREDICATE_TYPE_V1 = "https://sentry.dev/dataset-manifest/v1"
#: Domain-separation prefix of the record digests (dataset digest and per-source subject).
DIGEST_DOMAIN = b"sentry-dataset-manifest-v2\x00"
#: Suffix of the bundle files written by sign_manifest.
BUNDLE_SUFFIX = ".manifest.sig"

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_PREDICATE_KEYS = ("algorithm", "dtype", "samples", "shape", "source")
_SAMPLE_KEYS = ("digest", "index", "label")

# Failure kinds, as bits of the device-side code (csrc/ops/check_common.h has the same).
BYTES, LABEL, UNKNOWN = 1, 2, 4


def _canonical_dtype_names():
    # torch's own names (str(dtype) without "torch."), not aliases such as "float" or "long":
    # one name per dtype, so a signed name means one thing.
    return {str(v).removeprefix("torch."): v for v in vars(torch).values()
            if isinstance(v, torch.dtype)}


_DTYPE_NAMES = _canonical_dtype_names()


class SampleLayout(typing.NamedTuple):
    """The dtype (torch's name: "uint8", "float32", ...) and shape of one sample: what its bytes
    mean. Signed per source; a store or batch of another layout is refused before use."""

    dtype: str
    shape: tuple

    @classmethod
    def of_batch(cls, batch):
        """The layout of the samples of a batch tensor [B, ...]."""
        return cls(str(batch.dtype).removeprefix("torch."), tuple(batch.shape[1:]))

    def __str__(self):
        return f"{self.dtype} {list(self.shape)}"

    def encode(self):
        """``u32(len(dtype)) ‖ dtype ‖ u32(ndim) ‖ u64(dim)...`` (big-endian), for digests."""
        name = self.dtype.encode("ascii")
        return (struct.pack(">I", len(name)) + name + struct.pack(">I", len(self.shape))
                + b"".join(struct.pack(">Q", d) for d in self.shape))


class Record(typing.NamedTuple):
    """One sample of a manifest. ``digest`` is the raw 32-byte digest."""

    index: int
    source: str
    label: int
    digest: bytes


@dataclasses.dataclass
class SourceManifest:
    """The samples one source vouches for, sorted by index, and their layout."""

    source: str
    indices: list
    labels: list
    digests: list  # raw 32-byte digests
    layout: SampleLayout

    def __len__(self):
        return len(self.indices)

    def records(self):
        return [Record(i, self.source, lab, d)
                for i, lab, d in zip(self.indices, self.labels, self.digests)]


def records_digest(algorithm, layout, records):
    """Hex SHA-256 over records, in increasing index order (docs/FORMAT.md §8):

    ``DIGEST_DOMAIN ‖ u32(len(algorithm)) ‖ algorithm ‖ layout ‖ u64(count) ‖ record...`` with
    the layout as SampleLayout.encode and each record
    ``u64(index) ‖ i64(label) ‖ u32(len(source)) ‖ source ‖ digest`` (big-endian integers,
    strings UTF-8). ``records`` are sorted here, so the caller's order does not matter."""
    h = hashlib.sha256()
    alg = algorithm.encode("utf-8")
    records = sorted(records, key=lambda r: r.index)
    h.update(DIGEST_DOMAIN + struct.pack(">I", len(alg)) + alg + layout.encode()
             + struct.pack(">Q", len(records)))
    encoded = {}
    pack = struct.Struct(">Qq").pack
    for r in records:
        src = encoded.get(r.source)
        if src is None:
            raw = r.source.encode("utf-8")
            src = encoded[r.source] = struct.pack(">I", len(raw)) + raw
        h.update(pack(r.index, r.label) + src + r.digest)
    return h.hexdigest()


class Manifest:
    """A dataset manifest: ``sources`` maps each source name (sorted) to its SourceManifest.

    Indices are unique across the whole manifest; ``algorithm`` is the sample digest algorithm
    (``blake3`` or ``sha256-tree``); every source signs the same sample ``layout`` (a dataset's
    samples are batched together, so they share one dtype and shape)."""

    def __init__(self, algorithm, sources, layout):
        if algorithm not in ALGORITHMS:
            raise FormatError(f"unknown sample digest algorithm {algorithm!r}; use one of "
                              f"{list(ALGORITHMS)}")
        self.algorithm = algorithm
        self.layout = layout
        self.sources = {name: sources[name] for name in sorted(sources)}
        for name, part in self.sources.items():
            if part.layout != layout:
                raise FormatError(f"source {name!r} signs {part.layout} samples, the dataset "
                                  f"{layout}")
        owner = {}
        for name, part in self.sources.items():
            for i in part.indices:
                other = owner.setdefault(i, name)
                if other != name:
                    raise FormatError(f"sample index {i} is listed by both source {other!r} "
                                      f"and source {name!r}")
        self._owner = owner
        self._max_index = max(owner) if owner else -1

    @classmethod
    def from_records(cls, algorithm, records, layout):
        """From Records in any order (all of samples of ``layout``); duplicate indices raise
        FormatError naming them."""
        by_source, seen = {}, {}
        for r in records:
            if r.index in seen:
                raise FormatError(f"sample index {r.index} is listed twice (sources "
                                  f"{seen[r.index]!r} and {r.source!r})")
            seen[r.index] = r.source
            by_source.setdefault(r.source, []).append(r)
        parts = {}
        for name, recs in by_source.items():
            recs.sort(key=lambda r: r.index)
            parts[name] = SourceManifest(name, [r.index for r in recs], [r.label for r in recs],
                                         [r.digest for r in recs], layout)
        return cls(algorithm, parts, layout)

    def __len__(self):
        return len(self._owner)

    def __repr__(self):
        return (f"<sentry.dataset.Manifest {len(self)} samples of {self.layout}, "
                f"{len(self.sources)} sources, {self.algorithm}>")

    @property
    def max_index(self):
        """The largest sample index (-1 for an empty manifest)."""
        return self._max_index

    def records(self):
        """Every Record, in increasing index order."""
        out = [r for part in self.sources.values() for r in part.records()]
        out.sort(key=lambda r: r.index)
        return out

    def source_of(self, index):
        """The source that vouches for sample ``index``, or None."""
        return self._owner.get(index)

    def record(self, index):
        """The Record of sample ``index``, or None."""
        name = self._owner.get(index)
        if name is None:
            return None
        part = self.sources[name]
        k = bisect.bisect_left(part.indices, index)
        return Record(index, name, part.labels[k], part.digests[k])

    def source_digest(self, source):
        """Hex SHA-256 over one source's records: the subject digest of its bundle."""
        return records_digest(self.algorithm, self.layout, self.sources[source].records())

    def dataset_digest(self):
        """Hex SHA-256 over all records sorted by index (docs/FORMAT.md §8). It covers every
        sample's index, source, label and digest, the algorithm and the samples' layout; it does
        not depend on the order in which samples were hashed, listed or shuffled, because the
        records are keyed by their (unique) index and sorted before they are hashed."""
        return records_digest(self.algorithm, self.layout, self.records())

    def tensors(self):
        """CPU tensors (indices int64 [N], labels int64 [N], digests uint8 [N, 32]), by index."""
        recs = self.records()
        indices = torch.tensor([r.index for r in recs], dtype=torch.int64)
        labels = torch.tensor([r.label for r in recs], dtype=torch.int64)
        raw = bytearray(b"".join(r.digest for r in recs))
        digests = (torch.frombuffer(raw, dtype=torch.uint8).view(-1, 32) if raw
                   else torch.empty(0, 32, dtype=torch.uint8))
        return indices, labels, digests


# ---------------------------------------------------------------------------------------------
# building


def _int_list(values, what, n):
    t = values if isinstance(values, torch.Tensor) else torch.as_tensor(values)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise FormatError(f"{what} must be integers, got dtype {t.dtype}")
    if t.dim() != 1 or t.shape[0] != n:
        raise FormatError(f"{what} must have shape [{n}] (one per sample), got {list(t.shape)}")
    return t.detach().cpu().to(torch.int64).tolist()


def _batches(samples, batch_size):
    if isinstance(samples, torch.Tensor):
        if samples.dim() == 0:
            raise FormatError("samples must be a tensor [N, ...] (one row per sample)")
        for start in range(0, samples.shape[0], batch_size):
            yield samples[start:start + batch_size]
        return
    for k, batch in enumerate(samples):
        if not isinstance(batch, torch.Tensor) or batch.dim() == 0:
            raise FormatError(f"samples batch {k} must be a tensor [B, ...], got "
                              f"{type(batch).__name__}")
        for start in range(0, batch.shape[0], batch_size):
            yield batch[start:start + batch_size]


def hash_samples(samples, *, algorithm="blake3", batch_size=4096, layouts=None):
    """uint8 [N, 32] on the CPU: the digest of each sample's bytes (each row of a tensor [N, ...]
    or of each batch of an iterable), hashed with hash_rows on the samples' device; one copy to
    the host at the end. ``layouts``, a set, collects the SampleLayout of every batch."""
    if algorithm not in ALGORITHMS:
        raise FormatError(f"unknown sample digest algorithm {algorithm!r}; use one of "
                          f"{list(ALGORITHMS)}")
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    by_device = []
    for batch in _batches(samples, batch_size):
        if layouts is not None:
            layouts.add(SampleLayout.of_batch(batch))
        by_device.append(hash_rows(batch, algorithm))
    if not by_device:
        return torch.empty(0, 32, dtype=torch.uint8)
    return torch.cat([d.cpu() for d in by_device])


def build_manifest(samples, labels, sources, *, indices=None, algorithm="blake3",
                   batch_size=4096):
    """Hashes the samples (tensor [N, ...] of any dtype on any device, or an iterable of such
    batches, in sample order) and returns their Manifest.

    labels: integer tensor or sequence [N]; sources: N non-empty strings; indices: the global
    index of each sample (default 0..N-1), unique and non-negative. Raw bytes are the samples as
    given: hash them before augmentation. Every batch must have the same dtype and sample
    shape: the manifest signs that layout.
    """
    layouts = set()
    digests = hash_samples(samples, algorithm=algorithm, batch_size=batch_size, layouts=layouts)
    if len(layouts) != 1:
        raise FormatError("samples: no samples given" if not layouts else
                          f"samples: batches of several layouts {sorted(map(str, layouts))}; a "
                          "manifest signs one dtype and sample shape")
    n = digests.shape[0]
    labels = _int_list(labels, "labels", n)
    indices = list(range(n)) if indices is None else _int_list(indices, "indices", n)
    sources = list(sources)
    if len(sources) != n:
        raise FormatError(f"sources must list one source per sample ({n}), got {len(sources)}")
    for k, s in enumerate(sources):
        _check_text(s, None, f"sources[{k}]")
        if not s:
            raise FormatError(f"sources[{k}]: empty source name")
    for k, i in enumerate(indices):
        if i < 0:
            raise FormatError(f"indices[{k}]: sample indices must be non-negative, got {i}")
    raw = digests.contiguous().numpy().tobytes()
    records = [Record(i, s, lab, raw[32 * k:32 * k + 32])
               for k, (i, s, lab) in enumerate(zip(indices, sources, labels))]
    return Manifest.from_records(algorithm, records, layouts.pop())


# ---------------------------------------------------------------------------------------------
# the statement


def make_statement(manifest, source):
    """The DSSE payload for one source: compact JSON of an in-toto Statement v1 (§8)."""
    part = manifest.sources[source]
    statement = {
        "_type": bundle_format.STATEMENT_TYPE,
        "subject": [{"name": source, "digest": {"sha256": manifest.source_digest(source)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "algorithm": manifest.algorithm,
            "dtype": part.layout.dtype,
            "samples": [{"digest": d.hex(), "index": i, "label": lab}
                        for i, lab, d in zip(part.indices, part.labels, part.digests)],
            "shape": list(part.layout.shape),
            "source": source,
        },
    }
    return json.dumps(statement, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _parse_layout(predicate, file):
    fail = bundle_format._fail
    dtype = _check_text(predicate["dtype"], file, "predicate.dtype")
    if dtype not in _DTYPE_NAMES:
        fail(file, "predicate.dtype", f"unknown dtype {dtype!r} (a torch dtype name such as "
                                      "'uint8' or 'float32')")
    shape = _check_list(predicate["shape"], file, "predicate.shape")
    for k, d in enumerate(shape):
        if not _is_int(d) or not 0 <= d <= _INT64_MAX:
            fail(file, f"predicate.shape[{k}]", f"must be an integer in [0, 2^63), got {d!r}")
    return SampleLayout(dtype, tuple(shape))


def parse_statement(payload, file=None):
    """Validates a dataset-manifest statement; returns (source, algorithm, layout, [Record]).

    Every problem raises FormatError naming ``file`` and the field."""
    fail = bundle_format._fail
    claimed = bundle_format.load_json(payload, file, "statement")
    if isinstance(claimed, dict) and claimed.get("predicateType") == PREDICATE_TYPE_V1:
        fail(file, "predicateType", f"{PREDICATE_TYPE_V1} manifests sign no sample dtype or "
                                    "shape and are refused; sign the dataset again")
    doc, name, subject_hex = bundle_format.parse_statement_envelope(
        payload, file, PREDICATE_TYPE, "a dataset manifest")

    predicate = _check_object(doc["predicate"], file, "predicate")
    _check_keys(predicate, set(_PREDICATE_KEYS), _PREDICATE_KEYS, file, "predicate")
    algorithm = _check_text(predicate["algorithm"], file, "predicate.algorithm")
    if algorithm not in ALGORITHMS:
        fail(file, "predicate.algorithm", f"unknown algorithm {algorithm!r}; expected one of "
                                          f"{list(ALGORITHMS)}")
    layout = _parse_layout(predicate, file)
    source = _check_text(predicate["source"], file, "predicate.source")
    if not source:
        fail(file, "predicate.source", "empty source name")
    if source != name:
        fail(file, "predicate.source", f"{source!r} differs from subject[0].name {name!r}")
    samples = _check_list(predicate["samples"], file, "predicate.samples")
    records, previous = [], -1
    allowed = set(_SAMPLE_KEYS)
    for k, s in enumerate(samples):
        if type(s) is not dict or s.keys() != allowed:
            _check_object(s, file, ("predicate.samples", k, ""))
            _check_keys(s, allowed, _SAMPLE_KEYS, file, ("predicate.samples", k, ""))
        index, label = s["index"], s["label"]
        if not _is_int(index) or not 0 <= index <= _INT64_MAX:
            fail(file, ("predicate.samples", k, ".index"),
                 f"must be an integer in [0, 2^63), got {index!r}")
        if index <= previous:
            fail(file, ("predicate.samples", k, ".index"),
                 f"duplicate sample index {index}" if index == previous else
                 f"sample {index} after {previous}: samples must be sorted by index")
        previous = index
        if not _is_int(label) or not _INT64_MIN <= label <= _INT64_MAX:
            fail(file, ("predicate.samples", k, ".label"),
                 f"must be a 64-bit signed integer, got {label!r}")
        hexd = _check_hex(s["digest"], file, ("predicate.samples", k, ".digest"))
        records.append(Record(index, source, label, bytes.fromhex(hexd)))
    if records_digest(algorithm, layout, records) != subject_hex:
        fail(file, "subject[0].digest.sha256", "subject digest does not match the samples")
    return source, algorithm, layout, records


# ---------------------------------------------------------------------------------------------
# signing and loading


def _bundle_name(source, used):
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", source)[:64]
    if safe.startswith("."):
        safe = "_" + safe[1:]
    if safe != source or safe.casefold() in used:
        safe = f"{safe}-{hashlib.sha256(source.encode('utf-8')).hexdigest()[:12]}"
    used.add(safe.casefold())
    return safe + BUNDLE_SUFFIX


def sign_manifest(manifest, private_keys, out_dir, *, password=None):
    """Writes one bundle per source into ``out_dir`` (created if needed), each signed with that
    source's key (``private_keys[source]``: a PEM path or PrivateKey). Returns the paths, in the
    order of the sorted source names. A source without a key raises FormatError."""
    from ..oms.signing import _sign_statement

    missing = [s for s in manifest.sources if s not in private_keys]
    if missing:
        raise FormatError(f"no private key for source(s) {missing}")
    os.makedirs(out_dir, exist_ok=True)
    paths, used = [], set()
    for source in manifest.sources:
        path = os.path.join(os.fspath(out_dir), _bundle_name(source, used))
        _sign_statement(make_statement(manifest, source), private_keys[source], password, path)
        paths.append(path)
    return paths


def _claimed_source(payload, file):
    """The subject name the (not yet verified) payload claims, only to pick the key."""
    doc = bundle_format.load_json(payload, file, "statement")
    try:
        name = doc["subject"][0]["name"]
    except (TypeError, KeyError, IndexError):
        bundle_format._fail(file, "subject[0].name", "missing")
    return _check_text(name, file, "subject[0].name")


def load_manifest(bundle_paths, public_keys, *, require_all=True):
    """Verifies and merges per-source manifest bundles into one Manifest.

    bundle_paths: bundle files, or a directory (its ``*.manifest.sig`` files). public_keys:
    {source: PEM path or PublicKey}. Each bundle must be signed with the key of the source it
    names, else VerificationError naming the file and the source; malformed content raises
    FormatError naming the file and field (duplicate indices across sources included). With
    ``require_all``, every source in public_keys must have a bundle.
    """
    if isinstance(bundle_paths, (str, os.PathLike)):
        if not os.path.isdir(bundle_paths):
            bundle_paths = [bundle_paths]
        else:
            d = os.fspath(bundle_paths)
            bundle_paths = [os.path.join(d, f) for f in sorted(os.listdir(d))
                            if f.endswith(BUNDLE_SUFFIX)]
    keys = {s: PublicKey.load(k) for s, k in public_keys.items()}
    by_hint = {}
    for s, k in keys.items():
        by_hint.setdefault(k.hint(), []).append(s)
    # Read every bundle first, then check all signatures in one batch (ecdsa.verify_messages),
    # then go through the bundles in order. Errors come out exactly as one bundle at a time would
    # raise them: a bundle that cannot be read or names an unknown source stops the reading, and
    # its error waits until the bundles before it have been checked.
    opened, deferred = [], None
    for path in bundle_paths:
        path = os.fspath(path)
        try:
            signed = bundle_format.read_bundle(path)
            claimed = _claimed_source(signed.payload, path)
            if claimed not in keys:
                raise VerificationError(f"{path}: manifest of unknown source {claimed!r} (no "
                                        f"public key for it; known sources: {sorted(keys)})")
        except Exception as exc:  # noqa: BLE001  re-raised below, in its turn
            deferred = exc
            break
        opened.append((path, signed, claimed))
    verified = verify_messages([keys[claimed] for _, _, claimed in opened],
                               [bundle_format.pae(signed.payload_type, signed.payload)
                                for _, signed, _ in opened],
                               [signed.signature for _, signed, _ in opened])
    algorithm, layout, files, records = None, None, {}, []
    for (path, signed, claimed), ok in zip(opened, verified):
        key = keys[claimed]
        if not ok:
            other = ""
            hint = signed.public_key_hint
            if hint and hint != key.hint():
                owners = by_hint.get(hint)
                other = (f" (it names the key of source(s) {owners})" if owners
                         else f" (it names key {hint})")
            raise VerificationError(f"{path}: the signature of source {claimed!r}'s manifest "
                                    f"does not verify with that source's key{other}")
        source, alg, lay, recs = parse_statement(signed.payload, path)
        if source in files:
            raise FormatError(f"{path}: source {source!r} has a second manifest (the first is "
                              f"{files[source]})")
        if algorithm is None:
            algorithm, layout, first = alg, lay, path
        elif alg != algorithm:
            raise FormatError(f"{path}: predicate.algorithm {alg!r} differs from {algorithm!r} "
                              f"in {first}")
        elif lay != layout:
            raise FormatError(f"{path}: source {source!r} signs {lay} samples, {first} "
                              f"{layout}; a dataset has one sample dtype and shape")
        files[source] = path
        records.extend(recs)
    if deferred is not None:
        raise deferred
    missing = sorted(set(keys) - set(files)) if require_all else []
    if missing:
        raise VerificationError(f"no manifest bundle for source(s) {missing}", missing=missing)
    if algorithm is None:
        raise FormatError("no manifest bundles given")
    owner = {}
    for r in records:
        other = owner.setdefault(r.index, r.source)
        if other != r.source:
            raise FormatError(f"sample index {r.index} is listed by both source {other!r} "
                              f"({files[other]}) and source {r.source!r} ({files[r.source]})")
    return Manifest.from_records(algorithm, records, layout)


# ---------------------------------------------------------------------------------------------
# verification on the device


class DatasetVerificationError(VerificationError):
    """A sample failed its check. ``index``: the first bad sample; ``source``: its source (None
    for an unknown index); ``kinds``: what differed ("bytes", "label", "unknown index",
    "missing", "source", or "layout": the samples' dtype or shape is not the signed one);
    ``count``: how many bad samples were seen."""

    def __init__(self, message, *, index=None, source=None, kinds=(), count=0, **names):
        super().__init__(message, **names)
        self.index, self.source, self.kinds, self.count = index, source, list(kinds), count


def layout_error(what, manifest, source=None):
    """The DatasetVerificationError for samples read as another dtype or shape than signed:
    hash_rows sees only bytes, so this host-side check is what binds their meaning."""
    names = [source] if source is not None else list(manifest.sources)
    shown = ", ".join(repr(s) for s in names[:4]) + (", ..." if len(names) > 4 else "")
    plural = "s" if len(names) > 1 else ""
    return DatasetVerificationError(
        f"{what}, but source{plural} {shown} signed {manifest.layout} samples (the same bytes "
        "read as another dtype or shape are other values)", source=source, kinds=["layout"])


def _kinds(code):
    return [name for bit, name in ((BYTES, "bytes"), (LABEL, "label"),
                                   (UNKNOWN, "unknown index")) if code & bit]


def _device(device):
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


class DatasetChecker:
    """Checks batches against a manifest on ``device`` with no host synchronisation per batch.

    The signed digests, labels and a "known" mask live on the device in dense tables indexed by
    sample index (one extra last row, never known, is where out-of-range indices are sent). The
    failure state (a flag, the first bad index, what was wrong, the batch, a count) is updated
    in place by the ``sentry.check_digests`` op after ``hash_rows``: two launches a batch, no
    host sync. The host reads it in ``raise_if_failed()`` and ``finish()``, and every
    ``check_every`` batches (0: never automatically): on the CPU right then; on CUDA without
    stalling the device (see ``check``), so a failure is raised within ``2 * check_every``
    batches of it, and in ``finish()`` at the latest. With ``require_all``, ``finish()`` also
    requires every sample of the manifest to have been checked since the last finish.
    """

    #: Dense tables larger than this many rows are refused (sparse indices).
    MAX_ROWS = 1 << 31

    def __init__(self, manifest, device="cpu", *, check_every=16, require_all=True):
        if not _is_int(check_every) or check_every < 0:
            raise ValueError(f"check_every must be a non-negative integer, got {check_every!r}")
        self.manifest = manifest
        self.algorithm = manifest.algorithm
        self.device = _device(device)
        self.check_every = check_every
        self.require_all = require_all
        rows = manifest.max_index + 1
        if rows + 1 > self.MAX_ROWS:
            raise FormatError(f"sample indices up to {manifest.max_index} are too sparse for the "
                              "checker's dense tables")
        self._rows = rows  # the sentinel row
        indices, labels, digests = manifest.tensors()
        expected = torch.zeros(rows + 1, 32, dtype=torch.uint8)
        expected[indices] = digests
        want_labels = torch.zeros(rows + 1, dtype=torch.int64)
        want_labels[indices] = labels
        known = torch.zeros(rows + 1, dtype=torch.bool)
        known[indices] = True
        dev = self.device
        self._expected = expected.to(dev)
        self._labels = want_labels.to(dev)
        self._known = known.to(dev)
        self._seen = torch.zeros(rows + 1, dtype=torch.bool, device=dev)
        # Device-side failure state, updated in place by sentry.check_digests:
        # [failed, first bad index, its code, its batch, bad count, batches checked].
        self._state = torch.tensor([0, -1, 0, -1, 0, 0], dtype=torch.int64, device=dev)
        self.batches = 0  # host counter, for check_every
        if dev.type == "cuda":  # check points' asynchronous copies of the state (see check)
            self._snapshot = torch.zeros(5, dtype=torch.int64, pin_memory=True)
            self._snapshot_ready = torch.cuda.Event()
        self._snapshot_pending = False

    def check(self, batch, labels, indices):
        """Checks one batch (on the checker's device): batch [B, ...] of raw samples, labels [B]
        integers, indices [B] integer sample indices. Asynchronous; raises here only at the
        check points (every ``check_every`` batches; on CUDA up to one more period later)."""
        dev = self.device
        if not isinstance(batch, torch.Tensor) or batch.dim() == 0:
            raise ValueError("batch must be a tensor [B, ...]")
        if batch.device != dev:
            raise ValueError(f"batch is on {batch.device}, the checker on {dev}")
        layout = SampleLayout.of_batch(batch)  # host metadata: no sync
        if layout != self.manifest.layout:
            raise layout_error(f"a batch of {layout} samples", self.manifest)
        b = batch.shape[0]
        for name, t in (("labels", labels), ("indices", indices)):
            if (not isinstance(t, torch.Tensor) or t.dtype == torch.bool or t.is_floating_point()
                    or t.is_complex()):
                raise ValueError(f"{name} must be an integer tensor")
            if tuple(t.shape) != (b,):
                raise ValueError(f"{name} must have shape [{b}], got {list(t.shape)}")
        # Two launches on the device (hash, then check), whatever the batch: no host sync.
        check_digests(hash_rows(batch, self.algorithm),
                      labels.to(dev, torch.int64, non_blocking=True),
                      indices.to(dev, torch.int64, non_blocking=True),
                      self._expected, self._labels, self._known, self._seen, self._state)
        self.batches += 1
        if not self.check_every:
            return
        at_check_point = self.batches % self.check_every == 0
        if dev.type != "cuda":
            if at_check_point:
                self.raise_if_failed()
            return
        # On CUDA a blocking read would drain the device's queue at every check point (a bubble
        # of one batch's host work each time). Instead each check point copies the state to
        # pinned memory behind the batch's work; the host raises once the copy has landed
        # (polled per batch) or, at the latest, waits for it at the next check point.
        self._poll_snapshot(wait=at_check_point)
        if at_check_point:
            self._snapshot.copy_(self._state[:5], non_blocking=True)
            self._snapshot_ready.record()
            self._snapshot_pending = True

    def _poll_snapshot(self, wait):
        if not self._snapshot_pending or not (wait or self._snapshot_ready.query()):
            return
        self._snapshot_ready.synchronize()
        self._snapshot_pending = False
        self._raise(self._snapshot.tolist())

    def _read_state(self, with_missing=False):
        """The one host synchronisation: reads the failure state (and, for finish, the first
        sample never checked and how many there are)."""
        parts = [self._state[:5]]
        if with_missing:
            missing = self._known & ~self._seen
            ids = torch.arange(self._rows + 1, device=self.device)
            parts.append(torch.stack([torch.where(missing, ids, _INT64_MAX).amin(),
                                      missing.sum()]))
        return torch.cat(parts).tolist()

    def _raise(self, state):
        failed, index, code, batch_no, count = state[:5]
        if failed:
            source = self.manifest.source_of(index)
            kinds = _kinds(code)
            what = " and ".join("its " + k if k in ("bytes", "label") else k for k in kinds)
            if code & UNKNOWN:
                where = "is not in the manifest (unknown index)"
                names = {"unexpected": [str(index)]}
            else:
                verb = "differs" if kinds == ["label"] else "differ"  # "its bytes differ"
                where = f"from source {source!r} does not match the manifest: {what} {verb}"
                names = {"changed": [str(index)]}
            more = f" ({count} bad samples so far)" if count > 1 else ""
            raise DatasetVerificationError(
                f"sample {index} {where} (batch {batch_no}){more}", index=index, source=source,
                kinds=kinds, count=count, **names)
        if len(state) > 5 and state[6]:
            first, n = state[5], state[6]
            source = self.manifest.source_of(first)
            raise DatasetVerificationError(
                f"sample {first} from source {source!r} was never checked this epoch ({n} "
                "samples of the manifest missing)", index=first, source=source,
                kinds=["missing"], count=n, missing=[str(first)])

    def raise_if_failed(self):
        """Synchronises once and raises DatasetVerificationError naming the first bad sample,
        its source and what differed. The state is sticky: once failed, always failed."""
        self._raise(self._read_state())

    def finish(self):
        """End of an epoch: raises as raise_if_failed, and (``require_all``) when a sample of the
        manifest was never checked; then starts the next epoch's coverage."""
        self._raise(self._read_state(with_missing=self.require_all))
        self.new_epoch()

    def new_epoch(self):
        """Forgets which samples were checked so far (failures stay): finish() calls it, and a
        loader calls it when the previous epoch was left early."""
        self._seen.zero_()
        self.batches = 0


def verify_samples(manifest, samples, labels, indices=None, *, batch_size=4096,
                   require_all=True):
    """Checks a whole dataset held as tensors (samples [N, ...] on one device) against a
    manifest; raises DatasetVerificationError naming the first bad sample."""
    n = samples.shape[0]
    device = samples.device
    labels = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(labels)
    if indices is None:
        indices = torch.arange(n, device=device)
    elif not isinstance(indices, torch.Tensor):
        indices = torch.as_tensor(indices)
    checker = DatasetChecker(manifest, device, check_every=0, require_all=require_all)
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        checker.check(samples[sl], labels[sl], indices[sl])
    checker.finish()
    return checker
