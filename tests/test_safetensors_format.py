"""The safetensors header reader (sentry.safetensors_format): the same tensors, dtypes, shapes
and bytes as the `safetensors` package, and every malformed header refused with the file and
the tensor named."""
import json
import struct

import pytest
import torch

from sentry import safetensors_format as S
from sentry.errors import FormatError

safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402


def _raw(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _random(dtype, shape, gen):
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    if dtype.is_floating_point or dtype.is_complex:
        if dtype.itemsize == 1:  # float8 kinds: random bit patterns
            return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8).view(dtype)
        return torch.randn(shape, generator=gen, dtype=torch.float64 if dtype.is_floating_point
                           else torch.complex128).to(dtype)
    info = torch.iinfo(dtype)
    return torch.randint(max(info.min, -2**62), min(info.max, 2**62), shape, generator=gen,
                         dtype=torch.int64).to(dtype)


DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.int16,
          torch.int32, torch.int64, torch.uint8, torch.uint16, torch.uint32, torch.uint64,
          torch.bool, torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz,
          torch.float8_e5m2fnuz, torch.complex64]
SHAPES = [(), (0,), (1,), (7,), (3, 5), (2, 0, 4), (2, 3, 4, 1), (1025,)]


def test_matches_the_safetensors_package(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for i, dtype in enumerate(DTYPES):
        for j, shape in enumerate(SHAPES):
            tensors[f"layer.{i}.{j}.{str(dtype)[6:]}"] = _random(dtype, shape, gen)
    path = tmp_path / "model.safetensors"
    save_file(tensors, path, metadata={"format": "pt", "note": "h\u00e9"})
    header = S.read_header(path)
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    assert header.data_start == 8 + n and header.file_size == len(raw)
    assert header.metadata == {"format": "pt", "note": "h\u00e9"}
    assert sorted(e.name for e in header.entries) == sorted(tensors)
    # file order, tiling the data region
    assert [e.offset for e in header.entries] == sorted(e.offset for e in header.entries)
    assert header.entries[0].offset == header.data_start
    assert header.entries[-1].offset + header.entries[-1].length == len(raw)
    loaded = load_file(path)
    with safe_open(path, "pt") as f:
        for e in header.entries:
            view = f.get_slice(e.name)
            assert e.dtype == view.get_dtype()
            assert list(e.shape) == view.get_shape() == list(tensors[e.name].shape)
            assert S.torch_dtype_of(e.dtype) == tensors[e.name].dtype
            assert raw[e.offset:e.offset + e.length] == _raw(loaded[e.name]) == _raw(tensors[e.name])
    assert header.by_name()["layer.0.0.float32"].shape == ()


def test_empty_file_and_metadata_only(tmp_path):
    path = tmp_path / "empty.safetensors"
    save_file({}, path)
    h = S.read_header(path)
    assert h.entries == [] and h.data_start == h.file_size
    save_file({}, path, metadata={"a": "b"})
    assert S.read_header(path).metadata == {"a": "b"}


def test_dtype_maps_agree_with_safetensors():
    from safetensors.torch import _TYPES

    for name, dtype in _TYPES.items():
        assert S.safetensors_dtype_name(dtype) == name
        assert S.torch_dtype_of(name) == dtype
    assert S.safetensors_dtype_name(torch.float8_e8m0fnu) == "F8_E8M0"
    assert set(S.DTYPES) == set(S.DTYPE_BITS)
    with pytest.raises(FormatError, match="F4 has no torch dtype"):
        S.torch_dtype_of("F4")
    with pytest.raises(FormatError, match="unknown safetensors dtype 'float32'"):
        S.torch_dtype_of("float32")
    with pytest.raises(FormatError, match="complex128 has no safetensors dtype name"):
        S.safetensors_dtype_name(torch.complex128)


def test_byte_length():
    assert S.byte_length("F32", [2, 3]) == 24
    assert S.byte_length("BF16", []) == 2
    assert S.byte_length("I64", [4, 0]) == 0
    assert S.byte_length("F4", [2]) == 1 and S.byte_length("F6_E2M3", [4]) == 3
    with pytest.raises(FormatError, match="byte boundary"):
        S.byte_length("F4", [3])
    with pytest.raises(FormatError, match="non-negative"):
        S.byte_length("F32", [-1])


def _write(path, header, data=b"", length=None):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h) if length is None else length) + h + data)
    return path


def _t(dtype="U8", shape=(2,), offsets=(0, 2)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


GOOD = {"__metadata__": {"k": "v"}, "a": _t(offsets=(0, 2)), "b": _t("F32", (1,), (2, 6))}
BAD_FILES = [
    # (id, header, data, length override, message, the safetensors package refuses it too)
    ("too short", None, b"", None, r"too short for a safetensors file", True),
    ("oversized header length", b"{}", b"", 100_000_001, r"header length 100000001 is larger", True),
    ("header past EOF", b"{}", b"", 50, r"header length 50 runs past the end of the file", True),
    ("invalid JSON", b'{"a": ', b"", None, r"header is not valid JSON", True),
    ("not UTF-8", b'{"\xff": 1}', b"", None, r"header is not UTF-8", True),
    ("not an object", b"[1, 2]", b"", None, r"header must be a JSON object", True),
    ("NaN", b'{"__metadata__": {"a": NaN}}', b"", None, r"NaN is not valid JSON", True),
    ("duplicate keys", b'{"a": %s, "a": %s}' % (json.dumps(_t()).encode(), json.dumps(_t()).encode()),
     b"ab", None, r"duplicate key 'a'", False),
    ("metadata not dict", {"__metadata__": ["x"]}, b"", None, r"__metadata__ must be an object", True),
    ("metadata value", {"__metadata__": {"k": 1}}, b"", None, r"__metadata__\['k'\] must be a str", True),
    ("entry not object", {"a": [1]}, b"", None, r"tensor 'a': entry must be an object", True),
    ("missing dtype", {"a": {"shape": [1], "data_offsets": [0, 1]}}, b"x", None,
     r"tensor 'a': missing dtype", True),
    ("unknown field", {"a": dict(_t(), extra=1)}, b"ab", None, r"tensor 'a': unknown field", False),
    ("unknown dtype", {"a": _t("F128")}, b"ab", None, r"tensor 'a': unknown dtype 'F128'", True),
    ("negative shape", {"a": _t(shape=(-2,))}, b"ab", None, r"tensor 'a': shape must be", True),
    ("float shape", {"a": _t(shape=(2.0,))}, b"ab", None, r"tensor 'a': shape must be", True),
    ("bool shape", {"a": _t(shape=(True, 2))}, b"ab", None, r"tensor 'a': shape must be", True),
    ("offsets length", {"a": _t(offsets=(0, 1, 2))}, b"ab", None, r"tensor 'a': data_offsets must", True),
    ("offsets negative", {"a": _t(offsets=(-1, 1))}, b"ab", None, r"tensor 'a': data_offsets must", True),
    ("offsets reversed", {"a": _t(offsets=(2, 0))}, b"ab", None, r"tensor 'a': .*begin is after end", True),
    ("offsets out of range", {"a": _t(offsets=(0, 2))}, b"a", None,
     r"tensor 'a': data_offsets \[0, 2\] run past the data region \(1 bytes\)", True),
    ("length mismatch", {"a": _t(shape=(3,))}, b"ab", None,
     r"tensor 'a': 2 bytes in data_offsets, but U8 \[3\] takes 3", True),
    ("overlap", {"a": _t(offsets=(0, 2)), "b": _t(offsets=(1, 3))}, b"abc", None,
     r"tensor 'b': overlaps tensor 'a'", True),
    ("hole", {"a": _t("U8", (1,), (0, 1)), "b": _t("U8", (1,), (2, 3))}, b"abc", None,
     r"tensor 'b': 1 bytes between the previous tensor and this one", True),
    ("hole at start", {"a": _t("U8", (1,), (1, 2))}, b"ab", None, r"tensor 'a': 1 bytes between", True),
    ("trailing bytes", {"a": _t()}, b"abc", None, r"1 bytes after the last tensor", True),
    ("data without tensors", {}, b"x", None, r"1 bytes after the last tensor", True),
    ("sub-byte", {"a": _t("F4", (3,), (0, 2))}, b"ab", None, r"tensor 'a': .*byte boundary", True),
    ("empty name", {"": _t()}, b"ab", None, r"empty tensor name", False),
]


@pytest.mark.parametrize("header,data,length,message,package_refuses",
                         [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_files_refused(tmp_path, header, data, length, message, package_refuses):
    path = tmp_path / "bad.safetensors"
    if header is None:
        path.write_bytes(b"\x01\x00\x00")
    else:
        _write(path, header, data, length)
    with pytest.raises(FormatError, match=r"bad\.safetensors: .*" + message):
        S.read_header(path)
    if package_refuses:  # our bad files are bad for the reference parser too
        with pytest.raises(Exception):
            with safe_open(path, "np"):
                pass


def test_hand_written_good_files(tmp_path):
    path = _write(tmp_path / "ok.safetensors", GOOD, b"ab" + struct.pack("<f", 1.5))
    h = S.read_header(path)
    assert [(e.name, e.dtype, e.shape, e.offset - h.data_start, e.length) for e in h.entries] == [
        ("a", "U8", (2,), 0, 2), ("b", "F32", (1,), 2, 4)]
    # empty tensors may sit anywhere, several at one offset; null metadata as the package allows
    header = {"__metadata__": None, "e1": _t("F32", (0, 3), (0, 0)), "e2": _t("U8", (0,), (0, 0)),
              "a": _t("U8", (1,), (0, 1)), "z": _t("I64", (0,), (1, 1))}
    h = S.read_header(_write(tmp_path / "empties.safetensors", header, b"x"))
    assert [e.name for e in h.entries] == ["e1", "e2", "a", "z"] and h.metadata == {}
    with safe_open(tmp_path / "empties.safetensors", "np") as f:
        assert sorted(f.keys()) == ["a", "e1", "e2", "z"]
    # leading whitespace and the padding the package writes after the JSON
    h = S.read_header(_write(tmp_path / "ws.safetensors", b"  " + json.dumps(GOOD).encode() + b"   ",
                             b"ab" + struct.pack("<f", 1.5)))
    assert len(h.entries) == 2
