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
import struct

from ..errors import FormatError
from ..io.file_reader import open_input

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

_TENSOR_KEYS = {"dtype", "shape", "data_offsets"}


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


def _no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise FormatError(f"duplicate key '{key}'")
        obj[key] = value
    return obj


def _reject_constant(name):
    raise FormatError(f"{name} is not valid JSON")


def parse_header(header_bytes, data_size, source="safetensors header"):
    """Validates the JSON header of a file whose data region has ``data_size`` bytes. Returns
    (entries with offsets relative to the data region, metadata)."""
    import json

    def fail(problem, tensor=None):
        where = f"{source}: tensor '{tensor}': " if tensor is not None else f"{source}: "
        raise FormatError(where + problem)

    try:
        text = bytes(header_bytes).decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"header is not UTF-8 ({exc})")
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except FormatError as exc:
        fail(f"header is not valid JSON: {exc}")
    except (ValueError, RecursionError) as exc:
        fail(f"header is not valid JSON: {exc}")
    if not isinstance(doc, dict):
        fail(f"header must be a JSON object, got {type(doc).__name__}")

    metadata = {}
    entries = []
    for name, info in doc.items():
        if name == "__metadata__":
            if info is None:  # the safetensors package accepts null
                continue
            if not isinstance(info, dict):
                fail(f"__metadata__ must be an object of strings, got {type(info).__name__}")
            for k, v in info.items():
                if not isinstance(v, str):
                    fail(f"__metadata__['{k}'] must be a string, got {type(v).__name__}")
            metadata = dict(info)
            continue
        if not name:
            fail("empty tensor name")
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            fail(f"tensor name {name!r} is not valid Unicode")
        if not isinstance(info, dict):
            fail(f"entry must be an object, got {type(info).__name__}", name)
        missing = sorted(_TENSOR_KEYS - set(info))
        if missing:
            fail(f"missing {', '.join(missing)}", name)
        unknown = sorted(set(info) - _TENSOR_KEYS)
        if unknown:
            fail(f"unknown field(s) {', '.join(unknown)}", name)
        dtype = info["dtype"]
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            fail(f"unknown dtype {dtype!r}", name)
        shape = info["shape"]
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            fail(f"shape must be a list of non-negative integers, got {shape!r}", name)
        offsets = info["data_offsets"]
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(_is_int(o) and o >= 0 for o in offsets)):
            fail(f"data_offsets must be [begin, end] non-negative integers, got {offsets!r}", name)
        begin, end = offsets
        if begin > end:
            fail(f"data_offsets [{begin}, {end}]: begin is after end", name)
        if end > data_size:
            fail(f"data_offsets [{begin}, {end}] run past the data region ({data_size} bytes)",
                 name)
        try:
            expected = byte_length(dtype, shape)
        except FormatError as exc:
            fail(str(exc), name)
        if end - begin != expected:
            fail(f"{end - begin} bytes in data_offsets, but {dtype} {shape} takes {expected}", name)
        entries.append(TensorEntry(name, dtype, tuple(shape), begin, end - begin))

    # The tensors must tile the data region: sorted by offset, each starts where the last ended.
    entries.sort(key=lambda e: (e.offset, e.length, e.name))
    position, previous = 0, None
    for e in entries:
        if e.offset < position:
            fail(f"overlaps tensor '{previous}' (starts at {e.offset}, '{previous}' ends at "
                 f"{position})", e.name)
        if e.offset > position:
            fail(f"{e.offset - position} bytes between the previous tensor and this one are not "
                 "covered by any tensor", e.name)
        position = e.offset + e.length
        previous = e.name
    if position != data_size:
        fail(f"the data region has {data_size - position} bytes after the last tensor that no "
             "tensor covers")
    return entries, metadata


def _pread_exact(fd, n, offset, path):
    data = b""
    while len(data) < n:
        chunk = os.pread(fd, n - len(data), offset + len(data))
        if not chunk:
            raise FormatError(f"{path}: the file changed while it was read: it ended at byte "
                              f"{offset + len(data)} while its header was read")
        data += chunk
    return data


def read_header(path, fd=None):
    """Reads and validates a safetensors file's header (not its data): through ``fd`` (a
    descriptor open on ``path``) when given, else by opening ``path``. The header's bytes,
    length prefix included, are kept as ``prefix``: a reader of the data checks that the file
    still starts with them (sentry/file_reader.py)."""
    path = os.fspath(path)
    if fd is not None:
        return _read_header_from(path, fd)
    fd, _ = open_input(path, "safetensors file")
    try:
        return _read_header_from(path, fd)
    finally:
        os.close(fd)


def _read_header_from(path, fd):
    size = os.fstat(fd).st_size
    if size < 8:
        raise FormatError(f"{path}: {size} bytes is too short for a safetensors file")
    (n,) = struct.unpack("<Q", _pread_exact(fd, 8, 0, path))
    if n > MAX_HEADER_SIZE:
        raise FormatError(f"{path}: header length {n} is larger than the "
                          f"{MAX_HEADER_SIZE}-byte limit")
    if n > size - 8:
        raise FormatError(f"{path}: header length {n} runs past the end of the file "
                          f"({size} bytes)")
    header = _pread_exact(fd, n, 8, path)
    data_start = 8 + n
    entries, metadata = parse_header(header, size - data_start, source=path)
    entries = [dataclasses.replace(e, offset=e.offset + data_start) for e in entries]
    return SafetensorsHeader(path, entries, metadata, data_start, size,
                             prefix=struct.pack("<Q", n) + header)
