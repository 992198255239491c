"""Sample stores, a synthetic CIFAR-shaped dataset, and a data loader that verifies every sample
against a signed manifest as it streams (../shared/SPEC.md §3, docs/FORMAT.md §8).

Storage (``index.json`` plus the samples; everything read from disk is validated):

- ``write_npy_folder(out_dir, samples, labels, sources)``: one ``<index:08d>.npy`` per sample.
- ``write_packed(out_dir, samples, labels, sources)``: one packed ``samples.npy`` [N, ...].
- ``open_store(path)``: a ``SampleStore`` over either (detected from index.json).

``index.json`` is a JSON object with exactly these fields::

    {"num_samples": N, "shape": [3, 32, 32], "dtype": "uint8",
     "samples": [{"index": 0, "label": 3, "source": "source-1", "file": "00000000.npy"}, ...]}

for a folder of .npy files, and for a packed store the same with ``"packed": "samples.npy"``
and no ``"file"`` in the sample entries (entry k is row k of the packed array). ``index`` is
the sample's global index (unique, non-negative; the manifest is keyed by it), ``label`` an
integer, ``source`` the party that vouches for the sample.

Loading with verification: ``get_image_dataloader(path, batch_size, device, manifest=...)``
returns ``(loader, hasher)``; iterating the loader yields batches ``(x, y, idx)`` already on
``device`` after ``hasher.check(x, y, idx)`` (a ``sentry.dataset.DatasetChecker``: the digests
are computed and compared on the device with no host synchronisation per batch); the host
reads the failure state every ``check_every`` batches and at the end of each epoch
(``hasher.finish()``), raising ``DatasetVerificationError`` naming the first bad sample and
its source.

Splits: ``split="test"`` selects the samples whose index is a multiple of ``TEST_EVERY`` (6),
``split="train"`` all the others; the split depends only on the sample index.
"""
import json
import os
import time

import numpy as np
import torch

from ..formats.bundle import _is_int, load_json
from .manifest import (DatasetChecker, DatasetVerificationError, Manifest, SampleLayout,
                      build_manifest, layout_error)
from ..errors import FormatError, error_text
from ..io.fileio import atomic_write, open_input, open_input_file, read_input
from .resident import ResidentBatches, ResidentStore

INDEX_FILE = "index.json"
PACKED_FILE = "samples.npy"
#: Samples whose index is a multiple of TEST_EVERY form the "test" split; the rest "train".
TEST_EVERY = 6
SPLITS = ("train", "test")

_TOP_KEYS = {"num_samples", "shape", "dtype", "samples"}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
# dtypes a store may hold (numpy name -> torch dtype), little-endian or byte-sized only.
_DTYPES = {"uint8": torch.uint8, "int8": torch.int8, "int16": torch.int16, "int32": torch.int32,
           "int64": torch.int64, "float16": torch.float16, "float32": torch.float32,
           "float64": torch.float64, "bool": torch.bool}


# ---------------------------------------------------------------------------------------------
# the synthetic dataset


def synthetic_cifar(n, *, num_sources=4, num_classes=10, label_skew=0.6, seed=0):
    """A CIFAR-10-shaped synthetic dataset a small CNN can learn: ``(samples uint8 [n,3,32,32],
    labels int64 [n], sources list[str])``.

    Each class is a plane wave with its own orientation, spatial frequency and colour tint, on a
    random background colour, with a random shift (phase), random contrast and strong uniform
    noise. The class patterns depend only on ``num_classes``; everything else on ``seed``.

    Samples are spread uniformly over ``num_sources`` sources named ``source-0`` ..
    ``source-{k-1}``; with probability ``label_skew`` a sample of source s has a class c with
    ``c % k == s`` (uniform among those), otherwise any class (uniform).
    """
    for name, value, low in (("n", n, 0), ("num_sources", num_sources, 1),
                             ("num_classes", num_classes, 1)):
        if not _is_int(value) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not (isinstance(label_skew, (int, float)) and 0 <= label_skew <= 1):
        raise ValueError(f"label_skew must be in [0, 1], got {label_skew!r}")
    rng = np.random.default_rng(seed)
    crng = np.random.default_rng([0x5EED, num_classes])
    theta = (np.arange(num_classes) * (np.pi * 0.6180339887)) % np.pi  # well-spread angles
    freq = crng.uniform(1.0, 3.5, num_classes)  # periods per 32 pixels
    tint = crng.uniform(-1.0, 1.0, (num_classes, 3))
    tint /= np.abs(tint).max(axis=1, keepdims=True)

    src = rng.integers(0, num_sources, n)
    per_source = np.array([len(range(s, num_classes, num_sources)) for s in range(num_sources)])
    own = (rng.random(n) < label_skew) & (per_source[src] > 0)
    any_class = rng.integers(0, num_classes, n)
    pick = rng.integers(0, 1 << 30, n)
    labels = np.where(own, src + num_sources * (pick % np.maximum(per_source[src], 1)), any_class)

    coords = np.arange(32, dtype=np.float32)
    shift = rng.uniform(-8, 8, (n, 2)).astype(np.float32)
    w = (freq * 2 * np.pi / 32).astype(np.float32)
    fx = (w * np.cos(theta).astype(np.float32))[labels]
    fy = (w * np.sin(theta).astype(np.float32))[labels]
    wave = np.sin(fx[:, None, None] * (coords[None, None, :] + shift[:, 0, None, None])
                  + fy[:, None, None] * (coords[None, :, None] + shift[:, 1, None, None]))
    amp = (tint[labels] * rng.uniform(40, 70, (n, 1))).astype(np.float32)
    base = rng.uniform(70, 185, (n, 3)).astype(np.float32)
    img = base[:, :, None, None] + amp[:, :, None, None] * wave[:, None]
    noise = np.frombuffer(rng.bytes(img.size), np.uint8).reshape(img.shape)
    img += noise.astype(np.float32) * (70 / 255) - 35
    samples = np.clip(img, 0, 255, out=img).astype(np.uint8)
    return samples, labels.astype(np.int64), [f"source-{s}" for s in src.tolist()]


# ---------------------------------------------------------------------------------------------
# writing


def _as_numpy(samples):
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    samples = np.ascontiguousarray(samples)
    if samples.ndim < 1:
        raise ValueError("samples must be an array [N, ...] (one row per sample)")
    name = _dtype_name(samples.dtype)
    if name not in _DTYPES:
        raise ValueError(f"samples dtype {samples.dtype} is not supported; use one of "
                         f"{sorted(_DTYPES)}")
    return samples


def _dtype_name(dtype):
    dtype = np.dtype(dtype)
    if dtype.itemsize > 1 and dtype.byteorder == ">":
        return "big-endian " + dtype.name
    return dtype.name


def _entries(samples, labels, sources, indices):
    n = samples.shape[0]
    labels = labels.detach().cpu().tolist() if isinstance(labels, torch.Tensor) else list(
        np.asarray(labels).tolist())
    sources = list(sources)
    if indices is None:
        indices = list(range(n))
    elif isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().tolist()
    else:
        indices = np.asarray(indices).tolist()
    for what, values in (("labels", labels), ("sources", sources), ("indices", indices)):
        if len(values) != n:
            raise ValueError(f"{what} must have one entry per sample ({n}), got {len(values)}")
    seen = set()
    for k, (i, lab, s) in enumerate(zip(indices, labels, sources)):
        if not _is_int(i) or i < 0:
            raise ValueError(f"indices[{k}] must be a non-negative integer, got {i!r}")
        if i in seen:
            raise ValueError(f"indices[{k}]: duplicate sample index {i}")
        seen.add(i)
        if not _is_int(lab):
            raise ValueError(f"labels[{k}] must be an integer, got {lab!r}")
        if not isinstance(s, str) or not s:
            raise ValueError(f"sources[{k}] must be a non-empty string, got {s!r}")
    return [{"index": i, "label": lab, "source": s}
            for i, lab, s in zip(indices, labels, sources)]


def _write_index(out_dir, samples, entries, extra):
    doc = {"num_samples": len(entries), "shape": list(samples.shape[1:]),
           "dtype": _dtype_name(samples.dtype), **extra, "samples": entries}
    path = os.path.join(out_dir, INDEX_FILE)
    atomic_write(path, json.dumps(doc, separators=(",", ":")).encode("utf-8"))
    return path


def write_npy_folder(out_dir, samples, labels, sources, *, indices=None):
    """Writes one ``<index:08d>.npy`` per sample and ``index.json`` (written last) to out_dir.

    samples: array or tensor [N, ...]; labels: N integers; sources: N names; indices: the
    global index of each sample (default 0..N-1). Returns the path of index.json."""
    out_dir = os.fspath(out_dir)
    samples = _as_numpy(samples)
    entries = _entries(samples, labels, sources, indices)
    os.makedirs(out_dir, exist_ok=True)
    for k, e in enumerate(entries):
        e["file"] = f"{e['index']:08d}.npy"
        np.save(os.path.join(out_dir, e["file"]), samples[k], allow_pickle=False)
    return _write_index(out_dir, samples, entries, {})


def write_packed(out_dir, samples, labels, sources, *, indices=None):
    """Writes the samples as one packed ``samples.npy`` [N, ...] (row k is entry k of the
    index) and ``index.json`` (with ``"packed": "samples.npy"``). Returns index.json's path."""
    out_dir = os.fspath(out_dir)
    samples = _as_numpy(samples)
    entries = _entries(samples, labels, sources, indices)
    os.makedirs(out_dir, exist_ok=True)
    np.save(os.path.join(out_dir, PACKED_FILE), samples, allow_pickle=False)
    return _write_index(out_dir, samples, entries, {"packed": PACKED_FILE})


# ---------------------------------------------------------------------------------------------
# reading


def _fail(where, problem):
    raise FormatError(f"{where}: {problem}")


def _plain_file_name(value, where):
    if not isinstance(value, str) or not value:
        _fail(where, f"must be a non-empty file name, got {value!r}")
    if "/" in value or "\\" in value or "\0" in value or value in (".", ".."):
        _fail(where, f"{value!r} is not a plain file name in the store's directory")
    if not value.endswith(".npy"):
        _fail(where, f"{value!r} is not a .npy file")
    return value


def _read_npy_header(path, with_offset=False):
    """(shape, dtype, fortran_order) from a .npy header, and the data's offset in the file
    ``with_offset``; FormatError naming the file."""
    try:
        with open_input_file(path, "sample file") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            offset = f.tell()
    except FileNotFoundError:
        raise FormatError(f"{path}: missing sample file") from None
    except (ValueError, OSError, SyntaxError, EOFError) as exc:
        raise FormatError(f"{path}: corrupted .npy header ({error_text(exc, path)})") from None
    if with_offset:
        return tuple(shape), dtype, fortran, offset
    return tuple(shape), dtype, fortran


class SampleStore:
    """Samples with their labels, sources and global indices, read from a store directory.

    ``len(store)``, ``store.shape`` (of one sample), ``store.dtype`` (numpy), ``store.labels``
    (int64 [N]), ``store.sources`` (list of N names), ``store.indices`` (int64 [N]);
    ``store.read(k)`` is row k (0 <= k < N, the k-th entry of index.json), ``store.read_rows``
    several rows as one array. ``store.kind`` is "npy-folder" or "packed"."""

    kind = None

    def __init__(self, directory, doc_path, shape, dtype, labels, sources, indices):
        self.directory = directory
        self.index_path = doc_path
        self.shape = shape
        self.dtype = dtype
        self.labels = labels
        self.sources = sources
        self.indices = indices
        self._row_of = None

    def __len__(self):
        return len(self.sources)

    def __repr__(self):
        return (f"<sentry.data.{type(self).__name__} {self.directory!r}: {len(self)} samples "
                f"{list(self.shape)} {self.dtype}>")

    @property
    def nbytes_per_sample(self):
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def row_of(self, index):
        """The row of the sample with global index ``index`` (KeyError if absent)."""
        if self._row_of is None:
            self._row_of = {i: k for k, i in enumerate(self.indices.tolist())}
        return self._row_of[index]

    def _check_row(self, k):
        if not (-len(self) <= k < len(self)):
            raise IndexError(f"row {k} out of range for a store of {len(self)} samples")
        return k % len(self) if len(self) else k

    def read(self, k):
        raise NotImplementedError

    def read_rows(self, rows):
        """np.ndarray [len(rows), *shape]: the samples at these rows, in this order."""
        out = np.empty((len(rows), *self.shape), dtype=self.dtype)
        for j, k in enumerate(rows):
            out[j] = self.read(int(k))
        return out


class NpyFolderStore(SampleStore):
    kind = "npy-folder"

    def __init__(self, *args, files):
        super().__init__(*args)
        self.files = files

    def path(self, k):
        return os.path.join(self.directory, self.files[k])

    def check_headers(self):
        """Reads every sample file's header: FormatError naming the first corrupted one or the
        first whose shape or dtype differs from index.json."""
        for k in range(len(self)):
            self._check_header(k, *_read_npy_header(self.path(k)))

    def _check_header(self, k, shape, dtype, fortran=False):
        path = self.path(k)
        if tuple(shape) != self.shape:
            raise FormatError(f"{path} (sample {int(self.indices[k])}): shape {list(shape)} "
                              f"differs from {list(self.shape)} in {INDEX_FILE}")
        if dtype != self.dtype:
            raise FormatError(f"{path} (sample {int(self.indices[k])}): dtype "
                              f"{_dtype_name(dtype)} differs from {self.dtype} in {INDEX_FILE}")

    def read(self, k):
        k = self._check_row(k)
        path = self.path(k)
        try:
            with open_input_file(path, "sample file") as f:
                arr = np.load(f, allow_pickle=False)
        except FileNotFoundError:
            raise FormatError(f"{path} (sample {int(self.indices[k])}): missing sample "
                              "file") from None
        except (ValueError, OSError, EOFError, SyntaxError) as exc:
            raise FormatError(f"{path} (sample {int(self.indices[k])}): corrupted .npy file "
                              f"({error_text(exc, path)})") from None
        self._check_header(k, arr.shape, arr.dtype)
        return np.ascontiguousarray(arr)


class PackedStore(SampleStore):
    """Rows are read with pread, not through a memory map: a file truncated underneath gives a
    FormatError naming it, never a SIGBUS."""

    kind = "packed"

    def __init__(self, *args, file):
        super().__init__(*args)
        self.file = file
        self._fd = None
        self._offset = None

    @property
    def path(self):
        return os.path.join(self.directory, self.file)

    def check_headers(self):
        self.data_offset()

    def data_offset(self):
        """Where row 0 starts in the file, after checking the .npy header against index.json."""
        if self._offset is None:
            path = self.path
            shape, dtype, fortran, offset = _read_npy_header(path, with_offset=True)
            want = (len(self), *self.shape)
            if shape != want:
                raise FormatError(f"{path}: shape {list(shape)} differs from {list(want)} "
                                  f"({INDEX_FILE} lists {len(self)} samples of "
                                  f"{list(self.shape)})")
            if dtype != self.dtype:
                raise FormatError(f"{path}: dtype {_dtype_name(dtype)} differs from "
                                  f"{self.dtype} in {INDEX_FILE}")
            if fortran and len(self.shape) > 0:
                raise FormatError(f"{path}: a Fortran-ordered array; write it C-ordered")
            self._offset = offset
        return self._offset

    def _descriptor(self):
        if self._fd is None:
            self._fd = open_input(self.path, "packed samples")
        return self._fd

    def __getstate__(self):  # for DataLoader workers: each process opens its own descriptor
        state = self.__dict__.copy()
        state["_fd"] = None
        return state

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def read(self, k):
        return self.read_rows([self._check_row(k)])[0]

    def read_rows(self, rows):
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((rows.size, *self.shape), dtype=self.dtype)
        if rows.size == 0 or self.nbytes_per_sample == 0:
            return out
        if rows.min() < 0 or rows.max() >= len(self):
            raise IndexError(f"rows out of range for a store of {len(self)} samples")
        start, fd, size = self.data_offset(), self._descriptor(), self.nbytes_per_sample
        flat = out.reshape(rows.size, size).view(np.uint8)
        order = np.argsort(rows, kind="stable")
        # Runs of consecutive rows are one pread each, in file order.
        j = 0
        while j < rows.size:
            first = rows[order[j]]
            end = j + 1
            while end < rows.size and rows[order[end]] == first + (end - j):
                end += 1
            buf = memoryview(bytearray(size * (end - j)))
            got = os.preadv(fd, [buf], start + int(first) * size)
            if got != len(buf):
                raise FormatError(f"{self.path}: ends inside sample row {int(first) + got // size}"
                                  " (the file changed or was truncated while it was read)")
            flat[order[j:end]] = np.frombuffer(buf, np.uint8).reshape(end - j, size)
            j = end
        return out


def open_store(path, *, check_headers=True):
    """Opens a store directory (or its index.json) written by write_npy_folder or write_packed.

    Validates index.json strictly (FormatError naming the file and field: unknown or missing
    fields, non-integer labels or indices, duplicate indices or files, ...); for a folder of
    .npy files, the set of files on disk must be exactly those listed (missing or extra files
    are named), and with ``check_headers`` every file's header is read and must match the
    shape and dtype of index.json (a corrupted header is named). Sample bytes are read later."""
    path = os.fspath(path)
    if os.path.isdir(path):
        directory, doc_path = path, os.path.join(path, INDEX_FILE)
    else:
        directory, doc_path = os.path.dirname(path) or ".", path
    try:
        raw = read_input(doc_path, INDEX_FILE, 1 << 30)
    except FileNotFoundError:
        raise FormatError(f"{doc_path}: no {INDEX_FILE} (not a sample store)") from None
    except OSError as exc:
        raise FormatError(f"{doc_path}: cannot read ({error_text(exc, doc_path)})") from None
    doc = load_json(raw, doc_path, INDEX_FILE)
    if not isinstance(doc, dict):
        _fail(doc_path, f"must be a JSON object, got {type(doc).__name__}")
    packed = "packed" in doc
    allowed = _TOP_KEYS | ({"packed"} if packed else set())
    unknown = sorted(set(doc) - allowed)
    if unknown:
        _fail(doc_path, f"unknown field(s) {', '.join(repr(k) for k in unknown)}")
    missing = sorted(_TOP_KEYS - set(doc))
    if missing:
        _fail(doc_path, f"missing field(s) {', '.join(repr(k) for k in missing)}")
    n = doc["num_samples"]
    if not _is_int(n) or n < 0:
        _fail(doc_path, f"num_samples must be a non-negative integer, got {n!r}")
    shape = doc["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        _fail(doc_path, f"shape must be a list of non-negative integers, got {shape!r}")
    dtype_name = doc["dtype"]
    if dtype_name not in _DTYPES:
        _fail(doc_path, f"dtype {dtype_name!r} is not supported; use one of {sorted(_DTYPES)}")
    entries = doc["samples"]
    if not isinstance(entries, list):
        _fail(doc_path, f"samples must be a JSON array, got {type(entries).__name__}")
    if len(entries) != n:
        _fail(doc_path, f"num_samples is {n} but samples lists {len(entries)} entries")
    keys = {"index", "label", "source"} | (set() if packed else {"file"})
    indices, labels, sources, files = [], [], [], []
    owner, file_owner = {}, {}
    for k, e in enumerate(entries):
        where = f"{doc_path}: samples[{k}]"
        if not isinstance(e, dict):
            _fail(where, f"must be a JSON object, got {type(e).__name__}")
        if e.keys() != keys:
            extra = sorted(e.keys() - keys)
            if extra:
                _fail(where, f"unknown field(s) {', '.join(repr(x) for x in extra)}")
            _fail(where, "missing field(s) "
                  + ", ".join(repr(x) for x in sorted(keys - e.keys())))
        i, lab, src = e["index"], e["label"], e["source"]
        if not _is_int(i) or not 0 <= i <= _INT64_MAX:
            _fail(where + ".index", f"must be a non-negative integer, got {i!r}")
        where = f"{doc_path}: samples[{k}] (sample {i})"
        if i in owner:
            _fail(where, f"duplicate sample index {i} (also samples[{owner[i]}])")
        owner[i] = k
        if not _is_int(lab) or not _INT64_MIN <= lab <= _INT64_MAX:
            _fail(where + ".label", f"must be an integer, got {lab!r}")
        if not isinstance(src, str) or not src:
            _fail(where + ".source", f"must be a non-empty string, got {src!r}")
        if not packed:
            name = _plain_file_name(e["file"], where + ".file")
            if name in file_owner:
                _fail(where + ".file", f"{name!r} is also the file of samples[{file_owner[name]}]")
            if name == INDEX_FILE:
                _fail(where + ".file", f"{name!r} is the index")
            file_owner[name] = k
            files.append(name)
        indices.append(i)
        labels.append(lab)
        sources.append(src)
    args = (directory, doc_path, tuple(shape), np.dtype(dtype_name),
            np.asarray(labels, dtype=np.int64).reshape(-1),
            sources, np.asarray(indices, dtype=np.int64).reshape(-1))
    if packed:
        store = PackedStore(*args, file=_plain_file_name(doc["packed"], f"{doc_path}: packed"))
        if not os.path.isfile(store.path):
            _fail(store.path, f"missing packed sample file (named in {doc_path})")
    else:
        store = NpyFolderStore(*args, files=files)
        on_disk = {f for f in os.listdir(directory) if f.endswith(".npy")}
        listed = set(files)
        absent = [k for k, f in enumerate(files) if f not in on_disk]
        if absent:
            k = absent[0]
            more = f" ({len(absent)} files missing in all)" if len(absent) > 1 else ""
            raise FormatError(f"{store.path(k)}: missing sample file of sample {indices[k]} "
                              f"(source {sources[k]!r}, listed in {doc_path}){more}")
        extra = sorted(on_disk - listed)
        if extra:
            more = f" ({len(extra)} extra files in all: {extra[:5]})" if len(extra) > 1 else ""
            raise FormatError(f"{os.path.join(directory, extra[0])}: extra .npy file not listed "
                              f"in {doc_path}{more}")
    if check_headers:
        store.check_headers()
    return store


# ---------------------------------------------------------------------------------------------
# torch datasets and the verifying loader


def in_split(index, split):
    """Whether sample ``index`` belongs to ``split`` ("test": index % TEST_EVERY == 0;
    "train": the others; None: every sample)."""
    if split is None:
        return True
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    return (index % TEST_EVERY == 0) == (split == "test")


def split_indices(store, split):
    """int64 array: the global indices of the store's samples in ``split``, in store order."""
    idx = store.indices
    if split is None:
        return idx.copy()
    in_split(0, split)  # validates split
    test = idx % TEST_EVERY == 0
    return idx[test if split == "test" else ~test]


class StoreDataset(torch.utils.data.Dataset):
    """A torch Dataset over a SampleStore: item j is ``(sample tensor, label int64, index
    int64)`` (the sample in the store's dtype, e.g. uint8 [3, 32, 32]; label and index 0-d).

    ``indices``: the global sample indices (values of ``store.indices``) to serve, in this
    order; default all, in store order. ``dataset[list_of_positions]`` returns a whole batch
    ``(samples [B, ...], labels [B], indices [B])`` (one read for a packed store)."""

    def __init__(self, store, indices=None):
        if isinstance(store, (str, os.PathLike)):
            store = open_store(store)
        self.store = store
        if indices is None:
            self.rows = np.arange(len(store), dtype=np.int64)
        else:
            idx = indices.cpu().numpy() if isinstance(indices, torch.Tensor) else indices
            rows = []
            for i in np.asarray(idx).reshape(-1).tolist():
                try:
                    rows.append(store.row_of(int(i)))
                except KeyError:
                    raise KeyError(f"sample index {i} is not in the store {store.directory!r}"
                                   ) from None
            self.rows = np.asarray(rows, dtype=np.int64)
        self._labels = torch.from_numpy(store.labels)
        self._indices = torch.from_numpy(store.indices)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, j):
        if isinstance(j, (list, tuple, np.ndarray, torch.Tensor)):
            pos = np.asarray(j.cpu() if isinstance(j, torch.Tensor) else j,
                             dtype=np.int64).reshape(-1)
            rows = self.rows[pos]
            x = torch.from_numpy(self.store.read_rows(rows))
            r = torch.from_numpy(rows)
            return x, self._labels[r], self._indices[r]
        row = int(self.rows[j])
        return (torch.from_numpy(self.store.read(row)), self._labels[row].clone(),
                self._indices[row].clone())


class VerifyingLoader:
    """Iterable over batches ``(x, y, idx)`` on ``device``; each batch is checked by ``hasher``
    (asynchronously, on the device) before it is yielded, and ``hasher.finish()`` runs when an
    epoch ends. Iterate it once per epoch.

    ``set_verify(False)`` turns checking off from the next epoch on (to measure its overhead).
    Leaving an epoch early (``break``) skips its end-of-epoch check: call ``check()`` then.
    With ``drop_last``, the last short batch is still read and checked, but not yielded."""

    def __init__(self, dataloader, hasher, device, *, batch_size, drop_last, non_blocking):
        self.dataloader = dataloader
        self.hasher = hasher
        self.device = device
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.non_blocking = non_blocking
        self.verify = hasher is not None
        self.epochs = 0
        self._partial = False

    def set_verify(self, enabled):
        """Turns verification on or off (from the next epoch; no effect without a manifest)."""
        self.verify = bool(enabled) and self.hasher is not None

    def __len__(self):
        n = len(self.dataloader.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def dataset(self):
        return self.dataloader.dataset

    def check(self):
        """Synchronises once and raises if a checked sample failed (no-op without a manifest)."""
        if self.hasher is not None:
            self.hasher.raise_if_failed()

    def __iter__(self):
        verify = self.verify
        hasher = self.hasher
        if verify and self._partial:
            # The previous epoch was left early: its coverage does not carry over (its failures
            # do: the failure state is sticky).
            hasher.new_epoch()
        self._partial = True
        dev, nb = self.device, self.non_blocking
        for x, y, idx in self.dataloader:
            x = x.to(dev, non_blocking=nb)
            y = y.to(dev, non_blocking=nb)
            idx = idx.to(dev, non_blocking=nb)
            if verify:
                hasher.check(x, y, idx)
            if self.drop_last and x.shape[0] < self.batch_size:
                continue
            yield x, y, idx
        if verify:
            hasher.finish()
        self._partial = False
        self.epochs += 1


def _restrict(manifest, split):
    if split is None:
        return manifest
    return Manifest.from_records(manifest.algorithm,
                                 [r for r in manifest.records() if in_split(r.index, split)],
                                 manifest.layout)


def _check_store_against_manifest(store, manifest, indices):
    """Host-side, once, before any sample is read: the store's samples must have the signed dtype
    and shape (index.json, which open_store has checked against every .npy header); every
    selected sample must be in the manifest, from the source the manifest names; every manifest
    sample (of the selection) must be in the store."""
    sources = store.sources
    layout = SampleLayout(_dtype_name(store.dtype), tuple(store.shape))
    if layout != manifest.layout:
        first = next((sources[store.row_of(i)] for i in indices.tolist()
                      if sources[store.row_of(i)] in manifest.sources), None)
        raise layout_error(f"{store.index_path}: the store holds {layout} samples", manifest,
                           first)
    listed = set()
    for i in indices.tolist():
        k = store.row_of(i)
        claimed = sources[k]
        signed = manifest.source_of(i)
        if signed is None:
            known = claimed in manifest.sources
            why = ("" if known else f"; source {claimed!r} is not in the manifest (its sources: "
                   f"{list(manifest.sources)})")
            raise DatasetVerificationError(
                f"sample {i} (source {claimed!r} in {store.index_path}) is not in the "
                f"manifest{why}", index=i, source=None, kinds=["unknown index"], count=1,
                unexpected=[str(i)])
        if signed != claimed:
            raise DatasetVerificationError(
                f"sample {i} is listed from source {claimed!r} in {store.index_path}, but the "
                f"manifest has it from source {signed!r}", index=i, source=signed,
                kinds=["source"], count=1, changed=[str(i)])
        listed.add(i)
    if len(listed) != len(manifest):
        absent = [r for r in manifest.records() if r.index not in listed]
        r = absent[0]
        raise DatasetVerificationError(
            f"sample {r.index} from source {r.source!r} is in the manifest but not in the store "
            f"{store.directory!r} ({len(absent)} missing)", index=r.index, source=r.source,
            kinds=["missing"], count=len(absent), missing=[str(r.index)])


def get_image_dataloader(path, batch_size, device, *, manifest=None, shuffle=True,
                         num_workers=0, pin_memory=None, check_every=16, split=None, seed=0,
                         drop_last=False, reader="dataloader"):
    """``(loader, hasher)``: a VerifyingLoader over the store at ``path`` (or a SampleStore)
    yielding ``(x, y, idx)`` on ``device`` (x in the store's dtype, y and idx int64), and the
    ``DatasetChecker`` that checks every batch against ``manifest`` (None without a manifest:
    nothing is checked).

    ``reader="dataloader"`` (default) reads through a torch DataLoader (one dataset read per
    batch, ``num_workers`` processes, pinned memory when ``pin_memory`` (default: device is
    CUDA)), then a ``non_blocking`` copy to the device. ``reader="gds"``, ``"pinned"`` or
    ``"auto"`` (CUDA, packed stores) reads the whole packed array into GPU memory once
    (GPUDirect Storage or a pinned double buffer, see sentry.gds) and gathers each batch on
    the device (sentry.resident); ``loader.dataloader.resident`` tells how it was read. Shuffling is seeded by ``seed`` (each epoch a new
    order). ``split`` ("train", "test" or None) selects samples by index (see TEST_EVERY); the
    hasher then checks against the manifest restricted to that split, so every sample of the
    split must be seen each epoch. Before anything is read, the store's listing is checked
    against the manifest on the host: a sample unknown to the manifest, listed from another
    source, or missing from the store raises DatasetVerificationError naming it.
    """
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    store = path if isinstance(path, SampleStore) else open_store(path)
    device = torch.device(device)
    if pin_memory is None:
        pin_memory = device.type == "cuda"
    selected = split_indices(store, split)
    dataset = StoreDataset(store, selected if split is not None else None)
    hasher = None
    if manifest is not None:
        manifest = _restrict(manifest, split)
        _check_store_against_manifest(store, manifest, selected)
        hasher = DatasetChecker(manifest, device, check_every=check_every)
    if reader != "dataloader":
        if reader not in ("gds", "pinned", "auto"):
            raise ValueError("reader must be 'dataloader', 'gds', 'pinned' or 'auto', got "
                             f"{reader!r}")
        resident = ResidentStore(store, device, method=reader)
        batches = ResidentBatches(resident, dataset.rows, batch_size, shuffle=shuffle, seed=seed)
        loader = VerifyingLoader(batches, hasher, device if hasher is None else hasher.device,
                                 batch_size=batch_size, drop_last=drop_last, non_blocking=True)
        return loader, hasher
    if shuffle:
        gen = torch.Generator().manual_seed(seed)
        sampler = torch.utils.data.RandomSampler(dataset, generator=gen)
    else:
        sampler = torch.utils.data.SequentialSampler(dataset)
    batches = torch.utils.data.BatchSampler(sampler, batch_size, drop_last=False)
    dataloader = torch.utils.data.DataLoader(
        dataset, sampler=batches, batch_size=None, num_workers=num_workers,
        pin_memory=bool(pin_memory), persistent_workers=num_workers > 0)
    loader = VerifyingLoader(dataloader, hasher, device if hasher is None else hasher.device,
                             batch_size=batch_size, drop_last=drop_last,
                             non_blocking=device.type == "cuda")
    return loader, hasher


def verify_dataset(path, manifest, device, *, batch_size=512, split=None, num_workers=0):
    """One verifying pass over the store at ``path`` (no training, no shuffling); raises
    DatasetVerificationError (or FormatError) at the first failure. Returns a summary:
    ``{"samples", "batches", "bytes", "seconds", "gb_per_s", "device", "dataset_digest"}``
    (GB = 1e9 bytes; the time covers reading, copying, hashing and checking)."""
    if manifest is None:
        raise ValueError("verify_dataset needs a manifest")
    t0 = time.perf_counter()
    loader, hasher = get_image_dataloader(path, batch_size, device, manifest=manifest,
                                          shuffle=False, num_workers=num_workers, split=split)
    samples = batches = nbytes = 0
    for x, _, _ in loader:
        samples += x.shape[0]
        batches += 1
        nbytes += x.numel() * x.element_size()
    if hasher.device.type == "cuda":
        torch.cuda.synchronize(hasher.device)
    seconds = time.perf_counter() - t0
    return {"samples": samples, "batches": batches, "bytes": nbytes, "seconds": seconds,
            "gb_per_s": nbytes / seconds / 1e9 if seconds > 0 else float("inf"),
            "device": str(hasher.device), "dataset_digest": hasher.manifest.dataset_digest()}


def manifest_for_store(store, *, algorithm="blake3", device="cpu", batch_size=4096):
    """The Manifest (sentry.dataset.build_manifest) of a store's samples, labels, sources and
    indices, hashing the raw sample bytes on ``device``. ``store``: a SampleStore or a path."""
    if not isinstance(store, SampleStore):
        store = open_store(store)
    device = torch.device(device)

    def batches():
        for start in range(0, len(store), batch_size):
            rows = np.arange(start, min(start + batch_size, len(store)))
            yield torch.from_numpy(store.read_rows(rows)).to(device)

    return build_manifest(batches(), store.labels, store.sources, indices=store.indices,
                          algorithm=algorithm, batch_size=batch_size)
