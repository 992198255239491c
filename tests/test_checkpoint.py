"""sentry.checkpoint: signed safetensors checkpoints. The files are read back by the safetensors
package and the signatures by sign_files' own verifier and the reference OpenSSF tool; every
tampering is caught at load, naming the checkpoint and the tensor."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

import sentry
from sentry import bundle, checkpoint, safetensors_format
from sentry.errors import VerificationError

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def _state(device="cpu"):
    g = torch.Generator().manual_seed(3)
    state = {
        "embed.weight": torch.randn(33, 17, generator=g),
        "block.0.w": torch.randn(64, 64, generator=g).to(torch.bfloat16),
        "block.0.b": torch.randn(7, generator=g, dtype=torch.float64),
        "mask": torch.rand(13, generator=g) > 0.5,
        "steps": torch.tensor(12345, dtype=torch.int64),
        "codes": torch.randint(0, 255, (3, 5), generator=g, dtype=torch.uint8),
        "empty": torch.zeros(0, 4),
        "big": torch.randn(300, 129, generator=g),
    }
    return {k: v.to(device) for k, v in state.items()}


def _save(tmp_path, keys, state=None, **kw):
    path = tmp_path / "ckpt.safetensors"
    sig = checkpoint.save(state if state is not None else _state(), path, keys["alice"][0], **kw)
    return str(path), sig


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("algorithm", ["blake3", "sha256-tree"])
def test_round_trip(tmp_path, keys, device, algorithm):
    state = _state(device)
    path, sig = _save(tmp_path, keys, state, algorithm=algorithm)
    assert sig == path + ".sig"
    loaded = checkpoint.load(path, keys["alice"][1], device=device)
    assert list(loaded) == sorted(state)
    for name, t in state.items():
        assert loaded[name].device.type == device
        assert loaded[name].dtype == t.dtype and loaded[name].shape == t.shape
        assert torch.equal(loaded[name], t), name


def test_file_is_standard_safetensors(tmp_path, keys):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    state = _state()
    path, _ = _save(tmp_path, keys, state, metadata={"step": "12"})
    theirs = safetensors_torch.load_file(path)
    assert sorted(theirs) == sorted(state)
    assert all(torch.equal(theirs[n], state[n]) for n in state)
    header = safetensors_format.read_header(path)  # the strict reader: tiles, aligned
    assert header.metadata == {"step": "12"} and header.data_start % 8 == 0
    for e in header.entries:
        assert e.offset % state[e.name].element_size() == 0, e.name


def test_bundle_is_what_sign_files_writes(tmp_path, keys):
    """Same statement as sign_files over the written file: resources, ignore paths and the
    tensor listing (whose digests save() computed before the bytes left the device)."""
    path, sig = _save(tmp_path, keys)
    ours = bundle.parse_statement(bundle.read_bundle(sig).payload)
    other_sig = str(tmp_path / "other.sig")
    sentry.sign_files(path, keys["alice"][0], other_sig)
    theirs = bundle.parse_statement(bundle.read_bundle(other_sig).payload)
    assert ours == theirs
    sentry.verify_files(path, sig, public_key=keys["alice"][1])


def test_reference_tool_verifies_the_file(tmp_path, keys):
    pytest.importorskip("model_signing", reason="the reference model-signing package")
    path, sig = _save(tmp_path, keys)
    exe = shutil.which("model_signing")
    cmd = ([exe] if exe else [sys.executable, "-m", "model_signing"]) + [
        "verify", "key", "--signature", sig, "--public_key", keys["alice"][1], path]
    ok = subprocess.run(cmd, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    assert subprocess.run(cmd, capture_output=True, text=True).returncode != 0


def _flip_in_file(path, name, byte=0):
    entry = safetensors_format.read_header(path).by_name()[name]
    with open(path, "r+b") as f:
        f.seek(entry.offset + byte)
        b = f.read(1)
        f.seek(entry.offset + byte)
        f.write(bytes([b[0] ^ 0x10]))


@pytest.mark.parametrize("name", ["big", "block.0.w", "steps"])
def test_flipped_bit_in_the_file_is_named(tmp_path, keys, name):
    path, _ = _save(tmp_path, keys)
    _flip_in_file(path, name, byte=3)
    with pytest.raises(VerificationError) as info:
        checkpoint.load(path, keys["alice"][1])
    assert info.value.changed == [name]
    assert path in str(info.value) and name in str(info.value)
    with pytest.raises(VerificationError):  # the file digest catches it on disk too
        sentry.verify_files(path, path + ".sig", public_key=keys["alice"][1])


def test_renamed_tensor_is_missing_and_unexpected(tmp_path, keys):
    state = _state()
    path, sig = _save(tmp_path, keys, state)
    state["renamed"] = state.pop("mask")
    checkpoint.save(state, tmp_path / "other.safetensors", keys["alice"][0])
    os.replace(tmp_path / "other.safetensors", path)  # new file, old signature
    with pytest.raises(VerificationError) as info:
        checkpoint.load(path, keys["alice"][1], signature_path=sig)
    assert info.value.missing == ["mask"] and info.value.unexpected == ["renamed"]


def test_wrong_key_fails_closed(tmp_path, keys):
    path, _ = _save(tmp_path, keys)
    with pytest.raises(VerificationError, match="does not verify with this key"):
        checkpoint.load(path, keys["mallory"][1])


def test_loaded_tensors_do_not_alias_the_file(tmp_path, keys):
    """What load() verified is what it returns: later writes to the file do not reach it."""
    path, _ = _save(tmp_path, keys)
    loaded = checkpoint.load(path, keys["alice"][1])
    before = loaded["big"].clone()
    _flip_in_file(path, "big")
    assert torch.equal(loaded["big"], before)


def test_a_bad_host_copy_is_not_signed(tmp_path, keys, monkeypatch):
    """Digests of the host copy that differ from the device digests stop save(): no file, no
    signature (the corruption is simulated by corrupting the host-side hash)."""
    real = checkpoint.hash_tensors

    def corrupted(tensors, algorithm):
        out = real(tensors, algorithm).clone()
        out[0, 0] ^= 1
        return out

    monkeypatch.setattr(checkpoint, "hash_tensors", corrupted)
    with pytest.raises(VerificationError, match="changed between the device and the host"):
        _save(tmp_path, keys)
    assert os.listdir(tmp_path) == []
