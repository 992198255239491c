"""Batched ECDSA verification: many signatures in one call of
``torch.ops.sentry.ecdsa_p256_verify`` (CPU: OpenSSL on every core; CUDA: one GPU thread each).

- ``verify_batch(public_keys, digests, signatures, device=...)``: P-256 / SHA-256 rows given as
  Python objects (keys as PublicKey objects, PEM paths or text, raw x || y; signatures as DER or
  raw r || s) turned into the op's tensors. Returns a bool tensor.
- ``verify_messages(public_keys, messages, signatures)``: what a list of bundles needs: keys on
  any supported curve, whole messages, DER signatures. P-256 rows go through the op in one batch,
  P-384 and P-521 rows through ``PublicKey.verify``. Returns a list of bools.

Everything fails closed per row: a malformed or non-strict DER signature, a key that does not
load, is not on P-256 or not on the curve, r or s out of range: that row is False, the others
are still checked. Wrong argument types or lengths (a digest that is not 32 bytes, lists of
different lengths) raise.
"""
from __future__ import annotations

import hashlib
import os

import torch

from sentry_ops import _C, ecdsa_p256_verify

from .keys import PublicKey
from ..errors import FormatError

KEY_BYTES, DIGEST_BYTES, SIGNATURE_BYTES = 64, 32, 64
SIGNATURE_FORMATS = ("der", "p1363")
_ZERO_KEY = bytes(KEY_BYTES)  # not on the curve: the op returns False for it


def _as_bytes(value, what):
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes, not {type(value).__name__}")


def _raw_key(key, loaded):
    """x || y of one P-256 key, or None when it does not load or is on another curve. `loaded`
    caches PEM files and texts already read in this call."""
    if isinstance(key, PublicKey):
        return key.raw_xy() if key.curve == "P-256" else None
    numbers = getattr(key, "public_numbers", None)  # a cryptography EllipticCurvePublicKey
    if callable(numbers):
        n = numbers()
        if getattr(n.curve, "name", None) != "secp256r1":
            return None
        return n.x.to_bytes(32, "big") + n.y.to_bytes(32, "big")
    if isinstance(key, (bytes, bytearray, memoryview)):
        key = bytes(key)
        if not key.lstrip().startswith(b"-----BEGIN "):
            if len(key) == KEY_BYTES:
                return key
            if len(key) == KEY_BYTES + 1 and key[0] == 4:  # SEC 1 uncompressed point
                return key[1:]
            return None
    elif not isinstance(key, (str, os.PathLike)):
        raise TypeError("a public key must be a PublicKey, a PEM path or text, or raw bytes, "
                        f"not {type(key).__name__}")
    cache_key = os.fspath(key) if isinstance(key, (str, os.PathLike)) else key
    if cache_key not in loaded:
        try:
            loaded[cache_key] = _raw_key(PublicKey.load(key), loaded)
        except FormatError:
            loaded[cache_key] = None
    return loaded[cache_key]


def public_key_rows(public_keys):
    """(uint8 [N, 64] tensor of x || y, [row usable]) for the op; an unusable row is zeros."""
    loaded, rows, ok = {}, [], []
    for key in public_keys:
        raw = _raw_key(key, loaded)
        ok.append(raw is not None)
        rows.append(raw if raw is not None else _ZERO_KEY)
    return _rows_tensor(rows, KEY_BYTES), ok


def signature_rows(signatures, signature_format="der"):
    """(uint8 [N, 64] tensor of r || s, [row usable]). DER must be strict (the rule
    ``PublicKey.verify`` applies); P1363 must be exactly 64 bytes. Unusable rows are zeros
    (r = 0, which the op rejects)."""
    if signature_format not in SIGNATURE_FORMATS:
        raise ValueError(f"signature_format must be one of {SIGNATURE_FORMATS}, "
                         f"not {signature_format!r}")
    sigs = [_as_bytes(s, f"signature {i}") for i, s in enumerate(signatures)]
    if signature_format == "der":
        raw, ok = _C.crypto.der_signatures_to_raw(sigs, "P-256")
        return _rows_tensor([raw], SIGNATURE_BYTES, count=len(sigs)), list(ok)
    ok = [len(s) == SIGNATURE_BYTES for s in sigs]
    rows = [s if good else bytes(SIGNATURE_BYTES) for s, good in zip(sigs, ok)]
    return _rows_tensor(rows, SIGNATURE_BYTES), ok


def digest_rows(digests):
    """uint8 [N, 32] from 32-byte digests (a list of bytes, or such a tensor as it is)."""
    if isinstance(digests, torch.Tensor):
        if digests.dtype != torch.uint8 or digests.dim() != 2 or digests.shape[1] != DIGEST_BYTES:
            raise ValueError(f"digests must be a uint8 [N, {DIGEST_BYTES}] tensor, got "
                             f"{digests.dtype} {list(digests.shape)}")
        return digests
    rows = [_as_bytes(d, f"digest {i}") for i, d in enumerate(digests)]
    for i, d in enumerate(rows):
        if len(d) != DIGEST_BYTES:
            raise ValueError(f"digest {i} has {len(d)} bytes; P-256 verification takes SHA-256 "
                             f"digests of {DIGEST_BYTES} bytes")
    return _rows_tensor(rows, DIGEST_BYTES)


def _rows_tensor(chunks, width, count=None):
    data = b"".join(chunks)
    count = len(chunks) if count is None else count
    if count == 0:
        return torch.empty((0, width), dtype=torch.uint8)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(count, width)


def verify_batch(public_keys, digests, signatures, *, signature_format="der", device="cpu"):
    """bool [N] tensor on `device`: signature i is a valid ECDSA P-256 signature of SHA-256
    digest i under public key i. See the module docstring for the accepted forms; every bad row
    is False."""
    keys, key_ok = public_key_rows(public_keys)
    sigs, sig_ok = signature_rows(signatures, signature_format)
    dig = digest_rows(digests)
    if not keys.shape[0] == sigs.shape[0] == dig.shape[0]:
        raise ValueError(f"{keys.shape[0]} public keys, {dig.shape[0]} digests and "
                         f"{sigs.shape[0]} signatures: give one of each per row")
    device = torch.device(device)
    usable = torch.tensor([a and b for a, b in zip(key_ok, sig_ok)], dtype=torch.bool)
    result = ecdsa_p256_verify(keys.to(device), dig.to(device), sigs.to(device))
    return result & usable.to(device)


def verify_messages(public_keys, messages, signatures, *, device="cpu"):
    """[bool] per row: DER signature i is valid for message i under ``public_keys[i]`` (PublicKey
    objects, any supported curve). P-256 rows are hashed with SHA-256 and checked in one
    ``verify_batch`` call; P-384/P-521 rows one by one with ``PublicKey.verify``."""
    keys, msgs, sigs = list(public_keys), list(messages), list(signatures)
    if not len(keys) == len(msgs) == len(sigs):
        raise ValueError(f"{len(keys)} public keys, {len(msgs)} messages and {len(sigs)} "
                         "signatures: give one of each per row")
    for i, k in enumerate(keys):
        if not isinstance(k, PublicKey):
            raise TypeError(f"public key {i} must be a PublicKey, not {type(k).__name__}")
    result = [False] * len(keys)
    p256 = [i for i, k in enumerate(keys) if k.curve == "P-256"]
    if p256:
        digests = [hashlib.sha256(_as_bytes(msgs[i], f"message {i}")).digest() for i in p256]
        ok = verify_batch([keys[i] for i in p256], digests, [sigs[i] for i in p256],
                          device=device)
        for i, good in zip(p256, ok.cpu().tolist()):
            result[i] = bool(good)
    for i, k in enumerate(keys):
        if k.curve != "P-256":
            result[i] = k.verify(msgs[i], sigs[i])
    return result


__all__ = ["verify_batch", "verify_messages", "public_key_rows", "signature_rows", "digest_rows",
           "SIGNATURE_FORMATS"]
