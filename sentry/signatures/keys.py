"""Keys, signatures and certificate chains for Sentry's signature bundles.

A thin layer over the C++/OpenSSL code in ``sentry_ops._C.crypto`` (csrc/crypto/): ECDSA on
P-256 (SHA-256), P-384 (SHA-384) and P-521 (SHA-512) with DER signatures, the DSSE v1 PAE, and
X.509 chain verification as the OpenSSF Model Signing tool does it.

Errors: malformed or unsupported input (PEM, DER, key type, curve, password) raises
``sentry.errors.FormatError``; a certificate chain that does not verify raises
``sentry.errors.VerificationError``. A bad signature is not an error: ``PublicKey.verify``
returns False.
"""
from __future__ import annotations

import calendar
import contextlib
import datetime
import os

from sentry_ops import _C

from ..errors import FormatError, VerificationError
from ..io.fileio import atomic_write, read_input

#: Key and certificate files larger than this are refused unread.
MAX_PEM_BYTES = 16 * 1024 * 1024

_crypto = _C.crypto

CURVES = ("P-256", "P-384", "P-521")


@contextlib.contextmanager
def _errors(where):
    """Turns the C++ layer's errors into Sentry's, prefixed with `where` (a file, a role)."""
    prefix = f"{where}: " if where else ""
    try:
        yield
    except _crypto.ChainError as exc:  # before CryptoError: it is one
        raise VerificationError(f"{prefix}{exc}") from None
    except _crypto.CryptoError as exc:
        raise FormatError(f"{prefix}{exc}") from None


def _as_bytes(data, what):
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes, not {type(data).__name__}")


def _looks_like_pem(text):
    return text.lstrip().startswith("-----BEGIN ")


def _read_source(source, what):
    """(bytes, where) for a PEM given as bytes/str text or as a path (str or os.PathLike)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), None
    if isinstance(source, str) and _looks_like_pem(source):
        return source.encode("utf-8"), None
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        return read_input(path, what, MAX_PEM_BYTES), f"{what} file {path}"
    raise TypeError(f"{what} must be a path or PEM bytes, not {type(source).__name__}")


def _password_bytes(password):
    if password is None:
        return None
    if isinstance(password, str):
        return password.encode("utf-8")
    return _as_bytes(password, "password")


class PublicKey:
    """An ECDSA public key on P-256, P-384 or P-521."""

    __slots__ = ("_key",)

    def __init__(self, key):
        if not isinstance(key, _crypto.PublicKey):
            raise TypeError("use PublicKey.load(path_or_pem) or PrivateKey.public_key()")
        self._key = key

    @classmethod
    def load(cls, source):
        """From a SubjectPublicKeyInfo PEM: a file path (str or os.PathLike), PEM bytes or
        PEM text. A PublicKey is returned as it is."""
        if isinstance(source, cls):
            return source
        pem, where = _read_source(source, "public key")
        with _errors(where):
            return cls(_crypto.PublicKey.from_pem(pem))

    @property
    def curve(self):
        """'P-256', 'P-384' or 'P-521'."""
        return self._key.curve

    def pem(self):
        """The SubjectPublicKeyInfo PEM bytes (what OpenSSL and Python cryptography write)."""
        return self._key.pem()

    def hint(self):
        """Hex SHA-256 of pem(): a Sigstore bundle's verificationMaterial.publicKey.hint."""
        return self._key.hint()

    def raw_xy(self):
        """x || y, big-endian: 64, 96 or 132 bytes."""
        return self._key.raw_xy()

    def verify(self, data, signature, hash=None):
        """True when `signature` (DER ECDSA) is valid for `data`; False for any bad signature.
        hash: 'SHA-256', 'SHA-384' or 'SHA-512' instead of the curve's own (None)."""
        data = _as_bytes(data, "data")
        signature = _as_bytes(signature, "signature")
        if hash is None:
            return self._key.verify(data, signature)
        with _errors(None):
            return self._key.verify(data, signature, hash)

    def __eq__(self, other):
        return isinstance(other, PublicKey) and self.pem() == other.pem()

    def __hash__(self):
        return hash(self.pem())

    def __repr__(self):
        return f"<sentry.crypto.PublicKey {self.curve} hint={self.hint()[:16]}>"


class PrivateKey:
    """An ECDSA private key on P-256, P-384 or P-521. Its repr shows no key material."""

    __slots__ = ("_key",)

    def __init__(self, key):
        if not isinstance(key, _crypto.PrivateKey):
            raise TypeError("use PrivateKey.load(path_or_pem) or PrivateKey.generate()")
        self._key = key

    @classmethod
    def load(cls, source, password=None):
        """From a PEM (PKCS#8, or traditional "EC PRIVATE KEY"; encrypted ones need `password`,
        str or bytes): a file path, PEM bytes or PEM text. A PrivateKey is returned as it is."""
        if isinstance(source, cls):
            return source
        pem, where = _read_source(source, "private key")
        with _errors(where):
            return cls(_crypto.PrivateKey.from_pem(pem, _password_bytes(password)))

    @classmethod
    def generate(cls, curve="P-256"):
        with _errors(None):
            return cls(_crypto.generate_private_key(curve))

    @property
    def curve(self):
        return self._key.curve

    def public_key(self):
        return PublicKey(self._key.public_key())

    def sign(self, data):
        """DER ECDSA signature of `data` with the curve's hash."""
        data = _as_bytes(data, "data")
        with _errors(None):
            return self._key.sign(data)

    def to_pem(self, password=None):
        """PKCS#8 PEM bytes; encrypted (AES-256-CBC, PBKDF2) when `password` is given."""
        with _errors(None):
            return self._key.to_pem(_password_bytes(password))

    def __repr__(self):
        return f"<sentry.crypto.PrivateKey {self.curve}>"

    def __reduce__(self):
        raise TypeError("a PrivateKey is not picklable; write it with write_private_key()")


def generate_private_key(curve="P-256"):
    return PrivateKey.generate(curve)


def pae(payload_type, payload):
    """DSSE v1 pre-authentication encoding:
    b"DSSEv1 <len(type)> <type> <len(payload)> <payload>" (lengths in bytes, decimal)."""
    if isinstance(payload_type, str):
        payload_type = payload_type.encode("utf-8")
    return _crypto.dsse_pae(_as_bytes(payload_type, "payload_type"), _as_bytes(payload, "payload"))


def _certificates(item, what):
    """DER certificates of one item: DER bytes, PEM bytes/text holding one or more, or the path
    (str or os.PathLike) of a PEM file holding one or more."""
    if isinstance(item, os.PathLike) or (isinstance(item, str) and not _looks_like_pem(item)):
        path = os.fspath(item)
        data = read_input(path, "certificate file", MAX_PEM_BYTES)
        with _errors(f"certificate file {path}"):
            return list(_crypto.certificates_from_pem(data))
    if isinstance(item, str):
        item = item.encode("utf-8")
    item = _as_bytes(item, what)
    if item.lstrip().startswith(b"-----BEGIN "):
        with _errors(what):
            return list(_crypto.certificates_from_pem(item))
    return [item]


def load_certificates(source):
    """DER certificates from one source or a list of them. A source is the path of a PEM
    (bundle) file, PEM bytes or text (one or more certificates), or DER bytes."""
    if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        return _certificates(source, "certificates")
    out = []
    for i, item in enumerate(source):
        out.extend(_certificates(item, f"certificate {i}"))
    return out


def _unix_time(at_time):
    if at_time is None:
        return None
    if isinstance(at_time, datetime.datetime):
        if at_time.tzinfo is None:  # naive: taken as UTC, as cryptography's *_utc fields are
            return calendar.timegm(at_time.timetuple())
        return calendar.timegm(at_time.utctimetuple())
    if isinstance(at_time, bool) or not isinstance(at_time, (int, float)):
        raise TypeError(f"at_time must be a datetime or Unix seconds, not {type(at_time).__name__}")
    return int(at_time)


def verify_certificate_chain(chain, roots, at_time=None):
    """Verify a certificate chain and return the signing certificate's PublicKey.

    chain: certificates, the signing (leaf) certificate first, then intermediates (DER bytes, as
    a bundle's x509CertificateChain holds them; PEM is accepted too). roots: the trust anchors,
    a path to a PEM bundle file, PEM bytes, or a list of paths and PEM/DER bytes. at_time: when the chain must be
    valid (datetime, naive = UTC, or Unix seconds); by default the signing certificate's
    notBefore, as the OpenSSF Model Signing tool does. The signing certificate needs keyUsage
    digitalSignature or extendedKeyUsage codeSigning.

    Raises VerificationError when the chain does not verify, FormatError for malformed input.
    """
    if isinstance(chain, (bytes, bytearray, memoryview, str)):
        raise TypeError("chain must be a list of certificates (leaf first), not one value")
    chain_der = []
    for i, item in enumerate(chain):
        chain_der.extend(_certificates(item, f"certificate {i} of the chain"))
    roots_der = load_certificates(roots)
    with _errors(None):
        return PublicKey(_crypto.verify_certificate_chain(chain_der, roots_der, _unix_time(at_time)))


def certificate_public_key(certificate):
    """The PublicKey of one certificate (DER or PEM bytes), without any chain check."""
    (der,) = _certificates(certificate, "certificate")
    with _errors("certificate"):
        return PublicKey(_crypto.certificate_public_key(der))


def write_private_key(path, key, password=None):
    """Writes `key` (a PrivateKey) as PKCS#8 PEM, encrypted when `password` is given, to `path`
    atomically with mode 0600."""
    if not isinstance(key, PrivateKey):
        raise TypeError(f"key must be a PrivateKey, not {type(key).__name__}")
    atomic_write(path, key.to_pem(password), 0o600)


def write_public_key(path, key):
    """Writes `key` (a PublicKey, or a PrivateKey's public half) as SubjectPublicKeyInfo PEM to
    `path` atomically, with mode 0644."""
    if isinstance(key, PrivateKey):
        key = key.public_key()
    if not isinstance(key, PublicKey):
        raise TypeError(f"key must be a PublicKey, not {type(key).__name__}")
    atomic_write(path, key.pem(), 0o644)


__all__ = [
    "CURVES",
    "PublicKey",
    "PrivateKey",
    "generate_private_key",
    "pae",
    "load_certificates",
    "verify_certificate_chain",
    "write_private_key",
    "write_public_key",
]
