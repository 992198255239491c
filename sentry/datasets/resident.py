"""A packed sample store held in GPU memory, and its batches gathered on the device.

``get_image_dataloader(..., reader="gds" | "pinned" | "auto")`` uses this instead of a torch
DataLoader: the packed array is read once into GPU memory (sentry.gds.read_into: GPUDirect
Storage, or a pinned double buffer), then every batch is an index_select on the device (the
epoch's order is uploaded once per epoch), so the host does no per-batch copying at all. The
batches are still checked by the DatasetChecker: what is verified is the bytes in GPU memory
that training reads.
"""
import time

import numpy as np
import torch

from ..errors import FormatError
from ..io.gds import read_into


class ResidentStore:
    """The samples (``x``: [N, *shape] in the store's dtype), labels and global indices of a
    packed store, in GPU memory. ``method``: how the bytes were read ("gds" or "pinned"; ``note``
    says why "auto" fell back to pinned); ``seconds``: how long."""

    def __init__(self, store, device, *, method="auto"):
        if getattr(store, "kind", None) != "packed":
            raise FormatError(f"{store.directory}: reading straight into GPU memory needs a "
                              "packed store (write_packed); use reader='dataloader' for a "
                              "folder of .npy files")
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"reading straight into GPU memory needs a CUDA device, got {device}")
        offset = store.data_offset()  # validates the .npy header against index.json
        n = len(store)
        dtype = torch.from_numpy(np.empty(0, dtype=store.dtype)).dtype
        x = torch.empty((n, *store.shape), dtype=dtype, device=device)
        t0 = time.perf_counter()
        self.method, self.note = read_into(store.path, x, offset=offset, method=method)
        torch.cuda.current_stream(device).synchronize()
        self.seconds = time.perf_counter() - t0
        self.nbytes = x.numel() * x.element_size()
        self.x = x
        self.labels = torch.from_numpy(store.labels).to(device)
        self.indices = torch.from_numpy(store.indices).to(device)
        self.store = store


class ResidentBatches:
    """Iterable of ``(x, y, idx)`` batches of ``rows`` (store rows) of a ResidentStore, in a
    new seeded order each epoch when ``shuffle``; a stand-in for a torch DataLoader inside
    VerifyingLoader."""

    def __init__(self, resident, rows, batch_size, *, shuffle, seed):
        self.resident = resident
        self.rows = torch.as_tensor(rows, dtype=torch.int64).to(resident.x.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self._gen = torch.Generator().manual_seed(seed)
        self.dataset = self  # VerifyingLoader reads len(loader.dataset)

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        rows = self.rows
        if self.shuffle:
            order = torch.randperm(len(rows), generator=self._gen)
            rows = rows[order.to(rows.device, non_blocking=True)]
        r = self.resident
        for start in range(0, len(rows), self.batch_size):
            take = rows[start:start + self.batch_size]
            yield r.x.index_select(0, take), r.labels[take], r.indices[take]
