"""hash_subtrees / finish_subtrees and the sharded finish of sentry.distributed, against
independent references: tests/reference.py's plain-Python BLAKE3 (itself checked against b3sum)
and RFC 9162 tree over hashlib, and its brute-force statement of which pieces a shard holds.

The layouts built on these pieces (hash_runs, finish_runs, ranks simulated in one process) are
tested in test_syncplan.py; the multi-process runs (gloo) in test_distributed.py and
test_weightsync_dist.py.
"""
import random

import pytest
import torch

import reference
from reference import bytes_tensor, digest_rows, random_bytes, subtree_pieces, subtree_value

ALGORITHMS = ("blake3", "sha256-tree")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def full_digest(data, algorithm):
    if algorithm == "blake3":
        return reference.blake3_py(data)
    return reference.sha256_tree(data)


def sizes(algorithm):
    """Sizes at and around power-of-two leaf counts, single leaves, and the empty input."""
    L = reference.LEAF_BYTES[algorithm]
    return [0, 1, L - 1, L, L + 1, 2 * L, 2 * L + 1, 3 * L, 4 * L - 1, 4 * L, 4 * L + 1, 5 * L + 3,
            8 * L, 8 * L + 1, 13 * L + 77, 16 * L]


def random_cuts(rng, total, algorithm, shards):
    """Cut points mixing leaf boundaries, points inside a leaf, and repeated points (0-byte
    shards); at least one cut inside a leaf when the input has room."""
    L = reference.LEAF_BYTES[algorithm]
    cuts = []
    for _ in range(shards - 1):
        at = rng.randrange(total + 1)
        kind = rng.randrange(3)
        cuts.append(at // L * L if kind == 0 else at)
        if kind == 2:
            cuts.append(at)
    return [0] + sorted(cuts) + [total]


# ---------------------------------------------------------------------------------------------
# The references


def test_python_blake3_equals_b3sum(b3):
    for n in (0, 1, 63, 64, 1023, 1024, 1025, 2048, 3 * 1024 + 5, 4096, 8 * 1024 + 1):
        data = random_bytes(n, seed=n)
        assert reference.blake3_py(data) == b3(data), n


def test_python_blake3_chunk_cv_is_the_root_of_a_one_chunk_input(b3):
    data = random_bytes(700, seed=3)
    assert reference.blake3_chunk_cv(data, 0, root=True) == b3(data)


def test_reference_pieces_by_hand():
    L = 1024
    # 8 leaves, shard = leaves 1..6: runs [1], [2,3], [4,5], [6]
    assert subtree_pieces(L, 6 * L, 8 * L, "blake3") == [(1, 0), (2, 1), (4, 1), (6, 0)]
    # the whole input of 8 leaves: two halves, never the root itself
    assert subtree_pieces(0, 8 * L, 8 * L, "blake3") == [(0, 2), (4, 2)]
    # a shard starting inside leaf 0 and ending inside leaf 3 holds leaves 1 and 2 whole
    assert subtree_pieces(10, 3 * L, 8 * L, "blake3") == [(1, 0), (2, 0)]
    # the short last leaf is whole when the shard reaches the end of the input
    assert subtree_pieces(2 * L, L + 5, 3 * L + 5, "blake3") == [(2, 1)]  # leaves 2, 3 of 4
    assert subtree_pieces(0, 100, 100, "blake3") == []  # one leaf: no piece


def test_shard_pieces_equal_the_brute_force_statement(ops):
    """Every shard of every small input (sizes in units of 1/4 leaf): the fake kernel's and the
    verifier's arithmetic equals the reference's."""
    for algorithm in ALGORITHMS:
        L = reference.LEAF_BYTES[algorithm]
        for quarters in range(0, 4 * 9 + 1):
            total = quarters * L // 4
            points = sorted({q * L // 4 for q in range(quarters + 1)} | {1, max(total - 1, 0)})
            points = [p for p in points if p <= total]
            for a in points:
                for b in points:
                    if b >= a:
                        assert ops.shard_pieces(a, b - a, total, algorithm) == \
                            subtree_pieces(a, b - a, total, algorithm), (algorithm, total, a, b)


# ---------------------------------------------------------------------------------------------
# hash_subtrees against the references


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hash_subtrees_values_equal_reference(ops, algorithm, device):
    """Random shards of inputs of every interesting size, all in one call: each row is the
    reference value of the piece the reference says comes next."""
    rng = random.Random(11)
    shards, starts, totals, want = [], [], [], []
    for total in sizes(algorithm):
        data = random_bytes(total, seed=total)
        cuts = random_cuts(rng, total, algorithm, rng.randrange(1, 5))
        for a, b in zip(cuts, cuts[1:]):
            shards.append(bytes_tensor(data[a:b], device))
            starts.append(a)
            totals.append(total)
            want += [subtree_value(data, f, k, algorithm)
                     for f, k in subtree_pieces(a, b - a, total, algorithm)]
    got = ops.hash_subtrees(shards, starts, totals, algorithm)
    assert got.device.type == device and got.dtype == torch.uint8
    assert digest_rows(got) == want


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_whole_input_as_one_shard_finishes_to_its_digest(ops, algorithm):
    for total in sizes(algorithm):
        data = random_bytes(total, seed=total + 1)
        if total <= reference.LEAF_BYTES[algorithm]:
            continue  # one leaf: no piece, the root needs the bytes
        t = bytes_tensor(data)
        values = ops.hash_subtrees([t], [0], [total], algorithm)
        firsts = [f for f, _ in ops.shard_pieces(0, total, total, algorithm)]
        got = ops.finish_subtrees(values, firsts, total, algorithm)
        assert bytes(got.tolist()) == full_digest(data, algorithm)
        assert torch.equal(got, ops.hash_tensors([t], algorithm)[0])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_shards_of_any_dtype_and_stride_hash_their_bytes(ops, algorithm):
    """A float shard, a transposed (non-contiguous) one: their bytes, as hash_tensors reads."""
    full = torch.randn(40, 96)  # 15360 bytes, rows of 384 bytes: cuts fall inside leaves
    data = reference.tensor_bytes(full)
    top, bottom = full[:13], full[13:].t().contiguous().t()
    assert not bottom.is_contiguous()
    got = ops.hash_subtrees([top, bottom], [0, 13 * 384], [len(data)] * 2, algorithm)
    want = [subtree_value(data, f, k, algorithm)
            for a, b in ((0, 13 * 384), (13 * 384, len(data)))
            for f, k in subtree_pieces(a, b - a, len(data), algorithm)]
    assert digest_rows(got) == want


def test_hash_subtrees_refuses_bad_arguments(ops):
    t = torch.zeros(100, dtype=torch.uint8)
    with pytest.raises(ValueError, match="tensor 0 .* does not fit in an input of 150 bytes"):
        ops.hash_subtrees([t], [60], [150])
    with pytest.raises(ValueError, match="give one of each per tensor"):
        ops.hash_subtrees([t, t], [0], [100, 100])
    with pytest.raises(ValueError, match="unknown algorithm 'md5'"):
        ops.hash_subtrees([t], [0], [100], "md5")
    with pytest.raises(ValueError, match="tensor 1 .*meta"):
        ops.hash_subtrees([t, torch.empty(4, device="meta")], [0, 0], [100, 4])
    assert ops.hash_subtrees([], [], []).shape == (0, 32)


def test_finish_subtrees_refuses_pieces_that_do_not_tile(ops):
    values = torch.zeros(3, 32, dtype=torch.uint8)
    total = 4 * 1024
    with pytest.raises(ValueError, match="not a subtree"):
        ops.finish_subtrees(values[:2], [0, 3], total)  # [0,3) straddles the root's split
    with pytest.raises(ValueError, match="whole tree"):
        ops.finish_subtrees(values[:1], [0], total)  # the root has no ROOT flag: refused
    with pytest.raises(ValueError, match="one leaf"):
        ops.finish_subtrees(values[:1], [0], 1000)
    with pytest.raises(ValueError, match="3 values but 2 first_leaves"):
        ops.finish_subtrees(values, [0, 2], total)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_opcheck(ops, algorithm):
    """Fake kernels agree with the real ones (shapes, devices), schema and dispatch checks."""
    data = torch.randint(0, 255, (9000,), dtype=torch.uint8)
    args = ([data[100:5000], data[5000:], torch.randn(7, 3)], [100, 5000, 0], [9000, 9000, 84],
            algorithm)
    result = torch.library.opcheck(torch.ops.sentry.hash_subtrees.default, args)
    assert all(v == "SUCCESS" for v in result.values()), result
    values = torch.ops.sentry.hash_subtrees.default([data], [0], [9000], algorithm)
    firsts = [f for f, _ in ops.shard_pieces(0, 9000, 9000, algorithm)]
    result = torch.library.opcheck(torch.ops.sentry.finish_subtrees.default,
                                   (values, firsts, 9000, algorithm))
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hash_subtrees_under_torch_compile(ops, algorithm):
    torch._dynamo.reset()
    data = torch.randint(0, 255, (10_000,), dtype=torch.uint8)
    fn = torch.compile(lambda a, b: torch.ops.sentry.hash_subtrees([a, b], [0, 3000],
                                                                   [10_000, 10_000], algorithm),
                       fullgraph=True, backend="aot_eager")
    got = fn(data[:3000], data[3000:])
    assert torch.equal(got, ops.hash_subtrees([data[:3000], data[3000:]], [0, 3000],
                                              [10_000, 10_000], algorithm))
