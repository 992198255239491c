"""Sigstore keyless signatures, verified offline.

A keyless bundle is signed with a short-lived Fulcio certificate for an OIDC identity and
recorded in the Rekor transparency log. The trust decision is sigstore-python's (PyPI
``sigstore``, the implementation the reference tool uses), made with its ``Verifier`` and an
``Identity`` policy against trust material the user gives as a file: a Sigstore
``trusted_root.json`` or a client trust config (what the reference's ``--trust_config`` reads).
Nothing here fetches anything; without a trust root the call fails. sigstore-python checks that
the certificate chains to the Fulcio CA at the signing time, its SCT, the Rekor entry (inclusion
proof and signed checkpoint, signed entry timestamp) or RFC 3161 timestamps, that the signing
time lies inside the certificate's validity, the identity (SAN) and OIDC issuer, the DSSE
signature, and that the log entry matches the envelope. The statement is then Sentry's to check.

sigstore-python is imported on first use; signing keyless needs the network and is not offered.
"""
import dataclasses
import os

from ..io import fileio
from ..errors import DependencyError, FormatError, Option, OptionError, VerificationError

#: A trust root or trust config larger than this is refused unread (the public one is ~7 KiB).
MAX_TRUST_FILE_BYTES = 16 * 1024 * 1024

TRUSTED_ROOT_MEDIA_PREFIX = "application/vnd.dev.sigstore.trustedroot"
TRUST_CONFIG_MEDIA_PREFIX = "application/vnd.dev.sigstore.clienttrustconfig"

# What failed, by the words of sigstore-python's messages, first match wins.
_CHECKS = (
    ("SANs do not match", "identity (certificate SAN)"),
    ("OIDCIssuer", "OIDC issuer"),
    ("failed to build timestamp certificate chain",
     "certificate chain to the Fulcio CA, valid at the signing time"),
    ("expired at time of signing", "certificate validity at the signing time"),
    ("SCT", "certificate transparency (SCT)"),
    ("inclusion proof", "Rekor inclusion proof"),
    ("checkpoint", "Rekor signed checkpoint"),
    ("inclusion promise", "Rekor signed entry timestamp"),
    ("log entry", "Rekor log entry"),
    ("Timestamp", "RFC 3161 timestamp"),
    ("verified time", "signing time"),
    ("DSSE", "DSSE signature"),
)


def _sigstore():
    """sigstore-python's modules, imported on first use."""
    try:
        import sigstore
        from sigstore import errors, models
        from sigstore.verify import Verifier, policy
    except ImportError as exc:
        raise DependencyError(f"keyless verification needs sigstore-python (pip install "
                              f"sigstore; {exc})") from None
    if not hasattr(models, "ClientTrustConfig") or not hasattr(models, "TrustedRoot"):
        raise DependencyError(f"keyless verification needs sigstore-python 4 or later (found "
                              f"{getattr(sigstore, '__version__', '?')}; pip install -U sigstore)")
    return models, errors, Verifier, policy


def _read_trust_file(path, what):
    """(bytes, mediaType) of a trust root or trust config file, checked to be a JSON object."""
    from ..formats.bundle import load_json

    path = os.fspath(path)
    try:  # regular files only: a FIFO would block the open, a device never end
        data = fileio.read_input(path, what, limit=MAX_TRUST_FILE_BYTES)
    except FileNotFoundError:
        raise FormatError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise FormatError(f"{what} {path}: {exc.strerror}") from None
    doc = load_json(data, f"{what} {path}")
    if not isinstance(doc, dict):
        raise FormatError(f"{what} {path}: not a JSON object")
    return data, str(doc.get("mediaType", ""))


def load_trusted_root(trusted_root=None, trust_config=None):
    """sigstore-python's TrustedRoot from exactly one of `trusted_root` (a Sigstore
    trusted_root.json) and `trust_config` (a client trust config, whose trustedRoot is used):
    paths, or a sigstore TrustedRoot / ClientTrustConfig already loaded. FormatError for a
    missing, unreadable or malformed file; never a download."""
    if trusted_root is None and trust_config is None:
        raise FormatError("keyless verification needs trust material: give trusted_root (a "
                          "Sigstore trusted_root.json) or trust_config (a client trust config); "
                          "Sentry verifies offline and fetches nothing")
    if trusted_root is not None and trust_config is not None:
        raise FormatError("give trusted_root or trust_config, not both")
    models, _, _, _ = _sigstore()
    if isinstance(trusted_root, models.TrustedRoot):
        return trusted_root
    if isinstance(trust_config, models.ClientTrustConfig):
        return trust_config.trusted_root
    if trusted_root is not None:
        what, expected, other = "trusted root", TRUSTED_ROOT_MEDIA_PREFIX, TRUST_CONFIG_MEDIA_PREFIX
        path = trusted_root
    else:
        what, expected, other = "trust config", TRUST_CONFIG_MEDIA_PREFIX, TRUSTED_ROOT_MEDIA_PREFIX
        path = trust_config
    data, media_type = _read_trust_file(path, what)
    if media_type.startswith(other):
        swap = "trust config" if what == "trusted root" else "trusted root"
        raise FormatError(f"{what} {os.fspath(path)}: this is a Sigstore {swap} "
                          f"(mediaType {media_type!r}); give it as the {swap}")
    if not media_type.startswith(expected):
        raise FormatError(f"{what} {os.fspath(path)}: mediaType {media_type!r} is not a Sigstore "
                          f"{what} ({expected}...)")
    try:
        if trusted_root is not None:
            # From the bytes checked above (TrustedRoot.from_file would read the path again).
            from sigstore_models.trustroot import v1 as trustroot_v1

            return models.TrustedRoot(trustroot_v1.TrustedRoot.from_json(data))
        return models.ClientTrustConfig.from_json(data.decode("utf-8")).trusted_root
    except Exception as exc:  # pydantic's and sigstore's errors: malformed trust material
        raise FormatError(f"{what} {os.fspath(path)}: not a valid Sigstore {what}: "
                          f"{_one_line(exc)}") from None


@dataclasses.dataclass(frozen=True)
class KeylessPolicy:
    """Who must have signed (the certificate's identity and OIDC issuer), and the trust root."""

    identity: str
    identity_provider: str
    trusted_root: object  # sigstore.models.TrustedRoot

    @classmethod
    def load(cls, identity, identity_provider, *, trusted_root=None, trust_config=None):
        if not isinstance(identity, str) or not identity:
            raise OptionError(Option("identity"), " must be a non-empty string (the signer's "
                              "e-mail address or URI, as in the certificate's SAN)")
        if not isinstance(identity_provider, str) or not identity_provider:
            raise OptionError(Option("identity_provider"), " must be a non-empty string (the "
                              "OIDC issuer URL, e.g. https://accounts.google.com)")
        return cls(identity, identity_provider, load_trusted_root(trusted_root, trust_config))


def _one_line(exc, limit=300):
    text = " ".join(str(exc).split()) or type(exc).__name__
    # sigstore-python's inclusion-proof errors append the whole proof after ": expected".
    text = text.split(": expected log_index=")[0]
    return text if len(text) <= limit else text[:limit] + "..."


def _what_failed(message):
    for words, check in _CHECKS:
        if words in message:
            return check
    return "Sigstore verification"


def verify_bundle(data, source, policy):
    """Verifies the keyless bundle's JSON bytes with sigstore-python against `policy`
    (KeylessPolicy). Returns (payload type, payload bytes) of the DSSE envelope. Raises
    VerificationError naming the failed check (identity, OIDC issuer, certificate chain and
    validity, SCT, Rekor log entry, inclusion proof, checkpoint, timestamps, signature)."""
    models, _, Verifier, sigstore_policy = _sigstore()
    try:
        bundle = models.Bundle.from_json(data)
    except models.InvalidBundle as exc:  # well-formed JSON, but not what keyless needs
        message = _one_line(exc)
        raise VerificationError(f"{source}: keyless signature rejected [{_what_failed(message)}]: "
                                f"{message}") from None
    except Exception as exc:
        raise FormatError(f"{source}: not a Sigstore bundle: {_one_line(exc)}") from None
    try:
        verifier = Verifier(trusted_root=policy.trusted_root)
        identity = sigstore_policy.Identity(identity=policy.identity,
                                            issuer=policy.identity_provider)
        return verifier.verify_dsse(bundle, identity)
    except Exception as exc:  # any failure inside sigstore-python means: not verified
        message = _one_line(exc)
        raise VerificationError(f"{source}: keyless signature rejected [{_what_failed(message)}]: "
                                f"{message}") from None
