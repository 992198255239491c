"""Signature bundles: Sigstore bundle v0.3 JSON around a DSSE envelope whose payload is an in-toto
Statement v1 with the OpenSSF Model Signing v1.0 predicate (docs/FORMAT.md §6).

Pure data: this module builds and parses bytes. Signatures are opaque bytes here; making and
checking them is sentry.crypto's job. Everything read is validated and every problem raises
sentry.errors.FormatError naming the file (``source``) and the field.

What the reference tool (`model_signing` 1.1.1) does, found by reading and running it:

- It serialises the statement with protobuf's ``json_format.MessageToJson``: ``json.dumps``
  with ``indent=2`` and ``ensure_ascii=True``. The statement's own fields come in the order
  ``_type, subject, predicateType, predicate`` and a subject as ``name, digest``; everything
  inside ``predicate`` is a protobuf Struct whose key order changes from run to run (it follows
  the Python hash seed), and ``serialization.ignore_paths`` comes from a frozenset, so its order
  changes too. There is no byte-exact form to copy beyond that; we write the same layout with
  the predicate's keys sorted, which is one of the orders the reference itself produces.
- ``serialization`` for ``files`` is ``{method, hash_type, allow_symlinks}`` plus
  ``ignore_paths`` only when that list is not empty; ``shards`` adds ``shard_size``.
- Resources are sorted by ``pathlib.PurePosixPath``, i.e. by the list of path components
  (``a/b`` < ``a-b`` < ``a.b``), not by code point (``a-b`` < ``a.b`` < ``a/b``). When
  verifying, it recomputes ROOT over the resources in the order listed and compares the
  resources as a set, so it accepts either order. We write code-point order (the OMS spec) and
  accept both.
- A single-file model is one resource named ``.``.
- The bundle is compact JSON (no spaces, no trailing newline) in the key order
  ``mediaType, verificationMaterial, dsseEnvelope``; ``verificationMaterial`` is
  ``{"publicKey": {"hint": HEX}, "tlogEntries": []}`` for keys or
  ``{"x509CertificateChain": {"certificates": [{"rawBytes": B64}, ...]}, "tlogEntries": []}``
  (leaf first) for certificates; the one signature is ``{"sig": B64, "keyid": ""}``.
"""
import base64
import binascii
import dataclasses
import hashlib
import json
import operator
import os
import re
import typing

from . import bundle_shards
from .errors import FormatError, error_text
from .fileio import atomic_write, read_input

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"

#: A bundle file larger than this is refused before it is parsed.
MAX_BUNDLE_BYTES = 64 * 1024 * 1024

#: Digest size in bytes of each algorithm a resource may use.
DIGEST_SIZES = {"sha256": 32, "blake3": 32, "sha256-tree": 32}
#: hash_type values per serialization method.
METHOD_HASH_TYPES = {"files": ("sha256", "blake3"), "tensors": ("blake3", "sha256-tree"),
                     "shards": bundle_shards.HASH_TYPES}
METHODS = tuple(METHOD_HASH_TYPES)
TENSOR_HASH_TYPES = ("blake3", "sha256-tree")

_SERIALIZATION_KEYS = {"method", "hash_type", "allow_symlinks", "ignore_paths"}
_SHARDS_SERIALIZATION_KEYS = _SERIALIZATION_KEYS | {"shard_size"}
_RESOURCE_KEYS = {"name", "algorithm", "digest"}
_ENTRY_KEYS = {"name", "dtype", "shape", "digest"}
_ENTRY_FILE_KEYS = {"file", "offset", "length"}
_ENTRY_ALL_KEYS = _ENTRY_KEYS | _ENTRY_FILE_KEYS


# ---------------------------------------------------------------------------------------------
# small helpers


def _fail(source, field, problem):
    where = f"{source}: " if source else ""
    if isinstance(field, tuple):  # (list field, index, suffix): formatted only on failure
        field = f"{field[0]}[{field[1]}]{field[2]}"
    raise FormatError(f"{where}{field}: {problem}" if field else f"{where}{problem}")


def _no_duplicates(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise FormatError(f"duplicate key '{key}' in a JSON object")
            seen.add(key)
    return obj


def _reject_constant(name):
    raise FormatError(f"{name} is not valid JSON")


def load_json(data, source, what="JSON"):
    """Strict JSON: UTF-8 only, no duplicate keys, no NaN/Infinity."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            _fail(source, None, f"{what} is not UTF-8 ({exc})")
    elif isinstance(data, str):
        text = data
    else:
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except FormatError as exc:
        _fail(source, None, f"malformed {what}: {exc}")
    except (ValueError, RecursionError) as exc:
        _fail(source, None, f"malformed {what}: {exc}")


def _is_int(value):
    return type(value) is int  # bool is an int subclass: refuse it


def _check_text(value, source, field):
    if not isinstance(value, str):
        _fail(source, field, f"must be a string, got {type(value).__name__}")
    if value.isascii():  # the common case, and ASCII is always valid
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _fail(source, field, f"{value!r} is not valid Unicode (lone surrogate)")
    return value


_LOWER_HEX = re.compile(r"[0-9a-f]*")


def _check_hex(value, source, field, size=32):
    _check_text(value, source, field)
    if len(value) != 2 * size or not _LOWER_HEX.fullmatch(value):
        _fail(source, field, f"must be {2 * size} lower-case hex characters (a {size}-byte "
                             f"digest), got {value!r}")
    return value


def _check_object(value, source, field):
    if not isinstance(value, dict):
        _fail(source, field, f"must be a JSON object, got {type(value).__name__}")
    return value


def _check_list(value, source, field):
    if not isinstance(value, list):
        _fail(source, field, f"must be a JSON array, got {type(value).__name__}")
    return value


def _check_keys(obj, allowed, required, source, field):
    keys = obj.keys()
    if not keys - allowed and all(k in keys for k in required):
        return
    missing = [k for k in required if k not in keys]
    if missing:
        _fail(source, field, f"missing {', '.join(repr(k) for k in missing)}")
    unknown = sorted(keys - allowed)
    if unknown:
        _fail(source, field, f"unknown field(s) {', '.join(repr(k) for k in unknown)}")


def check_relative_path(name, source=None, field="name"):
    """A POSIX path relative to the model directory, in canonical form: not empty, not absolute,
    no backslash or NUL, no empty, '.' or '..' component. Returns it; FormatError otherwise."""
    _check_text(name, source, field)
    if not name:
        _fail(source, field, "empty path")
    if name.startswith("/"):
        _fail(source, field, f"{name!r} is absolute; names are relative to the model directory")
    if "\\" in name:
        _fail(source, field, f"{name!r} contains a backslash; names are POSIX paths")
    if "\0" in name:
        _fail(source, field, f"{name!r} contains a NUL character")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            _fail(source, field, f"{name!r} has an empty, '.' or '..' component")
    return name


def component_key(name):
    """The reference tool's order: pathlib.PurePosixPath compares the lists of components."""
    return name.split("/")


def is_sorted(names, key=None):
    keys = [key(n) for n in names] if key else list(names)
    return all(a < b for a, b in zip(keys, keys[1:]))


# ---------------------------------------------------------------------------------------------
# DSSE and the statement


def pae(payload_type, payload):
    """DSSE v1 Pre-Authentication Encoding: b"DSSEv1 <len type> <type> <len payload> <payload>",
    lengths in decimal bytes. This is what the signature covers."""
    if not isinstance(payload_type, str):
        raise TypeError("payload_type must be a str")
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError("payload must be bytes")
    type_bytes = payload_type.encode("utf-8")
    payload = bytes(payload)
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


class Resource(typing.NamedTuple):
    """One signed item: a file (method files) or a tensor (method tensors) and its digest.
    (A named tuple, not a frozen dataclass: a statement holds thousands, and this builds in C.)"""

    name: str
    algorithm: str
    digest: str  # lower-case hex

    @property
    def digest_hex(self):
        return self.digest


@dataclasses.dataclass
class Statement:
    """A validated in-toto statement with the OMS v1.0 predicate."""

    model_name: str
    root_hex: str
    method: str
    hash_type: str
    allow_symlinks: bool
    ignore_paths: list
    resources: list  # of Resource, in the order listed
    tensors: dict = None  # {"hash_type", "entries": [dict, ...]} or None
    shard_size: int = None  # method shards: resources are PATH:START:END (bundle_shards)


def root_digest(resources):
    """ROOT: SHA-256 of the resources' raw digests concatenated in the order given (hex)."""
    h = hashlib.sha256()
    for r in resources:
        h.update(bytes.fromhex(r.digest))
    return h.hexdigest()


def _as_int(value):
    """Integers of any kind (numpy's too) as int; anything else unchanged, for the parser to
    refuse with a message."""
    if isinstance(value, bool):
        return value
    try:
        return operator.index(value)
    except TypeError:
        return value


def _sorted_dict(obj):
    """Recursively sort the keys of dicts (lists keep their order)."""
    if isinstance(obj, dict):
        return {k: _sorted_dict(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [_sorted_dict(v) for v in obj]
    return obj


def make_statement(model_name, resources, *, method, hash_type, allow_symlinks=False,
                   ignore_paths=(), tensors=None):
    """The statement's JSON bytes (the DSSE payload), as the reference tool writes them, with the
    resources in Unicode code-point order of their names and ROOT over that order.

    ``tensors`` (Sentry's extension, required for method ``tensors``) is
    ``{"hash_type": ..., "entries": [{"name", "dtype", "shape", "digest"[, "file", "offset",
    "length"]}, ...]}``; entries are written sorted by name. The result is parsed back with
    parse_statement before it is returned, so nothing is written that would not be read.
    """
    _check_text(model_name, None, "model_name")
    resources = [r if isinstance(r, Resource) else Resource(*r) for r in resources]
    resources = sorted(resources, key=lambda r: r.name)
    for r in resources:  # fail with the name before bytes.fromhex can fail without it
        _check_text(r.name, None, "resource name")
        _check_hex(r.digest, None, f"resource '{r.name}' digest",
                   DIGEST_SIZES.get(r.algorithm, 32))
    serialization = {"method": method, "hash_type": hash_type,
                     "allow_symlinks": allow_symlinks}
    ignore_paths = list(ignore_paths)
    if ignore_paths:  # as the reference: only when there are some
        serialization["ignore_paths"] = [os.fspath(p) for p in ignore_paths]
    predicate = {
        "serialization": serialization,
        "resources": [{"name": r.name, "algorithm": r.algorithm, "digest": r.digest}
                      for r in resources],
    }
    if tensors is not None:
        _check_object(tensors, None, "tensors")
        entries = [dict(e) for e in _check_list(tensors.get("entries"), None, "tensors.entries")]
        for e in entries:  # torch.Size / tuples and numpy integers become JSON lists and ints
            if isinstance(e.get("shape"), tuple):
                e["shape"] = list(e["shape"])
            if isinstance(e.get("shape"), list):
                e["shape"] = [_as_int(d) for d in e["shape"]]
            for k in ("offset", "length"):
                if k in e:
                    e[k] = _as_int(e[k])
        entries.sort(key=_entry_order)
        predicate["tensors"] = {**tensors, "entries": entries}
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": root_digest(resources)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": _sorted_dict(predicate),
    }
    payload = json.dumps(statement, indent=2, ensure_ascii=True).encode("ascii")
    parse_statement(payload, source="statement being written")
    return payload


def parse_statement_envelope(payload, source, predicate_type, what):
    """The in-toto Statement v1 around a predicate: checks _type, predicateType (`what` names it
    in the message) and the one subject with a sha256 digest. Returns (document, subject name,
    subject sha256 hex). Unknown fields are ignored here, as in-toto says. `payload` may also be
    the statement already loaded as JSON."""
    doc = payload if isinstance(payload, dict) else load_json(payload, source, "statement")
    _check_object(doc, source, "statement")
    for key in ("_type", "subject", "predicateType", "predicate"):
        if key not in doc:
            _fail(source, key, "missing")
    if doc["_type"] != STATEMENT_TYPE:
        _fail(source, "_type", f"expected {STATEMENT_TYPE!r}, got {doc['_type']!r}")
    if doc["predicateType"] != predicate_type:
        _fail(source, "predicateType", f"expected {predicate_type!r} ({what}), got "
                                       f"{doc['predicateType']!r}")
    subjects = _check_list(doc["subject"], source, "subject")
    if len(subjects) != 1:
        _fail(source, "subject", f"expected exactly one subject, got {len(subjects)}")
    subject = _check_object(subjects[0], source, "subject[0]")
    if "name" not in subject:
        _fail(source, "subject[0].name", "missing")
    name = _check_text(subject["name"], source, "subject[0].name")
    digest = _check_object(subject.get("digest"), source, "subject[0].digest")
    if set(digest) != {"sha256"}:
        _fail(source, "subject[0].digest", f"expected exactly {{'sha256'}}, got {sorted(digest)}")
    return doc, name, _check_hex(digest["sha256"], source, "subject[0].digest.sha256")


def parse_statement(payload, source="statement"):
    """Validates the statement's JSON bytes completely and returns a Statement.

    Accepts the resources in code-point order or in the reference tool's component order;
    refuses anything else. Unknown fields at the statement's top level, in the subject and in
    the predicate are ignored (as in-toto and OMS v1.0 say); unknown fields in
    ``serialization``, in resources and in Sentry's ``tensors`` extension are refused.
    model_signing v0.2's statement (predicate ``Digests/v0.1``) is read by sentry.bundle_v02.
    """
    doc = _check_object(load_json(payload, source, "statement"), source, "statement")
    from . import bundle_v02

    if doc.get("predicateType") == bundle_v02.PREDICATE_TYPE:
        return bundle_v02.parse_v02_statement(doc, source)
    doc, model_name, root_hex = parse_statement_envelope(
        doc, source, PREDICATE_TYPE, "OpenSSF Model Signing v1.0")

    predicate = _check_object(doc["predicate"], source, "predicate")
    for key in ("serialization", "resources"):
        if key not in predicate:
            _fail(source, f"predicate.{key}", "missing")
    ser = _check_object(predicate["serialization"], source, "predicate.serialization")
    sharded = ser.get("method") == "shards"
    _check_keys(ser, _SHARDS_SERIALIZATION_KEYS if sharded else _SERIALIZATION_KEYS,
                ("method", "hash_type", "allow_symlinks") + (("shard_size",) if sharded else ()),
                source, "predicate.serialization")
    method = _check_text(ser["method"], source, "predicate.serialization.method")
    if method not in METHOD_HASH_TYPES:
        _fail(source, "predicate.serialization.method",
              f"unsupported method {method!r}; Sentry verifies {list(METHODS)}")
    hash_type = _check_text(ser["hash_type"], source, "predicate.serialization.hash_type")
    if hash_type not in METHOD_HASH_TYPES[method]:
        _fail(source, "predicate.serialization.hash_type",
              f"unsupported {hash_type!r} for method {method!r}; expected one of "
              f"{list(METHOD_HASH_TYPES[method])}")
    allow_symlinks = ser["allow_symlinks"]
    if not isinstance(allow_symlinks, bool):
        _fail(source, "predicate.serialization.allow_symlinks",
              f"must be true or false, got {allow_symlinks!r}")
    ignore_paths = _check_list(ser.get("ignore_paths", []), source,
                               "predicate.serialization.ignore_paths")
    for i, p in enumerate(ignore_paths):
        check_relative_path(p, source, f"predicate.serialization.ignore_paths[{i}]")

    shard_size = bundle_shards.parse_shard_size(ser["shard_size"], source) if sharded else None
    resource_algorithm = bundle_shards.algorithm(hash_type, shard_size) if sharded else hash_type
    items = _check_list(predicate["resources"], source, "predicate.resources")
    resources, seen = [], set()
    for i, item in enumerate(items):
        field = ("predicate.resources", i, "")
        _check_object(item, source, field)
        _check_keys(item, _RESOURCE_KEYS, ("name", "algorithm", "digest"), source, field)
        name = _check_text(item["name"], source, ("predicate.resources", i, ".name"))
        if method == "files":
            if not (name == "." and len(items) == 1):  # "." is a single-file model
                check_relative_path(name, source, ("predicate.resources", i, ".name"))
        elif sharded:
            path, _, _ = bundle_shards.parse_name(name, source, f"predicate.resources[{i}].name")
            if path != ".":  # "." is a single-file model
                check_relative_path(path, source, ("predicate.resources", i, ".name"))
        elif not name:
            _fail(source, ("predicate.resources", i, ".name"), "empty name")
        if name in seen:
            _fail(source, ("predicate.resources", i, ".name"), f"duplicate resource {name!r}")
        seen.add(name)
        algorithm = _check_text(item["algorithm"], source, ("predicate.resources", i, ".algorithm"))
        if algorithm not in DIGEST_SIZES and algorithm != resource_algorithm:
            _fail(source, ("predicate.resources", i, ".algorithm"), f"unknown algorithm {algorithm!r}")
        if algorithm != resource_algorithm:
            _fail(source, ("predicate.resources", i, ".algorithm"),
                  f"{algorithm!r} differs from serialization.hash_type {resource_algorithm!r}")
        digest_hex = _check_hex(item["digest"], source, ("predicate.resources", i, ".digest"),
                                DIGEST_SIZES[hash_type])
        resources.append(Resource(name, algorithm, digest_hex))

    names = [r.name for r in resources]
    if not (is_sorted(names) or is_sorted(names, bundle_shards.order_key if sharded else component_key)):
        _fail(source, "predicate.resources",
              "not sorted by name (neither in code-point order nor by path components)")
    if sharded:
        files = bundle_shards.ranges(resources, shard_size, source)
        if "." in files and len(files) > 1:
            _fail(source, "predicate.resources", "'.' (a single-file model) among other files")
    if root_digest(resources) != root_hex:
        _fail(source, "subject[0].digest.sha256", "subject digest does not match resources")

    tensors = None
    if "tensors" in predicate and sharded:
        _fail(source, "predicate.tensors", "not used with method 'shards'")
    if "tensors" in predicate:
        tensors = _parse_tensors(predicate["tensors"], source, method, hash_type, resources)
    elif method == "tensors":
        _fail(source, "predicate.tensors", "missing (required for method 'tensors')")
    return Statement(model_name, root_hex, method, hash_type, allow_symlinks, list(ignore_paths),
                     resources, tensors, shard_size)


def _entry_order(e):
    """predicate.tensors order: by name, then by file (names repeat only across files)."""
    return tuple(e.get(k) if isinstance(e.get(k), str) else "" for k in ("name", "file"))


def _parse_tensors(ext, source, method, method_hash_type, resources):
    from .safetensors_format import DTYPE_BITS, byte_length

    field = "predicate.tensors"
    _check_object(ext, source, field)
    _check_keys(ext, {"hash_type", "entries"}, ("hash_type", "entries"), source, field)
    hash_type = _check_text(ext["hash_type"], source, f"{field}.hash_type")
    if hash_type not in TENSOR_HASH_TYPES:
        _fail(source, f"{field}.hash_type",
              f"unsupported {hash_type!r}; expected one of {list(TENSOR_HASH_TYPES)}")
    raw = _check_list(ext["entries"], source, f"{field}.entries")
    signed_files = {r.name for r in resources}
    entries, names = [], []
    for i, e in enumerate(raw):
        ef = ("predicate.tensors.entries", i, "")
        _check_object(e, source, ef)
        _check_keys(e, _ENTRY_ALL_KEYS, _ENTRY_KEYS, source, ef)
        name = _check_text(e["name"], source, ("predicate.tensors.entries", i, ".name"))
        if not name:
            _fail(source, ("predicate.tensors.entries", i, ".name"), "empty name")
        dtype = _check_text(e["dtype"], source, ("predicate.tensors.entries", i, ".dtype"))
        if dtype not in DTYPE_BITS:
            _fail(source, ("predicate.tensors.entries", i, ".dtype"), f"unknown safetensors dtype {dtype!r}")
        shape = _check_list(e["shape"], source, ("predicate.tensors.entries", i, ".shape"))
        for d in shape:
            if not _is_int(d) or d < 0:
                _fail(source, ("predicate.tensors.entries", i, ".shape"),
                      f"dimensions must be non-negative integers, got {shape!r}")
        digest = _check_hex(e["digest"], source, ("predicate.tensors.entries", i, ".digest"))
        entry = {"name": name, "dtype": dtype, "shape": list(shape), "digest": digest}
        present = [k for k in ("file", "offset", "length") if k in e]
        if present and len(present) != 3:
            _fail(source, ef, "'file', 'offset' and 'length' go together")
        if present:
            if e["file"] == "." and e["file"] in signed_files:  # a single-file model
                entry["file"] = "."
            else:
                entry["file"] = check_relative_path(e["file"], source, ("predicate.tensors.entries", i, ".file"))
            for k in ("offset", "length"):
                if not _is_int(e[k]) or e[k] < 0:
                    _fail(source, ("predicate.tensors.entries", i, "." + k), f"must be a non-negative integer, got {e[k]!r}")
                entry[k] = e[k]
            try:
                expected = byte_length(dtype, shape)
            except FormatError as exc:
                _fail(source, ef, str(exc))
            if entry["length"] != expected:
                _fail(source, ("predicate.tensors.entries", i, ".length"), f"{entry['length']} bytes, but {dtype} {shape} "
                                              f"takes {expected}")
        if method == "files":
            if "file" not in entry:
                _fail(source, ef, "method 'files' needs the tensor's 'file', 'offset', 'length'")
            if entry["file"] not in signed_files:
                _fail(source, ("predicate.tensors.entries", i, ".file"), f"{entry['file']!r} is not a signed resource")
        entries.append(entry)
        names.append(_entry_order(entry))
    # A name is unique in its file (two files of a model may hold the same names).
    if len(set(names)) != len(names):
        dup = sorted({n for n, f in names if names.count((n, f)) > 1})
        where = " in one file" if method == "files" else ""
        _fail(source, f"{field}.entries", f"duplicate tensor name(s){where} {dup[:5]}")
    if not is_sorted(names):
        _fail(source, f"{field}.entries", "not sorted by name, then file, in code-point order")
    if method == "tensors":
        if hash_type != method_hash_type:
            _fail(source, f"{field}.hash_type",
                  f"{hash_type!r} differs from serialization.hash_type {method_hash_type!r}")
        if {r.name: r.digest for r in resources} != {e["name"]: e["digest"] for e in entries}:
            _fail(source, field, "entries do not match predicate.resources (names and digests)")
    return {"hash_type": hash_type, "entries": entries}


# ---------------------------------------------------------------------------------------------
# the bundle


def _b64encode(data):
    return base64.b64encode(bytes(data)).decode("ascii")


def _b64decode(value, source, field):
    """Standard, padded, canonical base64 only."""
    _check_text(value, source, field)
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        _fail(source, field, f"invalid base64 ({exc})")
    if base64.b64encode(raw).decode("ascii") != value:
        _fail(source, field, "invalid base64 (not in canonical padded form)")
    return raw


def _check_der_certificate(der, source, field):
    """Cheap structural check: one DER SEQUENCE spanning the whole buffer."""
    if not der:
        _fail(source, field, "empty certificate")
    if der[0] != 0x30 or len(der) < 2:
        _fail(source, field, "not a DER certificate (does not start with a SEQUENCE)")
    first = der[1]
    if first < 0x80:
        length, header = first, 2
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or len(der) < 2 + n:
            _fail(source, field, "not a DER certificate (bad length)")
        length, header = int.from_bytes(der[2:2 + n], "big"), 2 + n
    if header + length != len(der):
        _fail(source, field, f"not a DER certificate ({len(der)} bytes, the SEQUENCE says "
                             f"{header + length})")


@dataclasses.dataclass
class Bundle:
    """A signed statement. Exactly one of ``public_key_hint`` (hex SHA-256 of the public key's
    PEM SubjectPublicKeyInfo) and ``certificate_chain`` (DER, leaf first) is written; when a
    chain is given the hint is not written (the bundle has no place for both).
    ``tlog_entries`` are the transparency-log entries of a keyless bundle, as read (JSON
    objects, checked by sentry.keyless, not here); Sentry writes none."""

    payload: bytes
    payload_type: str = PAYLOAD_TYPE
    signature: bytes = b""
    public_key_hint: str = None
    certificate_chain: list = dataclasses.field(default_factory=list)
    tlog_entries: list = dataclasses.field(default_factory=list)

    def to_json(self):
        """The bundle as compact JSON bytes, exactly as `model_signing sign key|certificate`
        writes it."""
        if not isinstance(self.payload, (bytes, bytearray)) or not self.payload:
            raise FormatError("bundle payload must be non-empty bytes")
        if self.payload_type != PAYLOAD_TYPE:
            raise FormatError(f"bundle payloadType must be {PAYLOAD_TYPE!r}")
        if not isinstance(self.signature, (bytes, bytearray)) or not self.signature:
            raise FormatError("bundle signature must be non-empty bytes")
        if self.tlog_entries:
            raise FormatError("Sentry does not write keyless bundles (transparency-log entries)")
        if self.certificate_chain:
            for i, der in enumerate(self.certificate_chain):
                if not isinstance(der, (bytes, bytearray)):
                    raise FormatError(f"certificate_chain[{i}] must be DER bytes")
                _check_der_certificate(bytes(der), None, f"certificate_chain[{i}]")
            material = {"x509CertificateChain": {"certificates": [
                {"rawBytes": _b64encode(der)} for der in self.certificate_chain]}}
        else:
            if self.public_key_hint is None:
                raise FormatError("bundle needs a public_key_hint or a certificate_chain")
            _check_hex(self.public_key_hint, None, "public_key_hint")
            material = {"publicKey": {"hint": self.public_key_hint}}
        material["tlogEntries"] = []
        doc = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": material,
            "dsseEnvelope": {
                "payload": _b64encode(self.payload),
                "payloadType": self.payload_type,
                "signatures": [{"sig": _b64encode(self.signature), "keyid": ""}],
            },
        }
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode("ascii")

    @classmethod
    def from_json(cls, data, source="bundle"):
        """Parses bundle JSON strictly (see module docs); FormatError names the field and
        ``source`` (the file)."""
        if not isinstance(data, (bytes, bytearray, memoryview, str)):
            raise TypeError(f"expected bytes, got {type(data).__name__}")
        if len(data) > MAX_BUNDLE_BYTES:
            _fail(source, None, f"{len(data)} bytes is larger than the {MAX_BUNDLE_BYTES}-byte "
                                "limit for a signature bundle")
        doc = _check_object(load_json(data, source, "bundle JSON"), source, "bundle")
        if "mediaType" not in doc:
            _fail(source, "mediaType", "missing")
        if doc["mediaType"] != BUNDLE_MEDIA_TYPE:
            _fail(source, "mediaType", f"expected {BUNDLE_MEDIA_TYPE!r}, got {doc['mediaType']!r}")
        if "messageSignature" in doc:
            _fail(source, "messageSignature", "not supported: Sentry reads DSSE envelopes only")
        _check_keys(doc, ("mediaType", "verificationMaterial", "dsseEnvelope"),
                    ("verificationMaterial", "dsseEnvelope"), source, "bundle")

        vm = _check_object(doc["verificationMaterial"], source, "verificationMaterial")
        _check_keys(vm, ("publicKey", "x509CertificateChain", "certificate", "tlogEntries",
                         "timestampVerificationData"), (), source, "verificationMaterial")
        kinds = [k for k in ("publicKey", "x509CertificateChain", "certificate") if k in vm]
        if len(kinds) != 1:
            _fail(source, "verificationMaterial", "needs exactly one of publicKey, "
                                                  f"x509CertificateChain, certificate; got {kinds}")
        tlog_entries = _check_list(vm.get("tlogEntries", []), source,
                                   "verificationMaterial.tlogEntries")
        for i, entry in enumerate(tlog_entries):
            _check_object(entry, source, f"verificationMaterial.tlogEntries[{i}]")
        if "timestampVerificationData" in vm:
            _check_object(vm["timestampVerificationData"], source,
                          "verificationMaterial.timestampVerificationData")
        hint, chain = None, []
        if "publicKey" in vm:
            field = "verificationMaterial.publicKey"
            pk = _check_object(vm["publicKey"], source, field)
            # rawBytes/keyDetails: what pre-1.0 reference releases wrote; ignored like it does.
            _check_keys(pk, ("hint", "rawBytes", "keyDetails"), (), source, field)
            if pk.get("hint") not in (None, ""):
                hint = _check_hex(pk["hint"], source, f"{field}.hint")
        elif "x509CertificateChain" in vm:
            field = "verificationMaterial.x509CertificateChain"
            xc = _check_object(vm["x509CertificateChain"], source, field)
            _check_keys(xc, ("certificates",), ("certificates",), source, field)
            certs = _check_list(xc["certificates"], source, f"{field}.certificates")
            if not certs:
                _fail(source, f"{field}.certificates", "empty certificate chain")
            for i, c in enumerate(certs):
                cf = f"{field}.certificates[{i}]"
                _check_object(c, source, cf)
                _check_keys(c, ("rawBytes",), ("rawBytes",), source, cf)
                der = _b64decode(c["rawBytes"], source, f"{cf}.rawBytes")
                _check_der_certificate(der, source, f"{cf}.rawBytes")
                chain.append(der)
        else:
            field = "verificationMaterial.certificate"
            c = _check_object(vm["certificate"], source, field)
            _check_keys(c, ("rawBytes",), ("rawBytes",), source, field)
            der = _b64decode(c["rawBytes"], source, f"{field}.rawBytes")
            _check_der_certificate(der, source, f"{field}.rawBytes")
            chain.append(der)

        env = _check_object(doc["dsseEnvelope"], source, "dsseEnvelope")
        _check_keys(env, ("payload", "payloadType", "signatures"),
                    ("payload", "payloadType", "signatures"), source, "dsseEnvelope")
        payload = _b64decode(env["payload"], source, "dsseEnvelope.payload")
        if not payload:
            _fail(source, "dsseEnvelope.payload", "empty")
        payload_type = _check_text(env["payloadType"], source, "dsseEnvelope.payloadType")
        if payload_type != PAYLOAD_TYPE:
            _fail(source, "dsseEnvelope.payloadType",
                  f"expected {PAYLOAD_TYPE!r}, got {payload_type!r}")
        sigs = _check_list(env["signatures"], source, "dsseEnvelope.signatures")
        if len(sigs) != 1:
            _fail(source, "dsseEnvelope.signatures",
                  f"expected exactly one signature, got {len(sigs)}")
        sig = _check_object(sigs[0], source, "dsseEnvelope.signatures[0]")
        _check_keys(sig, ("sig", "keyid"), ("sig",), source, "dsseEnvelope.signatures[0]")
        if sig.get("keyid") is not None:
            _check_text(sig["keyid"], source, "dsseEnvelope.signatures[0].keyid")
        signature = _b64decode(sig["sig"], source, "dsseEnvelope.signatures[0].sig")
        if not signature:
            _fail(source, "dsseEnvelope.signatures[0].sig", "empty signature")
        return cls(payload=payload, payload_type=payload_type, signature=signature,
                   public_key_hint=hint, certificate_chain=chain, tlog_entries=tlog_entries)


def check_signature_target(path):
    """Refuses (FormatError) to write a signature at ``path`` unless nothing is there or an
    older signature bundle is: a model file, a key, a certificate or anything else that is not
    a bundle is never overwritten by a signature."""
    path = os.fspath(path)
    try:
        data = read_input(path, "signature bundle", MAX_BUNDLE_BYTES)
    except FileNotFoundError:
        return
    except (FormatError, OSError) as exc:
        why = error_text(exc, path).removeprefix(f"{path}: ")
        raise FormatError(f"{path}: refusing to write the signature there ({why})") from None
    try:
        Bundle.from_json(data, source=path)
    except FormatError:
        raise FormatError(f"{path}: refusing to write the signature there: it exists and is not "
                          "a signature bundle (a model file or a key?); choose another path "
                          "or remove it") from None


def write_bundle(path, bundle):
    """Writes the bundle atomically (fileio.atomic_write): never a half-written signature, and
    never over a file that is not a signature (check_signature_target)."""
    check_signature_target(path)
    atomic_write(path, bundle.to_json())


def read_bundle_bytes(path):
    """The bytes of a bundle file, refusing files over MAX_BUNDLE_BYTES unread."""
    path = os.fspath(path)
    return read_input(path, "signature bundle", MAX_BUNDLE_BYTES)


def read_bundle(path):
    """Reads and parses a bundle file (refusing files over MAX_BUNDLE_BYTES unread)."""
    return Bundle.from_json(read_bundle_bytes(path), source=os.fspath(path))
