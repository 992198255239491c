"""Signature bundles: Sigstore bundle v0.3 JSON around a DSSE envelope whose payload is an in-toto
Statement v1 with the OpenSSF Model Signing v1.0 predicate (docs/FORMAT.md §6).

This module writes bundles and statements. Reading them is C++ (csrc/bundle/, simdjson, exposed
as ``sentry_ops._C.bundle``): one strict reader for Python and LibTorch programs alike, whose
every problem raises sentry.errors.FormatError naming the file (``source``) and the field.
Bundle.from_json, parse_statement, parse_statement_envelope and load_json are thin shells over
it. Signatures are opaque bytes here; making and checking them is sentry.crypto's job (and
the C++ reader's, in sentry.signing).

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
import contextlib
import dataclasses
import hashlib
import json
import operator
import os
import re
import typing

from sentry_ops import _C

from ..errors import FormatError, MethodError, Option, OptionError, VerificationError, error_text
from ..io.fileio import atomic_write

_native = _C.bundle

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
                     "shards": ("sha256",)}
METHODS = tuple(METHOD_HASH_TYPES)
TENSOR_HASH_TYPES = ("blake3", "sha256-tree")


@contextlib.contextmanager
def native_errors():
    """The C++ reader's errors as Sentry's: FormatError, VerificationError (with its lists)."""
    try:
        yield
    except _native.OptionError as exc:  # parts: text, or (option keyword, Python spelling)
        raise OptionError(*(p if isinstance(p, str) else Option(*p) for p in exc.args)) from None
    except _native.FormatError as exc:
        raise FormatError(str(exc)) from None
    except _native.MethodError as exc:  # parts: text, or (option keyword,)
        raise MethodError(*(p if isinstance(p, str) else Option(p[0]) for p in exc.args)) from None
    except _native.VerificationError as exc:
        message, changed, missing, unexpected = exc.args
        raise VerificationError(message, changed=changed, missing=missing,
                                unexpected=unexpected) from None


def _as_bytes(data):
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):  # a lone surrogate becomes bytes that are not UTF-8: refused
        return data.encode("utf-8", "surrogatepass")
    raise TypeError(f"expected bytes, got {type(data).__name__}")


# ---------------------------------------------------------------------------------------------
# small helpers


def _fail(source, field, problem):
    where = f"{source}: " if source else ""
    if isinstance(field, tuple):  # (list field, index, suffix): formatted only on failure
        field = f"{field[0]}[{field[1]}]{field[2]}"
    raise FormatError(f"{where}{field}: {problem}" if field else f"{where}{problem}")


def load_json(data, source, what="JSON"):
    """Strict JSON (the C++ reader): UTF-8 only, no duplicate keys, no NaN/Infinity, nothing
    after the document. FormatError names ``source`` and, where it can, the field."""
    data = _as_bytes(data)
    with native_errors():
        return _native.loads(data, "" if source is None else os.fspath(source), what)


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


# ---------------------------------------------------------------------------------------------
# DSSE and the statement


def pae(payload_type, payload):
    """DSSE v1 Pre-Authentication Encoding: b"DSSEv1 <len type> <type> <len payload> <payload>",
    lengths in decimal bytes. This is what the signature covers."""
    if not isinstance(payload_type, str):
        raise TypeError("payload_type must be a str")
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError("payload must be bytes")
    return _C.crypto.dsse_pae(payload_type.encode("utf-8"), bytes(payload))


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
    shard_size: int = None  # method shards: bytes per shard (the reference's shards method)
    shards: dict = None  # method shards: {path: [(start, end, digest hex)]}, cutting each file


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


def _entry_order(e):
    """predicate.tensors order: by name, then by file (names repeat only across files)."""
    return tuple(e.get(k) if isinstance(e.get(k), str) else "" for k in ("name", "file"))


def make_statement(model_name, resources, *, method, hash_type, allow_symlinks=False,
                   ignore_paths=(), tensors=None):
    """The statement's JSON bytes (the DSSE payload), as the reference tool writes them, with the
    resources in Unicode code-point order of their names and ROOT over that order.

    ``tensors`` (Sentry's extension, required for method ``tensors``) is
    ``{"hash_type": ..., "entries": [{"name", "dtype", "shape", "digest"[, "file", "offset",
    "length"]}, ...]}``; entries are written sorted by name, then file. The result is parsed
    back with parse_statement before it is returned, so nothing is written that would not be
    read.
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
    subject sha256 hex). Unknown fields are ignored here, as in-toto says."""
    with native_errors():
        return _native.statement_envelope(_as_bytes(payload), "" if source is None else
                                          os.fspath(source), predicate_type, what)


def parse_tensor_listing(data, source, what):
    """The ``tensors`` listing ({"hash_type", "entries": [dict, ...]}) of a JSON document other
    than a statement (a weight manifest), checked by the C++ reader as predicate.tensors is,
    with names unique. FormatError names ``source`` and the field."""
    with native_errors():
        return _native.tensor_listing(_as_bytes(data), "" if source is None else os.fspath(source),
                                      what)


def _statement(fields):
    """A Statement from the C++ reader's fields."""
    fields["resources"] = [Resource._make(r) for r in fields["resources"]]
    return Statement(**fields)


def parse_statement(payload, source="statement"):
    """Validates the statement's JSON bytes completely and returns a Statement.

    Accepts the resources in code-point order or in the reference tool's component order;
    refuses anything else. Unknown fields at the statement's top level, in the subject and in
    the predicate are ignored (as in-toto and OMS v1.0 say); unknown fields in
    ``serialization``, in resources and in Sentry's ``tensors`` extension are refused.
    model_signing v0.2.0's statement (predicate ``Digests/v0.1``, sentry.bundle_v02) is read as
    method files, SHA-256. FormatError names ``source`` and the field.
    """
    with native_errors():
        return _statement(_native.parse_statement(_as_bytes(payload), os.fspath(source or "")))


# ---------------------------------------------------------------------------------------------
# the bundle


def _b64encode(data):
    return base64.b64encode(bytes(data)).decode("ascii")


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
                if not der:
                    raise FormatError(f"certificate_chain[{i}]: empty certificate")
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
        data = json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode("ascii")
        Bundle.from_json(data, source="bundle being written")  # never write what is not read
        return data

    @classmethod
    def from_json(cls, data, source="bundle"):
        """Parses bundle JSON strictly (see module docs); FormatError names the field and
        ``source`` (the file)."""
        with native_errors():
            return cls._from_fields(_native.parse_bundle(_as_bytes(data), os.fspath(source or "")))

    @classmethod
    def _from_fields(cls, fields):
        fields["tlog_entries"] = [_native.loads(entry.encode(), "", "tlogEntries")
                                  for entry in fields["tlog_entries"]]
        return cls(**fields)


def check_signature_target(path):
    """Refuses (FormatError) to write a signature at ``path`` unless nothing is there or an
    older signature bundle is: a model file, a key, a certificate or anything else that is not
    a bundle is never overwritten by a signature."""
    path = os.fspath(path)
    try:
        data = read_bundle_bytes(path)
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
    """The bytes of a bundle file, refusing files over MAX_BUNDLE_BYTES unread and anything but
    a regular file without blocking (as fileio.open_input does); OSError when it cannot be
    opened."""
    with native_errors():
        return _native.read_bundle_file(os.fspath(path))


def read_bundle(path):
    """Reads and parses a bundle file (refusing files over MAX_BUNDLE_BYTES unread)."""
    return Bundle.from_json(read_bundle_bytes(path), source=os.fspath(path))
