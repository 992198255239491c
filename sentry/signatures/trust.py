"""The trust a signature bundle is checked with, and the check: a public key, the certificate
method's trusted roots, or a keyless (Sigstore) policy, chosen by the verifying functions'
keywords (trust_from); open_bundle reads a bundle and verifies its signature with it. Shared by
the verifying functions (sentry/oms/signing.py) and the verified loader (sentry/oms/loader.py)."""
import dataclasses
import os
import time

from sentry_ops import _C

from ..errors import FormatError, MethodError, Option
from ..formats import bundle as bundle_format
from .keys import PublicKey, load_certificates

_native = _C.bundle


@dataclasses.dataclass(frozen=True)
class CertificateRoots:
    """The trust anchors of the certificate method (paths or PEM/DER, as given)."""

    roots: object


def trust_from(public_key=None, certificate_chain=None, identity=None, identity_provider=None,
               trusted_root=None, trust_config=None):
    """What a signature must be verified with, from the verifying functions' keywords: a
    PublicKey, the certificate method's roots or a keyless.KeylessPolicy. FormatError unless exactly one
    method is given whole. (Loads the key or trust root once, for callers verifying many.)"""
    keyless_given = identity is not None or identity_provider is not None
    given = [name for name, on in (("public_key", public_key is not None),
                                   ("certificate_chain", certificate_chain is not None),
                                   ("identity and identity_provider", keyless_given)) if on]
    if len(given) != 1:
        raise FormatError("give exactly one of public_key, certificate_chain, or identity and "
                          f"identity_provider (keyless); got {given or 'none'}")
    if not keyless_given and (trusted_root is not None or trust_config is not None):
        raise FormatError("trusted_root and trust_config are for keyless verification "
                          "(identity and identity_provider)")
    if public_key is not None:
        return public_key if isinstance(public_key, PublicKey) else PublicKey.load(public_key)
    if certificate_chain is not None:
        return CertificateRoots(certificate_chain)
    from .keyless import KeylessPolicy

    return KeylessPolicy.load(identity, identity_provider, trusted_root=trusted_root,
                              trust_config=trust_config)


def native_trust(trust, signature_path):
    """(the C++ reader's Trust, the bundle's bytes when already read) for `trust` (trust_from).

    Keys and certificate roots are checked by the C++ reader itself. A keyless bundle's trust
    decision is sigstore-python's, made on the raw bundle bytes; the C++ reader then reads those
    same bytes and must find the payload sigstore-python verified."""
    if isinstance(trust, PublicKey):
        return _native.Trust.public_key(trust._key), None
    if isinstance(trust, CertificateRoots):
        return _native.Trust.certificate_roots(load_certificates(trust.roots)), None
    from . import keyless

    data = bundle_format.read_bundle_bytes(signature_path)
    if not bundle_format.Bundle.from_json(data, source=signature_path).certificate_chain:
        raise MethodError(f"{signature_path}: the bundle carries no certificate: it was signed "
                          "with a key, not keyless; verify it with ", Option("public_key"))
    payload_type, payload = keyless.verify_bundle(data, signature_path, trust)
    return _native.Trust.verified_keyless(payload_type, payload), data


def open_bundle(signature_path, trust):
    """Reads the bundle, checks its signature with `trust` (trust_from), returns
    (statement, key, timings)."""
    path = os.fspath(signature_path)
    t0 = time.perf_counter()
    native, data = native_trust(trust, path)
    keyless_ms = (time.perf_counter() - t0) * 1e3 if data is not None else 0.0
    with bundle_format.native_errors():
        if data is None:
            fields, _, key, timings = _native.open_bundle(path, native)
        else:
            fields, _, key, timings = _native.open_bundle_data(data, path, native)
    timings["check signature"] += keyless_ms
    return bundle_format._statement(fields), PublicKey(key), timings


def signer_keywords(trust):
    """Verified's identity and identity_provider keywords."""
    if isinstance(trust, (PublicKey, CertificateRoots)):
        return {}
    return {"identity": trust.identity, "identity_provider": trust.identity_provider}
