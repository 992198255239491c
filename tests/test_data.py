"""sentry.data: the synthetic CIFAR-shaped generator, .npy-folder and packed stores (strict
index.json, missing/extra/corrupted files named), and the verifying loader (tampered bytes,
flipped labels, unknown sources caught and named; shuffling and several epochs; set_verify)."""
import json
import os

import numpy as np
import pytest
import torch

from sentry import data
from sentry.dataset import DatasetVerificationError
from sentry.errors import FormatError, VerificationError

N = 300
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(scope="module")
def cifar():
    return data.synthetic_cifar(N, seed=3)


@pytest.fixture(scope="module")
def manifest(cifar):
    x, y, s = cifar
    from sentry.dataset import build_manifest
    return build_manifest(torch.from_numpy(x), torch.from_numpy(y), s)


@pytest.fixture(params=["folder", "packed"])
def store_dir(request, tmp_path, cifar):
    x, y, s = cifar
    d = tmp_path / request.param
    (data.write_npy_folder if request.param == "folder" else data.write_packed)(d, x, y, s)
    return d


@pytest.fixture
def folder(tmp_path, cifar):
    x, y, s = cifar
    d = tmp_path / "folder"
    data.write_npy_folder(d, x, y, s)
    return d


def _edit_index(d, fn):
    p = d / "index.json"
    doc = json.loads(p.read_text())
    fn(doc)
    p.write_text(json.dumps(doc))


def _epoch(loader):
    seen = []
    for x, y, idx in loader:
        seen.extend(idx.tolist())
    return seen


# ---------------------------------------------------------------------------------------------
# generator


def test_synthetic_shape_dtype_determinism(cifar):
    x, y, s = cifar
    assert x.shape == (N, 3, 32, 32) and x.dtype == np.uint8
    assert y.shape == (N,) and y.dtype == np.int64 and y.min() >= 0 and y.max() <= 9
    assert len(s) == N and set(s) == {f"source-{k}" for k in range(4)}
    x2, y2, s2 = data.synthetic_cifar(N, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(y, y2) and s == s2
    x3, y3, _ = data.synthetic_cifar(N, seed=4)
    assert not np.array_equal(x, x3)
    assert x.std() > 20  # not a constant image


def test_synthetic_label_skew():
    x, y, s = data.synthetic_cifar(4000, num_sources=4, label_skew=0.8, seed=1)
    src = np.array([int(name.split("-")[1]) for name in s])
    own = np.mean(y % 4 == src)
    # 0.8 own + 0.2 * (share of own classes among 10, about 0.25)
    assert 0.78 < own < 0.9
    _, y0, s0 = data.synthetic_cifar(4000, num_sources=4, label_skew=0.0, seed=1)
    src0 = np.array([int(name.split("-")[1]) for name in s0])
    assert np.mean(y0 % 4 == src0) < 0.35
    _, y1, _ = data.synthetic_cifar(50, num_sources=3, num_classes=5, seed=2)
    assert y1.max() < 5
    with pytest.raises(ValueError):
        data.synthetic_cifar(10, label_skew=1.5)


def test_synthetic_classes_are_separable():
    """Class means differ far more than chance: a nearest-class-mean classifier on a frequency
    feature (|FFT| of the grey image, shift invariant) beats chance by a wide margin."""
    x, y, _ = data.synthetic_cifar(2000, seed=5)
    f = np.abs(np.fft.rfft2(x.astype(np.float32).mean(1))).reshape(len(x), -1)
    f = np.log1p(f)
    tr, te = slice(0, 1500), slice(1500, None)
    means = np.stack([f[tr][y[tr] == c].mean(0) for c in range(10)])
    pred = ((f[te][:, None] - means[None]) ** 2).sum(-1).argmin(1)
    assert np.mean(pred == y[te]) > 0.5


# ---------------------------------------------------------------------------------------------
# stores


def test_round_trip(store_dir, cifar):
    x, y, s = cifar
    store = data.open_store(store_dir)
    assert store.kind == ("packed" if store_dir.name == "packed" else "npy-folder")
    assert len(store) == N and store.shape == (3, 32, 32) and store.dtype == np.uint8
    assert np.array_equal(store.labels, y) and store.labels.dtype == np.int64
    assert store.sources == s
    assert np.array_equal(store.indices, np.arange(N))
    for k in (0, 17, N - 1):
        assert np.array_equal(store.read(k), x[k])
    assert np.array_equal(store.read_rows([5, 2, 9]), x[[5, 2, 9]])
    # index.json opened directly works too
    assert len(data.open_store(store_dir / "index.json")) == N
    doc = json.loads((store_dir / "index.json").read_text())
    assert doc["num_samples"] == N and doc["shape"] == [3, 32, 32] and doc["dtype"] == "uint8"
    if store_dir.name == "folder":
        assert doc["samples"][7] == {"index": 7, "label": int(y[7]), "source": s[7],
                                     "file": "00000007.npy"}
        assert (store_dir / "00000007.npy").exists()
    else:
        assert doc["packed"] == "samples.npy" and "file" not in doc["samples"][0]


def test_missing_file_named(folder):
    os.remove(folder / "00000042.npy")
    with pytest.raises(FormatError, match=r"00000042\.npy.*missing sample file of sample 42"):
        data.open_store(folder)


def test_extra_file_named(folder):
    np.save(folder / "00009999.npy", np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(FormatError, match=r"00009999\.npy: extra \.npy file"):
        data.open_store(folder)


def test_corrupted_header_named(folder):
    p = folder / "00000013.npy"
    raw = bytearray(p.read_bytes())
    raw[1:6] = b"XXXXX"  # the magic string
    p.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=r"00000013\.npy: corrupted \.npy header"):
        data.open_store(folder)
    # found at read time too when headers are not checked up front
    store = data.open_store(folder, check_headers=False)
    with pytest.raises(FormatError, match=r"00000013\.npy \(sample 13\): corrupted"):
        store.read(13)


def test_header_shape_or_dtype_mismatch_named(folder):
    np.save(folder / "00000020.npy", np.zeros((3, 32, 31), np.uint8))
    with pytest.raises(FormatError, match=r"00000020\.npy \(sample 20\): shape \[3, 32, 31\]"):
        data.open_store(folder)
    np.save(folder / "00000020.npy", np.zeros((3, 32, 32), np.int16))
    with pytest.raises(FormatError, match=r"00000020\.npy \(sample 20\): dtype int16"):
        data.open_store(folder)


def test_packed_header_mismatch(tmp_path, cifar):
    x, y, s = cifar
    d = tmp_path / "p"
    data.write_packed(d, x, y, s)
    np.save(d / "samples.npy", x[:-1])
    with pytest.raises(FormatError, match=r"samples\.npy: shape \[299, 3, 32, 32\]"):
        data.open_store(d)
    os.remove(d / "samples.npy")
    with pytest.raises(FormatError, match="missing packed sample file"):
        data.open_store(d)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(extra=1), r"unknown field\(s\) 'extra'"),
    (lambda d: d["samples"][3].update(color="red"), r"samples\[3\]: unknown field"),
    (lambda d: d["samples"][4].update(index=5), r"samples\[5\] \(sample 5\): duplicate sample "
                                                r"index 5"),
    (lambda d: d["samples"][6].update(label=1.0), r"samples\[6\] \(sample 6\)\.label: must be "
                                                  r"an integer"),
    (lambda d: d["samples"][6].update(label="3"), r"\.label: must be an integer"),
    (lambda d: d["samples"][6].update(label=True), r"\.label: must be an integer"),
    (lambda d: d["samples"][8].update(file="../x.npy"), r"not a plain file name"),
    (lambda d: d["samples"][8].update(file="00000009.npy"),
     r"samples\[9\] \(sample 9\)\.file: .00000009\.npy. is also the file of samples\[8\]"),
    (lambda d: d["samples"][2].pop("source"), r"samples\[2\]: missing field\(s\) 'source'"),
    (lambda d: d.update(num_samples=3), r"num_samples is 3 but samples lists 300"),
    (lambda d: d.update(dtype="object"), r"dtype 'object' is not supported"),
    (lambda d: d.update(shape=[3, -1]), r"shape must be a list"),
    (lambda d: d["samples"][1].update(index=-1), r"samples\[1\]\.index: must be a non-negative"),
])
def test_index_json_validated(folder, edit, message):
    _edit_index(folder, edit)
    with pytest.raises(FormatError, match=message):
        data.open_store(folder)


def test_index_json_malformed(folder):
    (folder / "index.json").write_text('{"num_samples": 1, "num_samples": 1}')
    with pytest.raises(FormatError, match="duplicate key"):
        data.open_store(folder)
    os.remove(folder / "index.json")
    with pytest.raises(FormatError, match="no index.json"):
        data.open_store(folder)


def test_custom_indices_round_trip(tmp_path, cifar):
    x, y, s = cifar
    idx = np.arange(N) * 3 + 100
    data.write_npy_folder(tmp_path / "f", x[:N], y, s, indices=idx)
    store = data.open_store(tmp_path / "f")
    assert np.array_equal(store.indices, idx)
    m = data.manifest_for_store(store)
    assert m.max_index == idx[-1]
    loader, _ = data.get_image_dataloader(tmp_path / "f", 64, "cpu", manifest=m)
    assert sorted(_epoch(loader)) == idx.tolist()


# ---------------------------------------------------------------------------------------------
# manifests and the verifying loader


def test_manifest_for_store_matches(store_dir, manifest):
    m = data.manifest_for_store(data.open_store(store_dir))
    assert m.dataset_digest() == manifest.dataset_digest()
    assert m.dataset_digest() == data.manifest_for_store(str(store_dir)).dataset_digest()


@pytest.mark.parametrize("device", DEVICES)
def test_clean_dataset_several_epochs_shuffled(store_dir, manifest, device):
    loader, hasher = data.get_image_dataloader(store_dir, 64, device, manifest=manifest,
                                               check_every=2, seed=1)
    assert isinstance(hasher, data.DatasetChecker) and len(loader) == 5
    orders = []
    for _ in range(3):
        seen = []
        for x, y, idx in loader:
            assert x.device.type == torch.device(device).type and x.dtype == torch.uint8
            assert x.shape[1:] == (3, 32, 32)
            assert y.dtype == torch.int64 and idx.dtype == torch.int64
            assert y.device == x.device == idx.device
            seen.extend(idx.tolist())
        assert sorted(seen) == list(range(N))
        orders.append(seen)
    assert orders[0] != orders[1] != orders[2]  # shuffled, a new order each epoch
    assert loader.epochs == 3
    # same seed, same order
    again, _ = data.get_image_dataloader(store_dir, 64, device, manifest=manifest, seed=1)
    assert _epoch(again) == orders[0]


def test_batches_content_matches_store(store_dir, cifar):
    x, y, _ = cifar
    loader, hasher = data.get_image_dataloader(store_dir, 50, "cpu", shuffle=False)
    assert hasher is None
    for xb, yb, ib in loader:
        assert torch.equal(xb, torch.from_numpy(x[ib.numpy()]))
        assert torch.equal(yb, torch.from_numpy(y[ib.numpy()]))


def _tamper_byte(store_dir, index):
    """Flips one byte of sample ``index``'s data (not its header)."""
    if store_dir.name == "folder":
        p = store_dir / f"{index:08d}.npy"
        offset = len(p.read_bytes()) - 100
    else:
        p = store_dir / "samples.npy"
        offset = len(p.read_bytes()) - (N - index) * 3072 + 100
    raw = bytearray(p.read_bytes())
    raw[offset] ^= 0x01
    p.write_bytes(bytes(raw))


@pytest.mark.parametrize("device", DEVICES)
def test_tampered_sample_caught_and_named(store_dir, manifest, cifar, device):
    _tamper_byte(store_dir, 123)
    source = cifar[2][123]
    loader, _ = data.get_image_dataloader(store_dir, 32, device, manifest=manifest,
                                          check_every=0)
    batches = 0
    with pytest.raises(VerificationError) as info:
        for _ in loader:
            batches += 1
    assert batches == 10  # check_every=0: caught at the end of the epoch
    err = info.value
    assert isinstance(err, DatasetVerificationError)
    assert err.index == 123 and err.source == source and err.kinds == ["bytes"]
    assert f"sample 123 from source {source!r}" in str(err)


def test_tampered_sample_caught_early_with_check_every(store_dir, manifest):
    _tamper_byte(store_dir, 5)
    loader, _ = data.get_image_dataloader(store_dir, 10, "cpu", manifest=manifest,
                                          shuffle=False, check_every=1)
    batches = 0
    with pytest.raises(DatasetVerificationError, match="sample 5 "):
        for _ in loader:
            batches += 1
    assert batches == 0  # the first batch is checked before it is handed out... and raises


def test_flipped_label_caught(folder, manifest, cifar):
    y = cifar[1]
    _edit_index(folder, lambda d: d["samples"][77].update(label=int((y[77] + 1) % 10)))
    loader, _ = data.get_image_dataloader(folder, 64, "cpu", manifest=manifest)
    with pytest.raises(DatasetVerificationError) as info:
        _epoch(loader)
    assert info.value.index == 77 and info.value.kinds == ["label"]
    assert info.value.source == cifar[2][77]


def test_unknown_source_caught(tmp_path, cifar, manifest):
    x, y, s = cifar
    s2 = list(s)
    s2[200] = "mallory"
    d = tmp_path / "f"
    data.write_npy_folder(d, x, y, s2)
    with pytest.raises(DatasetVerificationError, match=r"sample 200 is listed from source "
                                                       r"'mallory'.*manifest has it from source"):
        data.get_image_dataloader(d, 64, "cpu", manifest=manifest)
    # a new sample from a source the manifest does not know
    x3 = np.concatenate([x, x[:1]])
    d3 = tmp_path / "g"
    data.write_npy_folder(d3, x3, np.append(y, 0), list(s) + ["mallory"])
    with pytest.raises(DatasetVerificationError, match=r"sample 300 \(source 'mallory'.*not in "
                                                       r"the manifest"):
        data.get_image_dataloader(d3, 64, "cpu", manifest=manifest)


def test_unknown_source_caught_on_device_too(tmp_path, cifar):
    """Even past the host-side listing check, the device checker flags unknown indices."""
    x, y, s = cifar
    d = tmp_path / "f"
    data.write_npy_folder(d, x, y, s)
    m = data.manifest_for_store(d)
    loader, hasher = data.get_image_dataloader(d, 64, "cpu", manifest=m)
    hasher.check(torch.from_numpy(x[:2]), torch.from_numpy(y[:2]), torch.tensor([0, 9999]))
    with pytest.raises(DatasetVerificationError, match="sample 9999 is not in the manifest"):
        _epoch(loader)


def test_sample_missing_from_store_caught(tmp_path, cifar, manifest):
    x, y, s = cifar
    d = tmp_path / "f"
    data.write_npy_folder(d, x[:-1], y[:-1], s[:-1])
    with pytest.raises(DatasetVerificationError, match=r"sample 299 from source .* not in the "
                                                       r"store"):
        data.get_image_dataloader(d, 64, "cpu", manifest=manifest)


def test_set_verify_false_disables_checks(store_dir, manifest):
    _tamper_byte(store_dir, 10)
    loader, hasher = data.get_image_dataloader(store_dir, 64, "cpu", manifest=manifest)
    loader.set_verify(False)
    assert sorted(_epoch(loader)) == list(range(N))
    assert hasher.batches == 0
    loader.set_verify(True)
    with pytest.raises(DatasetVerificationError, match="sample 10 "):
        _epoch(loader)


def test_splits(store_dir, manifest):
    train, _ = data.get_image_dataloader(store_dir, 64, "cpu", manifest=manifest, split="train")
    test, hasher = data.get_image_dataloader(store_dir, 64, "cpu", manifest=manifest,
                                             split="test")
    tr, te = _epoch(train), _epoch(test)
    assert sorted(te) == list(range(0, N, data.TEST_EVERY))
    assert sorted(tr + te) == list(range(N))
    assert len(hasher.manifest) == len(te)
    with pytest.raises(ValueError, match="split"):
        data.get_image_dataloader(store_dir, 64, "cpu", split="valid")


def test_drop_last_still_checks_the_tail(folder, manifest):
    loader, _ = data.get_image_dataloader(folder, 64, "cpu", manifest=manifest, shuffle=False,
                                          drop_last=True)
    assert len(loader) == 4 and len(_epoch(loader)) == 256
    _tamper_byte(folder, 299)  # in the dropped tail
    loader, _ = data.get_image_dataloader(folder, 64, "cpu", manifest=manifest, shuffle=False,
                                          drop_last=True)
    with pytest.raises(DatasetVerificationError, match="sample 299 "):
        _epoch(loader)


def test_early_break_then_full_epoch(folder, manifest):
    loader, _ = data.get_image_dataloader(folder, 64, "cpu", manifest=manifest)
    for _ in loader:
        break
    loader.check()
    assert sorted(_epoch(loader)) == list(range(N))


def test_workers(folder, manifest):
    loader, _ = data.get_image_dataloader(folder, 64, "cpu", manifest=manifest, num_workers=1)
    assert sorted(_epoch(loader)) == list(range(N))


def test_verify_dataset_summary(store_dir, manifest):
    out = data.verify_dataset(store_dir, manifest, "cpu", batch_size=128)
    assert out["samples"] == N and out["batches"] == 3
    assert out["bytes"] == N * 3 * 32 * 32
    assert out["seconds"] > 0 and out["gb_per_s"] > 0
    assert out["dataset_digest"] == manifest.dataset_digest()
    _tamper_byte(store_dir, 250)
    with pytest.raises(DatasetVerificationError, match="sample 250 "):
        data.verify_dataset(store_dir, manifest, "cpu")


def test_store_dataset(store_dir, cifar):
    x, y, _ = cifar
    ds = data.StoreDataset(data.open_store(store_dir), indices=[7, 3])
    assert len(ds) == 2
    sample, label, index = ds[0]
    assert sample.dtype == torch.uint8 and torch.equal(sample, torch.from_numpy(x[7]))
    assert label.dtype == torch.int64 and int(label) == y[7] and int(index) == 7
    xb, yb, ib = ds[[1, 0]]
    assert ib.tolist() == [3, 7] and torch.equal(xb, torch.from_numpy(x[[3, 7]]))
    with pytest.raises(KeyError, match="sample index 5000"):
        data.StoreDataset(data.open_store(store_dir), indices=[5000])


# ---------------------------------------------------------------------------------------------
# the samples' dtype and shape are signed too: the same bytes read as another type are refused


def _reinterpret_store(store_dir, fn):
    """Rewrites the store so every sample is ``fn(sample array)`` (a view of the same bytes as
    another dtype or shape): index.json and the .npy headers change, the sample bytes do not."""
    p = store_dir / "index.json"
    doc = json.loads(p.read_text())
    if "packed" in doc:
        path = store_dir / doc["packed"]
        samples = [fn(a) for a in np.load(path)]
        np.save(path, np.stack(samples))
    else:
        samples = [fn(np.load(store_dir / e["file"])) for e in doc["samples"]]
        for e, a in zip(doc["samples"], samples):
            np.save(store_dir / e["file"], a)
    doc["dtype"], doc["shape"] = samples[0].dtype.name, list(samples[0].shape)
    p.write_text(json.dumps(doc))


REINTERPRETATIONS = {
    "uint8 as int8": lambda a: a.view(np.int8),
    "CHW as HWC": lambda a: a.reshape(32, 32, 3),
    "as 96x32": lambda a: a.reshape(96, 32),
}


@pytest.mark.parametrize("how", sorted(REINTERPRETATIONS))
def test_reinterpreted_samples_refused_before_any_batch(store_dir, manifest, cifar, how):
    fn = REINTERPRETATIONS[how]
    x = cifar[0]
    _reinterpret_store(store_dir, fn)
    store = data.open_store(store_dir)  # consistent on its own: index.json matches the headers
    assert torch.equal(torch.from_numpy(np.ascontiguousarray(store.read(7))).view(torch.uint8)
                       .reshape(-1), torch.from_numpy(x[7]).reshape(-1))  # the same bytes
    with pytest.raises(DatasetVerificationError) as info:
        data.get_image_dataloader(store_dir, 32, "cpu", manifest=manifest)
    err = info.value
    assert err.kinds == ["layout"]
    assert "uint8 [3, 32, 32]" in str(err) and "source-" in str(err)
    assert err.source in manifest.sources
    with pytest.raises(DatasetVerificationError, match="uint8 \\[3, 32, 32\\]"):
        data.verify_dataset(store_dir, manifest, "cpu")


def test_checker_refuses_a_batch_of_another_layout(cifar, manifest):
    from sentry.dataset import DatasetChecker

    x, y, _ = cifar
    checker = DatasetChecker(manifest, "cpu", require_all=False)
    batch = torch.from_numpy(x[:8])
    idx = torch.arange(8)
    labels = torch.from_numpy(y[:8])
    checker.check(batch, labels, idx)  # the signed layout passes
    for other in (batch.view(torch.int8), batch.reshape(8, 32, 32, 3), batch.reshape(8, -1)):
        with pytest.raises(DatasetVerificationError, match="int8|32, 32, 3|3072"):
            checker.check(other, labels, idx)
    checker.finish()  # the refused batches were not hashed: the first one alone was checked
