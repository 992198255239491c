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


def _check_plan(op, plan, header, device):
    if plan.dtype != torch.int64 or plan.dim() != 1:
        raise ValueError(f"{op}: plan must be a 1-D int64 tensor, got {plan.dtype} "
                         f"{list(plan.shape)}")
    if plan.device != device:
        raise ValueError(f"{op}: plan is on {plan.device} but the data is on {device}; move the "
                         "plan there once")
    if len(header) < 2 or header[0] != 1:
        raise ValueError(f"{op}: not a plan header")


@torch.library.register_fake("sentry::hash_runs")
def _hash_runs_fake(sources, plan, header, message_bytes, algorithm="blake3"):
    op = "sentry.hash_runs"
    _hash_tensors_fake(sources, algorithm)
    device = sources[0].device if sources else plan.device
    _check_plan(op, plan, header, device)
    if message_bytes < header[9]:  # run_plan.h: kRHMessageBytes
        raise ValueError(f"{op}: message_bytes {message_bytes} is below the plan's {header[9]}")
    return (torch.empty((message_bytes,), dtype=torch.uint8, device=device),
            torch.empty((1,), dtype=torch.int32, device=device))


@torch.library.register_fake("sentry::finish_runs")
def _finish_runs_fake(gathered, plan, header, algorithm="blake3"):
    op = "sentry.finish_runs"
    if algorithm not in _ALGORITHMS:
        raise ValueError(f"{op}: unknown algorithm '{algorithm}'")
    if gathered.dtype != torch.uint8:
        raise ValueError(f"{op}: gathered must be a uint8 tensor, got {gathered.dtype}")
    _check_plan(op, plan, header, gathered.device)
    outputs = header[7]  # run_plan.h: kFHOutputs
    return (torch.empty((outputs, 32), dtype=torch.uint8, device=gathered.device),
            torch.empty((1,), dtype=torch.int32, device=gathered.device))


_ECDSA_ROWS = (("public_keys", 64, "x || y, big-endian"), ("digests", 32, "SHA-256 digests"),
               ("signatures", 64, "r || s, big-endian"))


@torch.library.register_fake("sentry::ecdsa_p256_verify")
def _ecdsa_p256_verify_fake(public_keys, digests, signatures):
    op = "sentry.ecdsa_p256_verify"
    tensors = (public_keys, digests, signatures)
    for t, (name, width, what) in zip(tensors, _ECDSA_ROWS):
        if t.layout != torch.strided:
            raise ValueError(f"{op}: {name} has layout {t.layout}; expected a dense (strided) "
                             "tensor")
        if t.device.type == "meta":
            raise ValueError(f"{op}: {name} is on the meta device and has no data")
        if t.dtype != torch.uint8:
            raise ValueError(f"{op}: {name} must be uint8, got {_aten_dtype(t.dtype)}")
        if t.dim() != 2 or t.shape[1] != width:
            raise ValueError(f"{op}: {name} must have shape [N, {width}] ({what}), got "
                             f"[{', '.join(str(s) for s in t.shape)}]")
    n = public_keys.shape[0]
    for t, (name, _, _) in zip(tensors[1:], _ECDSA_ROWS[1:]):
        if t.shape[0] != n:
            raise ValueError(f"{op}: {name} has {t.shape[0]} rows but public_keys has {n}")
        if t.device != public_keys.device:
            raise ValueError(f"{op}: {name} is on {t.device} but public_keys is on "
                             f"{public_keys.device}")
    return torch.empty((n,), dtype=torch.bool, device=public_keys.device)


def _aten_dtype(dtype):
    """The dtype as the C++ kernels print it (c10::ScalarType names: Float, Long, ...)."""
    return {torch.float32: "Float", torch.float64: "Double", torch.float16: "Half",
            torch.bfloat16: "BFloat16", torch.int8: "Char", torch.int16: "Short",
            torch.int32: "Int", torch.int64: "Long", torch.bool: "Bool",
            torch.uint8: "Byte"}.get(dtype, str(dtype))
