"""sentry.gds (files into GPU memory: cuFile or a pinned double buffer) and the device-resident
reader of get_image_dataloader (reader="gds" / "pinned" / "auto")."""
import os

import numpy as np
import pytest
import torch

from sentry import data, gds
from sentry.dataset import DatasetVerificationError, build_manifest
from sentry.errors import FormatError

N = 300
MiB = 1 << 20


@pytest.fixture(scope="module")
def cifar():
    return data.synthetic_cifar(N, seed=5)


@pytest.fixture(scope="module")
def manifest(cifar):
    x, y, s = cifar
    return build_manifest(torch.from_numpy(x), torch.from_numpy(y), s)


def test_read_into_needs_a_contiguous_cuda_destination(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"x" * 100)
    with pytest.raises(ValueError, match="CUDA tensor"):
        gds.read_into(p, torch.empty(100, dtype=torch.uint8))
    with pytest.raises(ValueError, match="method must be one of"):
        gds.read_into(p, torch.empty(100, dtype=torch.uint8), method="mmap")


def test_status_without_cuda_says_why():
    ok, why = gds.cufile_status()
    if not torch.cuda.is_available():
        assert not ok and why == "no CUDA device"
    else:
        assert isinstance(ok, bool) and why


def test_resident_reader_needs_cuda_and_a_packed_store(tmp_path, cifar, manifest):
    x, y, s = cifar
    data.write_packed(tmp_path / "packed", x, y, s)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        data.get_image_dataloader(tmp_path / "packed", 32, "cpu", manifest=manifest,
                                  reader="pinned")
    data.write_npy_folder(tmp_path / "folder", x, y, s)
    with pytest.raises(FormatError, match="needs a packed store"):
        data.get_image_dataloader(tmp_path / "folder", 32, "cpu", manifest=manifest,
                                  reader="pinned")
    with pytest.raises(ValueError, match="reader must be"):
        data.get_image_dataloader(tmp_path / "packed", 32, "cpu", reader="mmap")


def _methods():
    return ["pinned", "auto"]  # "auto": GDS where cuFile takes the file, else pinned


@pytest.mark.cuda
@pytest.mark.parametrize("method", _methods())
@pytest.mark.parametrize("size,offset", [(1, 0), (4095, 7), (4096, 4096), (3 * MiB + 5, 129),
                                         (64 * MiB + 3, 1), (130 * MiB, 4096)])
def test_read_into_equals_file(tmp_path, method, size, offset):
    rng = np.random.default_rng(size)
    raw = rng.integers(0, 256, size + offset + 11, dtype=np.uint8)
    p = tmp_path / "f.bin"
    raw.tofile(p)
    out = torch.full((size,), 0xA5, dtype=torch.uint8, device="cuda")
    result = gds.read_into(p, out, offset=offset, method=method)
    assert result.method == method or (method == "auto" and result.method in ("gds", "pinned"))
    assert torch.equal(out.cpu(), torch.from_numpy(raw[offset:offset + size]))


@pytest.mark.cuda
@pytest.mark.parametrize("method", _methods())
def test_read_past_end_is_refused(tmp_path, method):
    p = tmp_path / "f.bin"
    p.write_bytes(b"\1" * 1000)
    with pytest.raises(FormatError, match="cannot read 1000 at byte 1"):
        gds.read_into(p, torch.empty(1000, dtype=torch.uint8, device="cuda"), offset=1,
                      method=method)


@pytest.mark.cuda
@pytest.mark.parametrize("reader", ["pinned", "auto"])
def test_resident_loader_epochs_cover_everything(tmp_path, cifar, manifest, reader):
    x, y, s = cifar
    data.write_packed(tmp_path, x, y, s)
    loader, hasher = data.get_image_dataloader(tmp_path, 64, "cuda", manifest=manifest,
                                               reader=reader, check_every=2)
    assert loader.dataloader.resident.method in ("gds", "pinned")
    orders = []
    for _ in range(2):
        seen = []
        for xb, yb, idx in loader:
            assert xb.device.type == "cuda" and xb.dtype == torch.uint8
            assert torch.equal(xb.cpu(), torch.from_numpy(x)[idx.cpu()])
            assert torch.equal(yb.cpu(), torch.from_numpy(y)[idx.cpu()])
            seen.extend(idx.tolist())
        assert sorted(seen) == list(range(N))
        orders.append(seen)
    assert orders[0] != orders[1]  # reshuffled each epoch


@pytest.mark.cuda
def test_resident_loader_catches_tampered_sample(tmp_path, cifar, manifest):
    x, y, s = cifar
    data.write_packed(tmp_path, x, y, s)
    p = tmp_path / "samples.npy"
    raw = bytearray(p.read_bytes())
    raw[len(raw) - (N - 77) * 3072 + 5] ^= 0x40
    p.write_bytes(bytes(raw))
    loader, _ = data.get_image_dataloader(tmp_path, 50, "cuda", manifest=manifest,
                                          reader="auto", split="train")
    with pytest.raises(DatasetVerificationError, match="sample 77 ") as info:
        for _ in loader:
            pass
    assert info.value.kinds == ["bytes"] and info.value.source == s[77]
    assert os.path.exists(p)
