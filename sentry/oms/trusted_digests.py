"""Trusted tensor digests, from a signature or given directly: what IntegrityGuard and the
distributed checks compare against.

A signature is opened and checked once (signing.expected_table, the C++ reader: key or
certificate chain, then the statement), and only its tensor listing is kept. Nothing unsigned
is trusted: a bad signature raises VerificationError here, before any digest is used.
"""
import dataclasses
import os

import torch

from sentry_ops import ALGORITHMS

from ..errors import FormatError


@dataclasses.dataclass
class Expected:
    """Digests to compare with: name -> 32 raw bytes, and, from a signature, name ->
    (safetensors dtype name, shape) of the signed tensors (None for bare digests)."""

    algorithm: str
    digests: dict
    layouts: dict = None
    source: str = "expected digests"


def _raw_digest(name, value):
    if type(value) is bytes and len(value) == 32:  # the common case, first
        return value
    if isinstance(value, str):
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b""
    elif isinstance(value, torch.Tensor):
        if value.dtype != torch.uint8 or value.numel() != 32:
            raise FormatError(f"expected digest of '{name}': a uint8 tensor of 32 elements, got "
                              f"{value.dtype} {list(value.shape)}")
        raw = bytes(value.detach().cpu().reshape(-1).tolist())
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    else:
        raise FormatError(f"expected digest of '{name}': {type(value).__name__} is not hex, "
                          "bytes or a uint8 tensor")
    if len(raw) != 32:
        raise FormatError(f"expected digest of '{name}' is not 32 bytes (64 hex characters)")
    return raw


def resolve(expected, *, public_key=None, certificate_chain=None, algorithm=None):
    """Expected from a signature path (with public_key or certificate_chain), a dict
    {name: hex | bytes | uint8 [32] tensor} (algorithm defaults to blake3), or an Expected."""
    if isinstance(expected, Expected):
        got = expected
    elif isinstance(expected, (str, os.PathLike)):
        from .signing import expected_table, trust_from

        path = os.fspath(expected)
        hash_type, rows = expected_table(path, trust_from(public_key, certificate_chain))
        got = Expected(hash_type, {n: digest for n, digest, _, _ in rows},
                       {n: (dtype, shape) for n, _, dtype, shape in rows}, path)
    elif isinstance(expected, dict):
        digests = {}
        for name, value in expected.items():
            if not isinstance(name, str):
                raise FormatError(f"expected digests: key {name!r} is not a tensor name")
            digests[name] = _raw_digest(name, value)
        got = Expected(algorithm or "blake3", digests)
    else:
        raise FormatError(f"expected: a signature path, a dict of digests or an Expected, got "
                          f"{type(expected).__name__}")
    if algorithm is not None and algorithm != got.algorithm:
        raise FormatError(f"{got.source}: digests are {got.algorithm}, not {algorithm}")
    if got.algorithm not in ALGORITHMS:
        raise FormatError(f"unknown tensor algorithm '{got.algorithm}'; use one of {ALGORITHMS}")
    return got
