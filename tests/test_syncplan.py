"""The run-based sharded hash (hash_runs, finish_runs and their planners, sentry.syncplan)
with ranks simulated in one process: each simulated rank's message is made by hash_runs from
its own tensors, the messages are concatenated as an all-gather would, and finish_runs must
give the digests of the full tensors as tests/reference.py computes them independently
(b3sum, RFC 9162 over hashlib). Many random layouts per test; the multi-process runs (gloo,
DTensors) are in test_weightsync_dist.py.
"""
import random
import zlib

import numpy as np
import pytest
import torch

import layouts
import reference
from sentry import syncplan

ALGORITHMS = ("blake3", "sha256-tree")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def simulate(ranks, algorithm, full_shapes=None, device="cpu", segment_levels=None):
    """(plan, gathered bytes, outputs [Q, 32]) of ranks = [(state, layout, mapping)]."""
    parts, sources = [], []
    for state, layout, mapping in ranks:
        src, part = syncplan.collect({k: v.to(device) for k, v in state.items()}, layout, mapping,
                                     full_shapes or {})
        parts.append(part)
        sources.append(src)
    plan = syncplan.Plan(parts, 0, algorithm, keep_all=True, segment_levels=segment_levels)
    msgs = []
    for r, src in enumerate(sources):
        header, body = plan.local[r]
        msg, status = torch.ops.sentry.hash_runs.default(
            src, torch.from_numpy(body).to(device), list(header), plan.message_bytes, algorithm)
        assert msg.device.type == device and not status.any()
        msgs.append(msg)
    gathered = torch.cat(msgs)
    header, body, _ = plan.finish
    out, status = torch.ops.sentry.finish_runs.default(gathered, body.to(device), list(header),
                                                       algorithm)
    assert not status.any()
    return plan, gathered.cpu().numpy(), out.cpu().numpy()


def reference_digests(full, algorithm):
    names = sorted(full)
    want = reference.reference_digests([reference.tensor_bytes(full[n]) for n in names],
                                       algorithm)
    return dict(zip(names, want))


def roots_by_tensor(plan, out):
    """{name: set of the digests its copies finished to}."""
    got = {}
    for q, t in enumerate(plan.tree_tensor):
        got.setdefault(plan.names[t], set()).add(out[q].tobytes())
    return got


@pytest.fixture(params=ALGORITHMS)
def algorithm(request):
    if request.param == "blake3" and not reference.have_b3sum():
        pytest.skip("b3sum is not installed: no independent BLAKE3 reference")
    return request.param


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mesh", [(2,), (3,), (4,), (2, 2), (1, 3)])
def test_sharded_layouts_finish_to_the_full_digests(algorithm, mesh, device):
    """Random splits along random dims over 1-D and 2-D meshes (replicated mesh dims too)."""
    rng = random.Random(zlib.crc32(f'{algorithm}/{mesh}'.encode()))
    for _ in range(4):
        full = layouts.random_full(rng)
        world = int(np.prod(mesh))
        plan, _, out = simulate(layouts.sharded(rng, full, world, mesh), algorithm, device=device)
        assert not plan.problems, plan.problems
        want = reference_digests(full, algorithm)
        assert roots_by_tensor(plan, out) == {n: {d} for n, d in want.items()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("world", [1, 2, 4])
def test_fused_and_renamed_layouts_finish_to_the_full_digests(algorithm, world, device):
    rng = random.Random(world * 7 + len(algorithm))
    for _ in range(4):
        full = layouts.fusable_full(rng)
        shapes = {n: tuple(t.shape) for n, t in full.items()}
        plan, _, out = simulate(layouts.fused(rng, full, world), algorithm, shapes, device)
        assert not plan.problems, plan.problems
        want = reference_digests(full, algorithm)
        assert roots_by_tensor(plan, out) == {n: {d} for n, d in want.items()}


def test_a_flipped_bit_is_attributed_to_its_rank_when_copies_exist(algorithm):
    """2x2 mesh with replication: a flipped bit on one rank changes only that rank's copy, and
    attribute() names exactly that rank; every other tensor still matches."""
    rng = random.Random(3)
    named = 0
    for trial in range(12):
        full = layouts.random_full(rng)
        ranks = layouts.sharded(rng, full, 4, (2, 2))
        want = reference_digests(full, algorithm)
        culprit = trial % 4
        key = layouts.flip_one_bit(rng, [s for s, _, _ in ranks], culprit)
        plan, gathered, out = simulate(ranks, algorithm)
        got = roots_by_tensor(plan, out)
        assert {n for n in got if got[n] != {want[n]}} == {key}
        t = plan.names.index(key)
        blamed, why, settled = syncplan.attribute(plan, gathered, want[key], t)
        assert culprit in blamed
        if settled:
            assert blamed == [culprit]
            named += 1
    assert named > 0


def test_segments_name_the_rank_of_a_bad_segment(algorithm):
    """Pieces capped at a segment level: the finish also gives the tree's segment nodes,
    which equal the reference subtree values (so a bad byte can be placed)."""
    rng = random.Random(9)
    L = reference.LEAF_BYTES[algorithm]
    full = {"w": torch.randint(0, 255, (37, 1000), dtype=torch.int32).to(torch.uint8)}
    data = reference.tensor_bytes(full["w"])
    n = -(-len(data) // L)
    level = 1 if algorithm == "sha256-tree" else 3
    plan, _, out = simulate(layouts.sharded(rng, full, 3, replicate_some=False), algorithm,
                            segment_levels={"w": level})
    segs = plan.finish[2].numpy()
    assert len(segs) == -(-n // (1 << level))
    Q = len(plan.tree_tensor)
    for k, (q, lo, hi) in enumerate(segs):
        if hi - lo == 1 << level:
            assert out[Q + k].tobytes() == reference.subtree_value(data, lo, level, algorithm)


def row_split(full, bounds):
    from sentry.layout import Region

    shape = tuple(full.shape)
    return [({"w": full[a:b].clone()}, {"w": Region("w", shape, (a, 0), (b - a, shape[1]))}, {})
            for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize("device", DEVICES)
def test_row_splits_finish_to_the_full_digest(algorithm, device):
    """Rows of 3 to 600 bytes (boundaries inside leaves), 0-row shards, shards smaller than a
    leaf, sizes at power-of-two leaf counts, 1 to 6 ranks."""
    rng = random.Random(5)
    L = reference.LEAF_BYTES[algorithm]
    shapes = [(0, 7), (1, 3), (5, 100), (L // 4, 4), (2 * L // 4, 4), (4 * L // 4, 4),
              (8 * L // 8, 8), (8 * L // 8 + 1, 8), (37, 150), (64, 600), (33, L // 4)]
    for shape in shapes:
        full = torch.randint(-2**31, 2**31 - 1, shape, dtype=torch.int32)
        want = reference_digests({"w": full}, algorithm)["w"]
        for _ in range(4):
            world = rng.randrange(1, 7)
            bounds = layouts.cuts(rng, shape[0], world)
            plan, _, out = simulate(row_split(full, bounds), algorithm, device=device)
            assert roots_by_tensor(plan, out) == {"w": {want}}, (shape, bounds)


def test_a_flipped_bit_on_any_rank_is_caught(algorithm):
    """No copies: the tensor is caught and its holders named (no copy says which one)."""
    rng = random.Random(6)
    full = torch.randint(0, 255, (61, 333), dtype=torch.uint8)  # rows of 333 bytes
    want = reference_digests({"w": full}, algorithm)["w"]
    bounds = [0, 3, 4, 4, 30, 61]  # a 1-row shard (smaller than a leaf) and a 0-row shard
    for culprit in (0, 1, 3, 4):
        for _ in range(3):  # a random byte: sometimes a boundary byte, sometimes a whole leaf
            ranks = row_split(full, bounds)
            layouts.flip_one_bit(rng, [s for s, _, _ in ranks], culprit)
            plan, gathered, out = simulate(ranks, algorithm)
            assert roots_by_tensor(plan, out)["w"] != {want}
            blamed, why, settled = syncplan.attribute(plan, gathered, want, 0)
            assert blamed == [0, 1, 3, 4] and why == "the bytes differ" and not settled


def test_tiling_problems_are_named():
    full = {"w": torch.arange(40, dtype=torch.float32).view(10, 4)}
    from sentry.layout import Region

    def rows(a, b):
        return ({"w": full["w"][a:b].clone()}, {"w": Region("w", (10, 4), (a, 0), (b - a, 4))},
                {})

    plan, _, _ = simulate([rows(0, 4), rows(6, 10)], "blake3")
    assert plan.problems["w"] == "bytes [64, 96) are on no rank"
    plan, _, _ = simulate([rows(0, 6), rows(4, 10)], "blake3")
    assert plan.problems["w"] == "rank 1's bytes [64, 160) overlap rank 0's"
    assert plan.blame["w"] == [0, 1]


def test_hash_runs_refuses_mismatched_plans(ops):
    t = torch.zeros(5000, dtype=torch.uint8)
    runs = torch.tensor([[0, 0, 0, 5000, 5000, -1]], dtype=torch.int64)
    header, body = ops.plan_runs(runs, "blake3")
    with pytest.raises(ValueError, match="leaves of 1024 bytes"):
        ops.hash_runs([t], body, header, 4096, "sha256-tree")
    with pytest.raises(ValueError, match="below the plan's"):
        ops.hash_runs([t], body, header, 1, "blake3")
    with pytest.raises(ValueError, match="body has"):
        ops.hash_runs([t], body[:-1], header, 4096, "blake3")
    with pytest.raises(ValueError, match="run 0 does not fit its tensor"):
        ops.hash_runs([t[:4000]], body, header, 4096, "blake3")  # the run reads 5000 bytes
    edge = torch.tensor([[0, 0, 100, 1000, 5000, -1]], dtype=torch.int64)  # edge bytes only
    header, body = ops.plan_runs(edge, "blake3")
    with pytest.raises(ValueError, match="edge fragment 0 lies outside its tensor"):
        ops.hash_runs([t[:500]], body, header, 4096, "blake3")
    bad = runs.clone()
    bad[0, 3] = 5001  # longer than its tensor
    with pytest.raises(ValueError, match="run 0: shard \\[0, 5001\\) lies outside"):
        ops.plan_runs(bad, "blake3")


def test_plan_runs_pieces_equal_the_brute_force_statement(ops):
    """Every piece the planner lists is one the reference says the run holds, in order."""
    rng = random.Random(2)
    for algorithm in ALGORITHMS:
        L = reference.LEAF_BYTES[algorithm]
        for _ in range(200):
            total = rng.randrange(0, 40 * L)
            a = rng.randrange(total + 1)
            b = rng.randrange(a, total + 1)
            header, body = ops.plan_runs(torch.tensor([[0, 0, a, b - a, total, -1]]), algorithm)
            R, LR, B, K = header[2], header[3], header[4], header[5]
            pieces = body.numpy()[8 * R + LR + B:8 * R + LR + B + 4 * K].reshape(K, 4)
            assert [(int(f), int(k)) for f, k in pieces[:, 2:4]] == \
                reference.subtree_pieces(a, b - a, total, algorithm)


def test_fake_kernels_agree_with_the_real_ones(ops):
    rng = random.Random(4)
    full = layouts.random_full(rng, count=3)
    ranks = layouts.sharded(rng, full, 2)
    src, part = syncplan.collect(*ranks[0], {})
    plan = syncplan.Plan([part, syncplan.collect(*ranks[1], {})[1]], 0, "blake3")
    header, body = plan.local[0]
    args = (src, torch.from_numpy(body), list(header), plan.message_bytes, "blake3")
    result = torch.library.opcheck(torch.ops.sentry.hash_runs.default, args,
                                   test_utils=("test_schema", "test_faketensor"))
    assert all(v == "SUCCESS" for v in result.values()), result
    message, _ = torch.ops.sentry.hash_runs.default(*args)
    fheader, fbody, _ = plan.finish
    args = (torch.cat([message, message]), fbody, list(fheader), "blake3")
    result = torch.library.opcheck(torch.ops.sentry.finish_runs.default, args,
                                   test_utils=("test_schema", "test_faketensor"))
    assert all(v == "SUCCESS" for v in result.values()), result
