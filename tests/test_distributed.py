"""check_replicas and verify_sharded across real processes: gloo groups of 2 and 4 ranks on the
CPU (tests/dist_worker.py runs every scenario in one spawn per world size, to keep the cost of
starting processes low). Digests the ranks finish are checked here against the references.

The same functions run on NCCL under torchrun (benchmarks/bench_guard.py --distributed).
"""
import pickle
import time

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

import dist_worker
import reference
from dist_worker import make_state

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

TIMEOUT_S = 240


def _run(world, tmp_path, names, worker=dist_worker.main):
    store = tmp_path / "store"
    ctx = mp.start_processes(worker, args=(world, str(store), str(tmp_path), names),
                             nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"{world} ranks did not finish within {TIMEOUT_S} s")
    results = []
    for rank in range(world):
        with open(tmp_path / f"{rank}.pkl", "rb") as f:
            results.append(pickle.load(f))
    return results


@pytest.fixture(scope="module", params=[2, 4], ids=lambda w: f"{w}ranks")
def ranks(request, tmp_path_factory):
    world = request.param
    names = [fn.__name__ for fn in dist_worker.SCENARIOS]
    return world, _run(world, tmp_path_factory.mktemp(f"dist{world}"), names)


def each(ranks, scenario):
    """The scenario's result on every rank; fails with the worker's traceback if it raised."""
    world, results = ranks
    out = [r[scenario] for r in results]
    for rank, r in enumerate(out):
        if isinstance(r, dict) and "exception" in r:
            pytest.fail(f"rank {rank} of {world}: {scenario} raised\n{r['exception']}")
    return world, out


def test_equal_replicas_pass(ranks):
    _, out = each(ranks, "replicas_equal")
    assert all(r["ok"] for r in out)
    assert "exchange digests" in out[0]["timings"]


def test_flipped_bit_names_rank_and_tensor(ranks):
    world, out = each(ranks, "replica_flip")
    flipped = out[0]["flipped"]
    for r in out:  # every rank reaches the same verdict
        assert r["diverging"] == {rank: [name] for rank, name in flipped.items()}
        assert r["tensors"] == {name: [rank] for rank, name in flipped.items()}
        message, error_ranks, changed = r["error"]
        assert error_ranks == sorted(flipped) and changed == sorted(flipped.values())
        for rank, name in flipped.items():
            assert f"rank {rank}: {name}" in message


def test_signed_reference_attributes_two_replica_disagreement(ranks):
    _, out = each(ranks, "replica_flip_rank0_signed")
    assert all(r["diverging"] == {0: ["pow2"]} for r in out)


def test_different_tensor_lists_are_described_not_hashed(ranks):
    world, out = each(ranks, "replica_metadata")
    for r in out:
        assert r["ranks"] == [1] and set(r["metadata"]) == {1}
        assert "extra: extra" in r["metadata"][1]
        assert "dtype/shape differs: norm.scale" in r["metadata"][1]
        assert "rank 1" in r["error"]


def test_a_rank_that_cannot_take_part_is_named_and_nobody_hangs(ranks):
    world, out = each(ranks, "replica_local_failure")
    assert out[1]["error"].startswith("FormatError") and "'bad'" in out[1]["error"]
    for rank in set(range(world)) - {1}:
        assert out[rank]["error"].startswith("ReplicaMismatchError")
        assert "rank 1: could not take part" in out[rank]["error"]


@pytest.mark.parametrize("algorithm", ["blake3", "sha256-tree"])
def test_sharded_digests_equal_unsharded_reference(ranks, algorithm):
    if algorithm == "blake3" and not reference.have_b3sum():
        pytest.skip("b3sum is not installed: no independent BLAKE3 reference")
    world, out = each(ranks, "sharded_ok")
    state = make_state()
    names = sorted(state)
    blobs = [reference.tensor_bytes(state[n]) for n in names]
    want = reference.reference_digests(blobs, algorithm)
    for seed in range(3):
        results = [r[(algorithm, seed)] for r in out]
        assert all(r["ok"] for r in results)
        for r in results:  # 0-dim tensors, held whole by every rank, too
            assert r["digests"] == {n: want[names.index(n)].hex() for n in names}


def test_sharded_flipped_bit_on_any_rank_is_caught(ranks):
    world, out = each(ranks, "sharded_flip")
    for algorithm in ("blake3", "sha256-tree"):
        for culprit in range(world):
            results = [r[(algorithm, culprit)] for r in out]
            name = results[0]["name"]
            for r in results:
                assert r["changed"] == [name]
                assert f"'{name}'" in r["message"]


def test_sharded_rank_that_cannot_take_part_is_named(ranks):
    world, out = each(ranks, "sharded_local_failure")
    assert out[1]["error"].startswith("FormatError") and "'big'" in out[1]["error"]
    for rank in set(range(world)) - {1}:
        assert out[rank]["error"].startswith("FormatError")
        assert "rank 1 could not take part" in out[rank]["error"] and "'big'" in out[rank]["error"]


def test_sharded_against_a_signature(ranks):
    _, out = each(ranks, "sharded_signed")
    for r in out:
        assert r["ok"] and r["algorithm"] == "sha256-tree"
        assert r["wrong_key"].startswith("VerificationError")
        assert "does not verify with this key" in r["wrong_key"]


def test_dtensor_shards(ranks):
    _, out = each(ranks, "sharded_dtensor")
    for r in out:
        assert r["ok"] and r["changed"] == ["big"]


def test_world_of_one_without_a_process_group():
    """Outside torch.distributed both functions run as a world of one rank."""
    from sentry.distributed import check_replicas, verify_sharded

    assert not dist.is_initialized()
    state = make_state()
    assert check_replicas(state).ok
    digests = dist_worker.expected_of(state, "blake3")
    report = verify_sharded(state, digests, {"big": (0, (70, 129))})
    assert report.ok and report.digests["big"] == digests["big"].hex()
    state["big"][3, 4] += 1
    assert verify_sharded(state, digests, {"big": (0, (70, 129))},
                          raise_on_mismatch=False).changed == ["big"]


def test_layout_errors_name_the_tensor():
    from sentry.distributed import verify_sharded
    from sentry.errors import FormatError

    state = make_state()
    digests = dist_worker.expected_of(state, "blake3")
    with pytest.raises(FormatError, match="'big': local shape \\[70, 129\\] is not a row shard"):
        verify_sharded(state, digests, {"big": (0, (70, 130))})
    with pytest.raises(FormatError, match="'big': rows \\[5, 75\\) are outside its 70 rows"):
        verify_sharded(state, digests, {"big": (5, (70, 129))})
    with pytest.raises(FormatError, match="does not have: \\['nope'\\]"):
        verify_sharded(state, digests, {"nope": (0, (1,))})
