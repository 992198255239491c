"""Fake (meta) kernels: output shapes and devices for torch.compile and FakeTensor tracing.

They check what can be checked without data, with the same messages as the real kernels.
"""
import torch

_ALGORITHMS = ("blake3", "sha256-tree")


def _check(op, what, t, algorithm):
    if algorithm not in _ALGORITHMS:
        raise ValueError(
            f"{op}: unknown algorithm '{algorithm}'; tensor digests are 'blake3' or 'sha256-tree'"
        )
    if t.layout != torch.strided:
        raise ValueError(f"{op}: {what} has layout {t.layout}; only strided tensors can be hashed")
    if t.device.type == "meta":
        raise ValueError(f"{op}: {what} is on the meta device and has no data")


@torch.library.register_fake("sentry::hash_tensors")
def _hash_tensors_fake(tensors, algorithm="blake3"):
    op = "sentry.hash_tensors"
    for i, t in enumerate(tensors):
        _check(op, f"tensor {i}", t, algorithm)
        if t.device != tensors[0].device:
            raise ValueError(
                f"{op}: tensor {i} is on {t.device} but tensor 0 is on {tensors[0].device}; "
                "hash tensors of one device per call"
            )
    device = tensors[0].device if tensors else torch.device("cpu")
    return torch.empty((len(tensors), 32), dtype=torch.uint8, device=device)


@torch.library.register_fake("sentry::hash_rows")
def _hash_rows_fake(x, algorithm="blake3"):
    op = "sentry.hash_rows"
    _check(op, "input", x, algorithm)
    if x.dim() < 1:
        raise ValueError(f"{op}: input must have at least one dimension (rows), got a 0-dim tensor")
    return torch.empty((x.shape[0], 32), dtype=torch.uint8, device=x.device)


@torch.library.register_fake("sentry::check_digests")
def _check_digests_fake(digests, labels, indices, expected, expected_labels, known, seen, state):
    # Mutates seen and state in place; returns nothing.
    op = "sentry.check_digests"
    if digests.dim() != 2 or digests.shape[1] != 32:
        raise ValueError(f"{op}: digests must have shape [B, 32], got {list(digests.shape)}")
    return None


@torch.library.register_fake("sentry::hash_subtrees")
def _hash_subtrees_fake(tensors, start_bytes, total_bytes, algorithm="blake3"):
    from ._subtrees import shard_pieces

    op = "sentry.hash_subtrees"
    if not len(start_bytes) == len(total_bytes) == len(tensors):
        raise ValueError(f"{op}: got {len(tensors)} tensors, {len(start_bytes)} start_bytes and "
                         f"{len(total_bytes)} total_bytes; give one of each per tensor")
    _hash_tensors_fake(tensors, algorithm)  # the same checks, by tensor index
    count = 0
    for t, start, total in zip(tensors, start_bytes, total_bytes):
        count += len(shard_pieces(start, t.numel() * t.element_size(), total, algorithm))
    device = tensors[0].device if tensors else torch.device("cpu")
    return torch.empty((count, 32), dtype=torch.uint8, device=device)


@torch.library.register_fake("sentry::finish_subtrees")
def _finish_subtrees_fake(values, first_leaves, total_bytes, algorithm="blake3"):
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"sentry.finish_subtrees: unknown algorithm '{algorithm}'")
    return torch.empty((32,), dtype=torch.uint8, device=values.device)
