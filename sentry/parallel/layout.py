"""Where a rank's tensors lie inside the full tensors of a manifest: boxes, then byte runs.

A local tensor holds one or more *boxes* of full tensors: box [offset, offset + shape) of the
full tensor `name`, placed at some offset of the local tensor. Its bytes are then a set of
*runs*: byte ranges that are contiguous both in the full tensor's row-major bytes and in the
local tensor's. sentry.syncplan hashes runs without gathering them (docs/DISTRIBUTED.md).

The layout of a local tensor comes from

* its DTensor placements (Shard(d) on any dimension, Replicate, any number of mesh dims), or
* layout[key]: `(start_row, full_shape)` (rows of a full tensor), a `Region` (any box of a full
  tensor), or a `Concat` of regions along a dimension (vLLM's qkv_proj: the TP shards of q, k
  and v, one after the other), or
* nothing: the whole tensor.

`mapping` renames: mapping[key] = manifest name, or `Fused(names, dim)` when the global tensor
is the concatenation of several manifest tensors along `dim` (a box of it is then split into
boxes of those tensors).
"""
import dataclasses
import math

import numpy as np
import torch

from ..errors import FormatError
from ..formats.safetensors_format import safetensors_dtype_name


@dataclasses.dataclass(frozen=True)
class Region:
    """Box [offset, offset + shape) of the full tensor `name` (of shape `full_shape`). offset
    defaults to zeros; shape to the local tensor's shape (or, in a Concat, is required)."""

    name: str
    full_shape: tuple
    offset: tuple = None
    shape: tuple = None

    @classmethod
    def shard(cls, name, full_shape, dim, index, count):
        """Part `index` of `count` of the full tensor along `dim`, split as torch.chunk and
        DTensor's Shard(dim) split it (ceil-sized parts, the last ones short or empty)."""
        full_shape = tuple(int(d) for d in full_shape)
        if not (0 <= dim < len(full_shape)) or not (0 <= index < count):
            raise FormatError(f"tensor '{name}': no part {index} of {count} along dim {dim} of "
                              f"{list(full_shape)}")
        step = -(-full_shape[dim] // count)
        lo = min(index * step, full_shape[dim])
        hi = min(lo + step, full_shape[dim])
        offset = tuple(lo if d == dim else 0 for d in range(len(full_shape)))
        shape = tuple(hi - lo if d == dim else full_shape[d] for d in range(len(full_shape)))
        return cls(name, full_shape, offset, shape)


@dataclasses.dataclass(frozen=True)
class Concat:
    """A local tensor that is `parts` (Regions) concatenated along `dim`."""

    parts: tuple
    dim: int = 0


@dataclasses.dataclass(frozen=True)
class Fused:
    """In `mapping`: the global tensor is the manifest tensors `names` concatenated along
    `dim`. `sizes` (their extents along `dim`) default to the manifest's shapes."""

    names: tuple
    dim: int = 0
    sizes: tuple = None


@dataclasses.dataclass(frozen=True)
class Box:
    """Box [offset, offset + shape) of manifest tensor `name` (full shape `full_shape`), held at
    `local_offset` of a local tensor."""

    name: str
    full_shape: tuple
    offset: tuple
    shape: tuple
    local_offset: tuple


def _dtensor_class():
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without DTensor
        return ()
    return DTensor


_DTENSOR = None


def is_dtensor(t):
    global _DTENSOR
    if _DTENSOR is None:  # imported once: the checks call this per tensor per check
        _DTENSOR = _dtensor_class()
    return isinstance(t, _DTENSOR)


def local_tensor(t):
    """A DTensor's local part (without the autograd wrapper of to_local()), or the tensor."""
    if is_dtensor(t):
        local = getattr(t, "_local_tensor", None)
        return local if isinstance(local, torch.Tensor) else t.to_local()
    return t


def _ints(value, what, key):
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise FormatError(f"tensor '{key}': {what} {value!r} is not a list of integers") from None
    if any(v < 0 for v in out):
        raise FormatError(f"tensor '{key}': {what} {list(out)} has a negative entry")
    return out


def _dtensor_regions(key, t):
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    for p in t.placements:
        if type(p) not in (Shard, Replicate):  # Partial, _StridedShard: not a box of the tensor
            raise FormatError(f"tensor '{key}': DTensor placement {p} is not Shard(d) or "
                              "Replicate; give an explicit layout for its local tensor")
    shape, offset = compute_local_shape_and_global_offset(t.shape, t.device_mesh, t.placements)
    return [(Region(key, tuple(t.shape), tuple(offset), tuple(shape)),
             (0,) * len(t.shape))]


def _entry_regions(key, local, entry):
    """[(Region, local offset)] of a layout entry."""
    if isinstance(entry, Region):
        return [(entry, (0,) * local.dim())]
    if isinstance(entry, Concat):
        dim = entry.dim
        if not (0 <= dim < max(local.dim(), 1)):
            raise FormatError(f"tensor '{key}': Concat along dim {dim} of a {local.dim()}-D "
                              "tensor")
        out, at = [], 0
        for part in entry.parts:
            if not isinstance(part, Region) or part.shape is None:
                raise FormatError(f"tensor '{key}': each part of a Concat is a Region with a "
                                  "shape")
            shape = _ints(part.shape, "shape", key)
            if len(shape) != local.dim():
                raise FormatError(f"tensor '{key}': part '{part.name}' has shape "
                                  f"{list(shape)}, not {local.dim()}-D")
            out.append((part, tuple(at if d == dim else 0 for d in range(local.dim()))))
            at += shape[dim]
        return out
    if isinstance(entry, (tuple, list)) and len(entry) == 2:  # (start_row, full_shape)
        start_row, full_shape = entry
        full_shape = _ints(full_shape, "full shape", key)
        if not full_shape:
            return [(Region(key, full_shape), ())]
        try:
            start_row = int(start_row)
        except (TypeError, ValueError):
            raise FormatError(f"tensor '{key}': start row {start_row!r} is not an integer") \
                from None
        if (local.dim() != len(full_shape) or tuple(local.shape[1:]) != full_shape[1:]):
            raise FormatError(f"tensor '{key}': local shape {list(local.shape)} is not a row "
                              f"shard of {list(full_shape)}")
        if start_row < 0 or start_row + local.shape[0] > full_shape[0]:
            raise FormatError(f"tensor '{key}': rows [{start_row}, {start_row + local.shape[0]})"
                              f" are outside its {full_shape[0]} rows")
        offset = (start_row,) + (0,) * (len(full_shape) - 1)
        return [(Region(key, full_shape, offset), (0,) * local.dim())]
    raise FormatError(f"tensor '{key}': layout entry {entry!r} is not (start_row, full_shape), "
                      "a Region or a Concat")


def _fused_boxes(key, region, offset, shape, local_offset, fused, full_shapes):
    """Boxes of the manifest tensors of `fused` inside box [offset, offset + shape) of their
    concatenation."""
    dim = fused.dim
    names = tuple(fused.names)
    if not names or not (0 <= dim < len(region.full_shape)):
        raise FormatError(f"tensor '{key}': Fused({list(names)}, dim={dim}) does not fit "
                          f"{list(region.full_shape)}")
    if fused.sizes is not None:
        sizes = _ints(fused.sizes, "fused sizes", key)
    else:
        missing = [n for n in names if n not in full_shapes]
        if missing:
            raise FormatError(f"tensor '{key}': the sizes of fused {missing} are unknown (not in "
                              "the manifest); give Fused(..., sizes=...)")
        sizes = tuple(int(full_shapes[n][dim]) for n in names)
    if len(sizes) != len(names) or sum(sizes) != region.full_shape[dim]:
        raise FormatError(f"tensor '{key}': fused parts {list(names)} of sizes {list(sizes)} "
                          f"along dim {dim} do not make {list(region.full_shape)}")
    out, at = [], 0
    for name, size in zip(names, sizes):
        lo, hi = max(offset[dim], at), min(offset[dim] + shape[dim], at + size)
        full = region.full_shape[:dim] + (size,) + region.full_shape[dim + 1:]
        if name in full_shapes and tuple(full_shapes[name]) != full:
            raise FormatError(f"tensor '{key}': fused part '{name}' is {list(full_shapes[name])}"
                              f" in the manifest, {list(full)} here")
        def put(t, v):
            return t[:dim] + (v,) + t[dim + 1:]

        if hi > lo:
            out.append(Box(name, full, put(offset, lo - at), put(shape, hi - lo),
                           put(local_offset, local_offset[dim] + lo - offset[dim])))
        elif size == 0:  # an empty part: every holder of the fused tensor holds all of it
            out.append(Box(name, full, put(offset, 0), put(shape, 0), local_offset))
        at += size
    return out


def local_boxes(key, local, regions, mapping, full_shapes):
    """The Boxes of one local tensor: its regions resolved through `mapping`, checked to fit
    their full tensors and to tile the local tensor exactly."""
    boxes = []
    for region, local_offset in regions:
        if not isinstance(region.name, str):
            raise FormatError(f"tensor '{key}': region name {region.name!r} is not a string")
        full = _ints(region.full_shape, "full shape", key)
        rank = len(full)
        offset = _ints(region.offset, "offset", key) if region.offset is not None else (0,) * rank
        shape = (_ints(region.shape, "shape", key) if region.shape is not None
                 else tuple(local.shape))
        if len(offset) != rank or len(shape) != rank:
            raise FormatError(f"tensor '{key}': box offset {list(offset)} and shape "
                              f"{list(shape)} do not match full shape {list(full)}")
        if any(o + s > f for o, s, f in zip(offset, shape, full)):
            raise FormatError(f"tensor '{key}': box [{list(offset)}, +{list(shape)}) lies "
                              f"outside its full shape {list(full)}")
        target = mapping.get(region.name, region.name)
        if isinstance(target, Fused):
            boxes += _fused_boxes(key, Region(region.name, full), offset, shape, local_offset,
                                  target, full_shapes)
        elif isinstance(target, str):
            boxes.append(Box(target, full, offset, shape, local_offset))
        else:
            raise FormatError(f"mapping['{region.name}'] is {target!r}, not a name or a Fused")
    local_shape = tuple(local.shape)
    volume = 0
    for b in boxes:
        if len(b.local_offset) != len(local_shape) and (b.local_offset or local_shape):
            raise FormatError(f"tensor '{key}': box of '{b.name}' is {len(b.shape)}-D, the "
                              f"local tensor {len(local_shape)}-D")
        if any(o + s > d for o, s, d in zip(b.local_offset, b.shape, local_shape)):
            raise FormatError(f"tensor '{key}': its parts {[list(x.shape) for x in boxes]} do "
                              f"not fit its shape {list(local_shape)}")
        volume += math.prod(b.shape)
    if volume != local.numel():
        raise FormatError(f"tensor '{key}': its parts hold {volume} elements, the tensor "
                          f"{local.numel()} (shape {list(local_shape)})")
    return boxes


def regions_of(key, t, layout, mapping, full_shapes):
    """(local tensor, [Box]) of state-dict entry `key`."""
    if is_dtensor(t):
        if key in layout:
            raise FormatError(f"tensor '{key}' is a DTensor: its layout comes from its "
                              "placements, not from `layout`")
        local = local_tensor(t)
        regions = _dtensor_regions(key, t)
    else:
        local = t
        regions = (_entry_regions(key, local, layout[key]) if key in layout
                   else [(Region(key, tuple(t.shape)), (0,) * t.dim())])
    return local, local_boxes(key, local, regions, mapping, full_shapes)


def box_runs(box, local_shape, element_size):
    """(local byte offsets, full-tensor byte offsets, run length) of a box: int64 arrays of
    the runs' starts (row-major order) and their common length in bytes."""
    shape, full = box.shape, box.full_shape
    if math.prod(shape) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, 0
    rank = len(shape)
    if rank == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64), element_size
    # Dims after `split` are whole in both tensors, so a run spans them and part of `split`.
    split = rank - 1
    while split > 0 and shape[split] == full[split] == local_shape[split]:
        split -= 1

    def strides(dims):
        out, acc = [0] * rank, element_size
        for d in range(rank - 1, -1, -1):
            out[d] = acc
            acc *= dims[d]
        return out

    fs, ls = strides(full), strides(local_shape)
    length = math.prod(shape[split:]) * element_size
    full_at = np.array([sum(o * s for o, s in zip(box.offset, fs))], dtype=np.int64)
    local_at = np.array([sum(o * s for o, s in zip(box.local_offset, ls))], dtype=np.int64)
    for d in range(split):  # every index of the dims before the split, row-major
        idx = np.arange(shape[d], dtype=np.int64)
        full_at = (full_at[:, None] + idx[None, :] * fs[d]).reshape(-1)
        local_at = (local_at[:, None] + idx[None, :] * ls[d]).reshape(-1)
    return local_at, full_at, length


def dtype_name(t):
    return safetensors_dtype_name(t.dtype)
