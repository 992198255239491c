"""Sentry's compiled operators, registered under ``torch.ops.sentry``.

Importing this package checks that the compiled module was built for the torch (and CUDA)
you are running, then loads it and registers the fake kernels used by torch.compile.
"""
import torch

try:
    from . import _build_info
except ImportError as exc:  # setup.py writes it when it builds the extension
    raise ImportError(
        "sentry_ops is not built: run `pip install --no-build-isolation -e .` in the Sentry "
        "checkout"
    ) from exc


def _mismatch_message():
    running_cuda = torch.version.cuda
    if _build_info.TORCH_VERSION != torch.__version__:
        return f"built for PyTorch {_build_info.TORCH_VERSION}, you have {torch.__version__}"
    if _build_info.WITH_CUDA and running_cuda != _build_info.CUDA_VERSION:
        return f"built for CUDA {_build_info.CUDA_VERSION}, your PyTorch has CUDA {running_cuda}"
    return None


_problem = _mismatch_message()
if _problem:
    raise ImportError(
        f"sentry_ops was {_problem}; rebuild it with `pip install --no-build-isolation -e .`"
    )

if hasattr(torch.ops.sentry, "hash_tensors"):
    # Two builds registering one namespace in one process abort it; say so instead.
    raise ImportError(
        "another build of Sentry's operators is already loaded in this process "
        "(torch.ops.sentry exists); load only one"
    )

from . import _C  # noqa: E402  registers torch.ops.sentry.*
from . import _meta  # noqa: E402,F401  fake kernels

BUILT_TORCH_VERSION = _build_info.TORCH_VERSION
BUILT_CUDA_VERSION = _build_info.CUDA_VERSION
WITH_CUDA = _build_info.WITH_CUDA
ALGORITHMS = ("blake3", "sha256-tree")


def hash_tensors(tensors, algorithm="blake3"):
    """uint8 [N, 32]: the digest of each tensor's logical bytes, on the tensors' device."""
    return torch.ops.sentry.hash_tensors.default(list(tensors), algorithm)


def digests_hex(digests):
    """Lower-case hex strings of a uint8 [N, 32] digest tensor (one host copy for all)."""
    return [bytes(row).hex() for row in digests.cpu().tolist()]


def hash_rows(x, algorithm="blake3"):
    """uint8 [x.size(0), 32]: the digest of each row (sample) of x, on x's device."""
    return torch.ops.sentry.hash_rows.default(x, algorithm)


def check_digests(digests, labels, indices, expected, expected_labels, known, seen, state):
    """Checks a batch of sample digests and labels against dense signed tables (indexed by
    sample index, last row a never-known sentinel), marks the rows seen and folds the verdict
    into ``state`` (int64 [6]: failed, first index, its code, its batch, bad count, batches),
    all in place on the device. See sentry.dataset.DatasetChecker."""
    torch.ops.sentry.check_digests.default(digests, labels, indices, expected, expected_labels,
                                           known, seen, state)


def hash_subtrees(tensors, start_bytes, total_bytes, algorithm="blake3"):
    """uint8 [K, 32]: the un-finalised values of the pieces of shards of larger inputs (tensor i
    is bytes [start_bytes[i], start_bytes[i] + its size) of an input of total_bytes[i] bytes;
    docs/DISTRIBUTED.md), tensor after tensor, in the order of sentry_ops.shard_pieces."""
    return torch.ops.sentry.hash_subtrees.default(list(tensors), list(start_bytes),
                                                  list(total_bytes), algorithm)


def finish_subtrees(values, first_leaves, total_bytes, algorithm="blake3"):
    """uint8 [32] (CPU): the digest of an input of total_bytes bytes from the values of pieces
    tiling its leaves in order (piece i starts at leaf first_leaves[i])."""
    return torch.ops.sentry.finish_subtrees.default(values, list(first_leaves), total_bytes,
                                                    algorithm)


def hash_runs(sources, plan, header, message_bytes, algorithm="blake3"):
    """(uint8 [message_bytes], int32 [1]): one rank's message for a run plan made by
    plan_runs (the values of the pieces of its runs, then its edge bytes, then zeros) and a
    status that is non-zero when an entry of the plan lay out of bounds (docs/DISTRIBUTED.md)."""
    return torch.ops.sentry.hash_runs.default(list(sources), plan, list(header), message_bytes,
                                              algorithm)


def finish_runs(gathered, plan, header, algorithm="blake3"):
    """(uint8 [Q, 32], int32 [1]): the digests a finish plan made by plan_finish asks for,
    from the ranks' gathered messages, and a status as hash_runs'."""
    return torch.ops.sentry.finish_runs.default(gathered, plan, list(header), algorithm)


def plan_runs(runs, algorithm="blake3", with_edges=True):
    """(header, body) of a run plan: runs is int64 [R, 6] (source tensor, byte offset in it,
    start byte in the full tensor, length, full size, largest piece level or -1)."""
    return _C.plan_runs(runs, algorithm, with_edges)


def plan_finish(trees, items, leaves, fragments, algorithm="blake3"):
    """(header, body, segments) of a finish plan (csrc/ops/run_plan.h says what each holds)."""
    return _C.plan_finish(trees, items, leaves, fragments, algorithm)


def ecdsa_p256_verify(public_keys, digests, signatures):
    """bool [N]: signature i (uint8 [N, 64], r || s big-endian) is valid for SHA-256 digest i
    (uint8 [N, 32]) under P-256 public key i (uint8 [N, 64], x || y big-endian). A bad row is
    False, never an error; all three tensors on one device (CPU or CUDA)."""
    return torch.ops.sentry.ecdsa_p256_verify.default(public_keys, digests, signatures)


from ._subtrees import leaf_bytes, shard_pieces  # noqa: E402,F401
