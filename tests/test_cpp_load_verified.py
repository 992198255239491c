"""The C++ sentry::load_verified through its binding (sentry_ops._C.bundle.load_verified) and
through sentry.load_verified (a shell over it since the orchestration moved to C++): the same
tensors as were written, byte for byte, and the expected refusals (class, message, lists) for
tampered, missing and unexpected files, a header that no longer matches the signed table, and
names in several files. Signatures come from Sentry and from the reference tool (plain files
and shards bundles). The C++ listing and header reader are checked against the reference tool
and the safetensors package in test_model_files.py and test_safetensors_format.py (the Python
functions call them)."""
import os
import shutil

import pytest
import torch
from test_loader import _model, _same, _sign

import sentry
from sentry import bundle as bundle_format
from sentry.errors import FormatError, VerificationError
from sentry.signatures.trust import native_trust as _native_trust, trust_from
from sentry_ops import _C


def cpp_load(path, signature, public_key, *, device="cpu", dtype=None, files=None,
             ignore_paths=(), threads=0, block_size=64 << 10):
    native, data = _native_trust(trust_from(public_key=public_key), signature)
    with bundle_format.native_errors():
        try:
            state, warnings = _C.bundle.load_verified(
                os.fsencode(path), os.fsencode(signature), native, data, device, dtype, files,
                [os.fsencode(p) for p in ignore_paths], threads, block_size, 512 << 20)
        except _C.io.ReadError as exc:  # not expected: the C++ function maps it itself
            raise AssertionError(f"ReadError escaped: {exc}") from None
    return dict(state), warnings


def outcome(call):
    try:
        return "ok", call()
    except (FormatError, VerificationError) as exc:
        return type(exc).__name__, (str(exc), getattr(exc, "changed", None),
                                    getattr(exc, "missing", None), getattr(exc, "unexpected", None))


@pytest.fixture(params=["sentry", "reference files", "reference shards"])
def signed(request, tmp_path, keys):
    d, tensors = _model(tmp_path)
    sig = str(tmp_path / "model.sig")
    _sign(request.param, d, sig, keys["alice"][0])
    return d, sig, tensors, keys["alice"][1]


def test_same_tensors_as_python_and_as_written(signed):
    d, sig, tensors, pub = signed
    ours, warnings = cpp_load(str(d), sig, pub)
    python = sentry.load_verified(str(d), sig, public_key=pub, device="cpu")
    assert list(ours) == sorted(tensors) == list(python) and warnings == []
    for name, t in tensors.items():
        assert _same(ours[name], t) and _same(python[name], t), name


def test_dtype_and_file_subset(signed):
    d, sig, tensors, pub = signed
    first = "model-00001-of-00002.safetensors"
    ours, _ = cpp_load(str(d), sig, pub, dtype=torch.bfloat16, files=[first])
    python = sentry.load_verified(str(d), sig, public_key=pub, device="cpu",
                                  dtype=torch.bfloat16, file=first)
    assert list(ours) == list(python) == sorted(["odd.bytes", "big.weight", "steps", "empty",
                                                 "mask", "w.bf16"])
    for name in ours:
        assert _same(ours[name], python[name]), name
    assert ours["big.weight"].dtype == torch.bfloat16 and ours["steps"].dtype == torch.int64
    assert outcome(lambda: cpp_load(str(d), sig, pub, files=["nope.bin"])) == outcome(
        lambda: sentry.load_verified(str(d), sig, public_key=pub, device="cpu", file="nope.bin"))


def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


TAMPERS = {
    "flipped byte": lambda d: flip_last_byte(d / "model-00002-of-00002.safetensors"),
    "config changed": lambda d: (d / "config.json").write_text('{"hidden": 34}'),
    "file missing": lambda d: os.remove(d / "config.json"),
    "file added": lambda d: (d / "extra.txt").write_text("x"),
    "header rewritten": lambda d: shutil.copy(d / "model-00001-of-00002.safetensors",
                                              d / "model-00002-of-00002.safetensors"),
}


@pytest.mark.parametrize("tamper", TAMPERS)
def test_same_refusals_as_python(signed, tamper):
    d, sig, _, pub = signed
    TAMPERS[tamper](d)
    ours = outcome(lambda: cpp_load(str(d), sig, pub)[0])
    python = outcome(lambda: sentry.load_verified(str(d), sig, public_key=pub, device="cpu"))
    assert ours[0] != "ok" and ours == python
    if tamper in ("flipped byte", "header rewritten", "config changed"):
        assert "model-0000" in ours[1][0] or "config.json" in ours[1][0]


def test_tensors_of_one_name_in_two_files(tmp_path, keys):
    from safetensors.torch import save_file

    d = tmp_path / "ckpts"
    d.mkdir()
    save_file({"w": torch.zeros(3)}, str(d / "a.safetensors"))
    save_file({"w": torch.ones(3)}, str(d / "b.safetensors"))
    sig = str(tmp_path / "m.sig")
    sentry.sign_files(str(d), keys["alice"][0], sig)
    pub = keys["alice"][1]
    ours = outcome(lambda: cpp_load(str(d), sig, pub))
    assert ours == outcome(lambda: sentry.load_verified(str(d), sig, public_key=pub, device="cpu"))
    assert ours[0] == "FormatError" and "'w' (a.safetensors and b.safetensors)" in ours[1][0]
    state, _ = cpp_load(str(d), sig, pub, files=["b.safetensors"])
    assert torch.equal(state["w"], torch.ones(3))


def test_unreadable_header_without_signed_tensors_is_a_plain_file(tmp_path, keys):
    from safetensors.torch import save_file

    d = tmp_path / "m"
    d.mkdir()
    save_file({"a": torch.arange(4)}, str(d / "good.safetensors"))
    (d / "notes.safetensors").write_bytes(b"not a safetensors file")
    sig = str(tmp_path / "m.sig")
    _sign("reference files", d, sig, keys["alice"][0])
    state, warnings = cpp_load(str(d), sig, keys["alice"][1])
    assert list(state) == ["a"] and len(warnings) == 1
    assert "notes.safetensors" in warnings[0] and "checked as a plain file" in warnings[0]
    flip_last_byte(d / "notes.safetensors")
    kind, (message, changed, _, _) = outcome(lambda: cpp_load(str(d), sig, keys["alice"][1]))
    assert kind == "VerificationError" and changed == ["notes.safetensors"]
