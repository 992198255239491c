"""A paranoid reader of safetensors headers (docs/FORMAT.md §7).

A safetensors file is: an unsigned 64-bit little-endian header length N, N bytes of UTF-8 JSON
(``{"__metadata__": {str: str}, NAME: {"dtype", "shape", "data_offsets": [begin, end]}, ...}``),
then the data region, which the tensors must cover exactly (no overlap, no hole, nothing after
the last tensor). Offsets in the header are relative to the data region; read_header returns
absolute file offsets. Only the header is read.

Stricter than the `safetensors` package in a few places, on purpose: duplicate JSON keys,
unknown fields in a tensor's entry and empty tensor names are refused.
"""
import dataclasses
import functools
import os

from ..errors import FormatError

#: The `safetensors` package's limit on the header length.
MAX_HEADER_SIZE = 100_000_000

#: Every dtype safetensors 0.8 knows, with its size in bits (F4/F6 pack several per byte).
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
DTYPES = tuple(DTYPE_BITS)

# safetensors name -> torch dtype attribute. F4 and F6_* have no torch dtype of one element.
_TORCH_NAMES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8",
    "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn", "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "I16": "int16", "U16": "uint16", "F16": "float16", "BF16": "bfloat16",
    "I32": "int32", "U32": "uint32", "F32": "float32",
    "I64": "int64", "U64": "uint64", "F64": "float64", "C64": "complex64",
}

@functools.lru_cache(maxsize=None)
def _torch_maps():
    import torch

    to_torch = {name: getattr(torch, attr) for name, attr in _TORCH_NAMES.items()
                if hasattr(torch, attr)}
    return to_torch, {dt: name for name, dt in to_torch.items()}


def torch_dtype_of(name):
    """The torch dtype of a safetensors dtype name (F32 -> torch.float32, ...)."""
    to_torch, _ = _torch_maps()
    if name not in to_torch:
        if name in DTYPE_BITS:
            raise FormatError(f"safetensors dtype {name} has no torch dtype of one element")
        raise FormatError(f"unknown safetensors dtype {name!r}")
    return to_torch[name]


def safetensors_dtype_name(dtype):
    """The safetensors name of a torch dtype (torch.bfloat16 -> 'BF16', ...)."""
    _, from_torch = _torch_maps()
    if dtype not in from_torch:
        raise FormatError(f"{dtype} has no safetensors dtype name")
    return from_torch[dtype]


def _is_int(value):
    return type(value) is int


def byte_length(dtype, shape):
    """Bytes taken by a tensor of this safetensors dtype and shape."""
    if dtype not in DTYPE_BITS:
        raise FormatError(f"unknown safetensors dtype {dtype!r}")
    numel = 1
    for d in shape:
        if not _is_int(d) or d < 0:
            raise FormatError(f"shape {list(shape)!r}: dimensions must be non-negative integers")
        numel *= d
    bits = numel * DTYPE_BITS[dtype]
    if bits % 8:
        raise FormatError(f"{dtype} {list(shape)}: {numel} elements of {DTYPE_BITS[dtype]} bits "
                          "do not end on a byte boundary")
    return bits // 8


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str  # safetensors name: F32, BF16, I64, U8, BOOL, F8_E4M3, ...
    shape: tuple
    offset: int  # absolute offset of the tensor's data in the file
    length: int  # bytes


@dataclasses.dataclass
class SafetensorsHeader:
    path: str
    entries: list  # TensorEntry, in file order (by offset, then length, then name)
    metadata: dict
    data_start: int  # 8 + N
    file_size: int
    prefix: bytes = b""  # the file's first data_start bytes: length and JSON header

    def by_name(self):
        return {e.name: e for e in self.entries}


def read_header(path, fd=None):
    """Reads and validates a safetensors file's header (not its data): through ``fd`` (a
    descriptor open on ``path``) when given, else by opening ``path`` without blocking (a FIFO
    is a FormatError). The header's bytes, length prefix included, are kept as ``prefix``: a
    reader of the data checks that the file still starts with them (sentry/file_reader.py).
    The checks are the C++ reader's (csrc/bundle/safetensors_header.cpp, strict JSON)."""
    from sentry_ops import _C

    from .bundle import native_errors

    path = os.fspath(path)
    with native_errors():
        entries, metadata, data_start, size, prefix = _C.bundle.read_header(os.fsencode(path), fd)
    return SafetensorsHeader(path, [TensorEntry(*e) for e in entries], metadata, data_start, size,
                             prefix=prefix)
