"""The weight-sync checks (sentry.weightsync, verify_sharded) on NCCL with two GPUs. Run under
torchrun, every rank running the same tests in the same order (their collectives pair up):

    torchrun --nproc-per-node=2 -m pytest -q -p no:cacheprovider tests/test_weightsync_nccl.py

Skipped outside torchrun, or without two GPUs. The gloo (CPU) versions of these checks, with
more layouts and 4 ranks, are in test_weightsync_dist.py; these add the CUDA kernels and NCCL:
CUDA messages equal to the CPU ones, digests finished on the GPU equal to the references of the
full tensors (b3sum, RFC 9162), flipped bits named with their rank on both ranks alike.
"""
import datetime
import os
import random
import tempfile

import pytest
import torch
import torch.distributed as dist

import layouts
import reference
import sync_worker

IN_TORCHRUN = os.environ.get("WORLD_SIZE") == "2" and "LOCAL_RANK" in os.environ
# SENTRY_SYNC_TEST_GLOO=1: the same tests on CPU tensors over gloo, to check this module itself
# on a machine without GPUs (still under torchrun --nproc-per-node=2).
GLOO = os.environ.get("SENTRY_SYNC_TEST_GLOO") == "1"
DEVICE = "cpu" if GLOO else "cuda"
pytestmark = ([] if GLOO else [pytest.mark.cuda]) + [pytest.mark.skipif(
    not (IN_TORCHRUN and (GLOO or (torch.cuda.is_available() and torch.cuda.device_count() >= 2))),
    reason="needs torchrun --nproc-per-node=2 and two CUDA GPUs")]

ALGORITHMS = ("blake3", "sha256-tree")


@pytest.fixture(scope="module")
def rank():
    if GLOO:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    else:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    # A rank that fails alone leaves the other in a collective: time out rather than hang.
    dist.init_process_group("gloo" if GLOO else "nccl", timeout=datetime.timedelta(seconds=120))
    yield dist.get_rank()
    dist.barrier()
    dist.destroy_process_group()


def same_everywhere(value):
    """The value on every rank (asserts that they agree)."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    assert all(v == out[0] for v in out), out
    return out[0]


def want_hex(full, algorithm):
    if algorithm == "blake3" and not reference.have_b3sum():
        pytest.skip("b3sum is not installed")
    names = sorted(full)
    got = reference.reference_digests([reference.tensor_bytes(full[n]) for n in names], algorithm)
    return {n: d.hex() for n, d in zip(names, got)}


def on_gpu(ranks):
    return [({k: v.to(DEVICE) for k, v in s.items()}, lay, mp) for s, lay, mp in ranks]


def trainer_manifest(full, rank, algorithm):
    from sentry.weightsync import ManifestBuilder

    state, layout, mapping = on_gpu(layouts.sharded(random.Random(99), full, 2,
                                                    replicate_some=False))[rank]
    return ManifestBuilder(state, layout=layout, mapping=mapping, algorithm=algorithm).build()


def error_of(fn):
    from sentry.errors import VerificationError

    try:
        fn()
        return None
    except VerificationError as exc:
        return (type(exc).__name__, str(exc), tuple(exc.ranks), tuple(exc.changed))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cuda_messages_equal_cpu_messages(rank, algorithm):
    from sentry import syncplan

    if GLOO:
        pytest.skip("no CUDA kernels to compare over gloo")
    rng = random.Random(1)
    for _ in range(3):
        full = layouts.random_full(rng)
        ranks = layouts.sharded(rng, full, 2)
        parts = [syncplan.collect(*r, {})[1] for r in ranks]
        plan = syncplan.Plan(parts, rank, algorithm)
        header, body = plan.local[rank]
        src, _ = syncplan.collect(*ranks[rank], {})
        messages = []
        for device in ("cpu", "cuda"):
            msg, status = torch.ops.sentry.hash_runs.default(
                [s.to(device) for s in src], torch.from_numpy(body).to(device), header,
                plan.message_bytes, algorithm)
            assert not status.any()
            messages.append(msg.cpu())
        assert torch.equal(*messages)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_explicit_layouts_on_two_gpus(rank, algorithm):
    """Row, column and 2-D splits, fused (both kinds) and renamed tensors, against a manifest
    built on the GPUs from another layout; a flipped bit on either rank is named on both."""
    from sentry.weightsync import SyncVerifier

    for kind in ("sharded", "fused"):
        rng = random.Random(7)
        full = layouts.fusable_full(rng) if kind == "fused" else layouts.random_full(rng)
        want = want_hex(full, algorithm)
        manifest = trainer_manifest(full, rank, algorithm)
        assert {n: d.hex() for n, (_, _, d) in manifest.tensors.items()} == want

        def make():
            gen = layouts.fused if kind == "fused" else layouts.sharded
            return on_gpu(gen(random.Random(5), full, 2))[rank]

        state, layout, mapping = make()
        report = SyncVerifier(state, manifest, layout=layout, mapping=mapping).check()
        assert report.ok and report.digests == want
        for culprit in (0, 1):
            state, layout, mapping = make()
            if rank == culprit:
                layouts.flip_one_bit(random.Random(culprit), {rank: state}, rank)
            verifier = SyncVerifier(state, manifest, layout=layout, mapping=mapping)
            error = same_everywhere(error_of(verifier.check))
            assert error is not None and culprit in error[2], error


def test_dtensor_layouts_on_a_cuda_mesh(rank):
    """Shard(d) on any dim and Replicate on a 1-D mesh; TP x DP on a 2 x 1 mesh (every byte
    on both GPUs, so a flipped bit is named with exactly its rank)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    from sentry.weightsync import SyncVerifier

    full = layouts.random_full(random.Random(3), count=7)
    want = want_hex(full, "blake3")
    manifest = trainer_manifest(full, rank, "blake3")
    rng = random.Random(4)
    for shape in ((2,), (2, 1)):
        mesh = init_device_mesh(DEVICE, shape)
        placements = {n: ([Replicate()] if t.dim() == 0 else [Shard(rng.randrange(t.dim()))])
                      for n, t in full.items()}
        if len(shape) == 2:
            placements = {n: [Replicate()] + p for n, p in placements.items()}

        def make():
            return {n: distribute_tensor(t.to(DEVICE), mesh, placements[n]) for n, t in full.items()}

        report = SyncVerifier(make(), manifest).check()
        assert report.ok and report.digests == want
        for culprit in (0, 1):
            state = make()
            if rank == culprit:
                held = {k: v._local_tensor for k, v in state.items() if v._local_tensor.numel()}
                layouts.flip_one_bit(random.Random(culprit), {rank: held}, rank)
            error = same_everywhere(error_of(SyncVerifier(state, manifest).check))
            assert error is not None and culprit in error[2], error
            if len(shape) == 2:
                assert error[2] == (culprit,), error


def test_verify_sharded_fsdp2_layout_and_its_cache(rank):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    from sentry import distributed

    full = layouts.random_full(random.Random(8), count=7)
    want = want_hex(full, "sha256-tree")
    digests = {n: bytes.fromhex(h) for n, h in want.items()}
    mesh = init_device_mesh(DEVICE, (2,))
    state = {n: distribute_tensor(t.to(DEVICE), mesh, [Replicate()] if t.dim() == 0 else [Shard(0)])
             for n, t in full.items()}
    distributed._VERIFIERS.clear()
    for _ in range(3):
        report = distributed.verify_sharded(state, digests, algorithm="sha256-tree")
        assert report.ok and report.digests == want
    assert len(distributed._VERIFIERS) == 1


def test_signed_manifest_from_the_gpus(rank):
    from sentry.weightsync import SyncVerifier, WeightManifest

    full = layouts.random_full(random.Random(9), count=5)
    manifest = trainer_manifest(full, rank, "blake3")
    box = [tempfile.mkdtemp() if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)  # one folder for both (one host)
    sig, pub = sync_worker.signed_by_rank0(manifest, box[0], rank)
    assert WeightManifest.from_signature(sig, public_key=pub).tensors == manifest.tensors
    state = {n: t.to(DEVICE) for n, t in full.items()}
    assert SyncVerifier(state, sig, public_key=pub).check().ok
