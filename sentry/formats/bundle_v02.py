"""Bundles written by model_signing v0.2.0, the reference tool's first release that signed with
keys and certificates (read from its source and checked against bundles it wrote; v0.3.0 and
later write the OMS v1.0 statement). The C++ bundle reader (csrc/bundle/) reads and verifies
them; this module names the format for Python callers and tests.

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
from sentry_ops import _C

PREDICATE_TYPE = "https://model_signing/Digests/v0.1"
#: The only file digest v0.2 bundles are verified with (as the reference does).
ACTUAL_HASH_ALGORITHM = "file-sha256"
#: The hash v0.2's key and certificate signers used, whatever the curve.
SIGNATURE_HASH = "SHA-256"


def pae(payload):
    """What v0.2's key and certificate signers signed instead of the DSSE PAE (see above)."""
    return _C.bundle.v02_pae(bytes(payload))
