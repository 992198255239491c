"""Bundles written by model_signing v0.2.0, the reference tool's first release that signed with
keys and certificates (read from its source and checked against bundles it wrote; v0.3.0 and
later write the OMS v1.0 statement that sentry.bundle parses).

Three differences, all still accepted by the reference's current verifier:

- The statement's predicate type is ``https://model_signing/Digests/v0.1``: each file is a
  subject (its name, ``digest.sha256``, and ``annotations.actual_hash_algorithm`` =
  ``file-sha256``); the predicate is a placeholder; there is no model name, no root digest and no
  serialization (it is files, SHA-256, no symbolic links, no recorded ignored paths).
- Its key and certificate signers (not its Sigstore one) built the DSSE PAE with a bug: the
  payload, bytes, went into a Python f-string, so what was signed is
  ``DSSEV1 <len type> <type> <len payload> b'<payload escaped as Python writes bytes>'``
  (note the capital V), not the DSSE PAE.
- They hashed with SHA-256 on every curve (P-384 keys included).
"""
from . import bundle as bundle_format

PREDICATE_TYPE = "https://model_signing/Digests/v0.1"
#: The only file digest v0.2 bundles are verified with (as the reference does).
ACTUAL_HASH_ALGORITHM = "file-sha256"
#: The hash v0.2's key and certificate signers used, whatever the curve.
SIGNATURE_HASH = "SHA-256"


def pae(payload):
    """What v0.2's key and certificate signers signed instead of the DSSE PAE (see above)."""
    payload = bytes(payload)
    payload_type = bundle_format.PAYLOAD_TYPE
    return (f"DSSEV1 {len(payload_type)} {payload_type} {len(payload)} {payload!r}"
            .encode("utf-8"))


def is_v02_statement(payload):
    """True when the payload is a JSON object whose predicateType is v0.2's. Says nothing about
    its validity (parse_v02_statement does)."""
    try:
        doc = bundle_format.load_json(payload, None, "statement")
    except bundle_format.FormatError:
        return False
    return isinstance(doc, dict) and doc.get("predicateType") == PREDICATE_TYPE


def parse_v02_statement(doc, source):
    """A Statement (method files, sha256) from a v0.2 statement already loaded as JSON.

    Each subject must be an object with a canonical relative path as its name (or ``.`` for a
    model that is one file, as v0.2 named it), exactly a ``sha256`` digest, and, if it has one,
    ``annotations.actual_hash_algorithm`` ``file-sha256``. Names are unique; their order is not
    significant (nothing in v0.2 digests the list)."""
    fail = bundle_format._fail
    if doc.get("_type") != bundle_format.STATEMENT_TYPE:
        fail(source, "_type", f"expected {bundle_format.STATEMENT_TYPE!r}, got {doc.get('_type')!r}")
    subjects = bundle_format._check_list(doc.get("subject"), source, "subject")
    if not subjects:
        fail(source, "subject", "no subject: a model_signing v0.2 statement lists its files")
    resources, seen = [], set()
    for i, subject in enumerate(subjects):
        field = f"subject[{i}]"
        bundle_format._check_object(subject, source, field)
        name = bundle_format._check_text(subject.get("name"), source, f"{field}.name")
        if not (name == "." and len(subjects) == 1):
            bundle_format.check_relative_path(name, source, f"{field}.name")
        if name in seen:
            fail(source, f"{field}.name", f"duplicate subject {name!r}")
        seen.add(name)
        digest = bundle_format._check_object(subject.get("digest"), source, f"{field}.digest")
        if set(digest) != {"sha256"}:
            fail(source, f"{field}.digest", f"expected exactly {{'sha256'}}, got {sorted(digest)}")
        hex_digest = bundle_format._check_hex(digest["sha256"], source, f"{field}.digest.sha256")
        annotations = subject.get("annotations", {})
        bundle_format._check_object(annotations, source, f"{field}.annotations")
        actual = annotations.get("actual_hash_algorithm", ACTUAL_HASH_ALGORITHM)
        if actual != ACTUAL_HASH_ALGORITHM:
            fail(source, f"{field}.annotations.actual_hash_algorithm",
                 f"unsupported {actual!r}; model_signing v0.2 bundles verify with "
                 f"{ACTUAL_HASH_ALGORITHM!r} only")
        resources.append(bundle_format.Resource(name, "sha256", hex_digest))
    resources.sort(key=lambda r: r.name)
    return bundle_format.Statement(
        model_name=None, root_hex=bundle_format.root_digest(resources), method="files",
        hash_type="sha256", allow_symlinks=False, ignore_paths=[], resources=resources)
