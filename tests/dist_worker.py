"""One rank of the multi-process tests (test_distributed.py): joins a gloo group through a file
store, runs every scenario in order (each one collective on every rank), and writes what it saw
to <out>/<rank>.pkl for the test process to check. A scenario's exception is recorded, not
raised, so one failure does not hide the others (every scenario ends on every rank, so the
ranks stay in step)."""
import datetime
import os
import pickle
import random
import sys
import time
import traceback

import torch
import torch.distributed as dist


def make_state():
    """The replicas' state dict: same on every rank. Sizes off and on leaf boundaries."""
    g = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(50, 16, generator=g),               # 3200 bytes
        "block.0.w": torch.randn(33, 40, generator=g),                  # 5280
        "block.0.b": torch.randn(40, generator=g),                      # 160: one leaf
        "norm.scale": torch.randn(16, generator=g).to(torch.bfloat16),
        "big": torch.randn(70, 129, generator=g),                       # 36120: rows of 516
        "pow2": torch.randint(0, 255, (64, 256), generator=g, dtype=torch.uint8),  # 16 KiB
        "steps": torch.tensor(7),
        "empty": torch.zeros(0, 5),
    }


def flip(t, byte, bit):
    t.view(-1).view(torch.uint8)[byte] ^= 1 << bit


def row_bounds(rows, world, rng):
    """Random row boundaries (shared by all ranks through the seed), 0-row shards included."""
    return [0] + sorted(rng.randrange(rows + 1) for _ in range(world - 1)) + [rows]


def shards(state, world, rank, seed):
    rng = random.Random(seed)
    local, layout, bounds = {}, {}, {}
    for name in sorted(state):
        t = state[name]
        if t.dim() == 0:
            local[name] = t.clone()  # held whole by every rank
            continue
        b = row_bounds(t.shape[0], world, rng)
        bounds[name] = b
        local[name] = t[b[rank]:b[rank + 1]].clone()
        layout[name] = (b[rank], tuple(t.shape))
    return local, layout, bounds


def expected_of(state, algorithm):
    import sentry

    names = sorted(state)
    digests = sentry.hash_tensors([state[n] for n in names], algorithm)
    return {n: bytes(d.tolist()) for n, d in zip(names, digests)}


# ---------------------------------------------------------------------------------------------
# scenarios: fn(rank, world, out) -> picklable result


def replicas_equal(rank, world, out):
    from sentry.distributed import check_replicas

    report = check_replicas(make_state())
    return {"ok": report.ok, "timings": sorted(report.timings_ms)}


def replica_flip(rank, world, out):
    from sentry.distributed import ReplicaMismatchError, check_replicas

    state = make_state()
    flipped = {world - 1: "block.0.w"} if world == 2 else {0: "embed.weight", 2: "big"}
    if rank in flipped:
        flip(state[flipped[rank]], 77, 3)
    report = check_replicas(state, raise_on_mismatch=False)
    try:
        check_replicas(state)
        error = None
    except ReplicaMismatchError as exc:
        error = (str(exc), exc.ranks, exc.changed)
    return {"diverging": report.diverging, "tensors": report.tensors, "error": error,
            "flipped": flipped}


def replica_flip_rank0_signed(rank, world, out):
    """With trusted digests a two-replica disagreement is attributed to the right rank."""
    from sentry.distributed import check_replicas

    state = make_state()
    trusted = expected_of(state, "blake3")
    if rank == 0:
        flip(state["pow2"], 5000, 0)
    report = check_replicas(state, expected=trusted, raise_on_mismatch=False)
    return {"diverging": report.diverging}


def replica_metadata(rank, world, out):
    from sentry.distributed import ReplicaMismatchError, check_replicas

    state = make_state()
    if rank == 1:
        state["extra"] = torch.zeros(3)
        state["norm.scale"] = state["norm.scale"].view(4, 4)
    try:
        check_replicas(state)
        return {"error": None}
    except ReplicaMismatchError as exc:
        return {"error": str(exc), "metadata": exc.report.metadata, "ranks": exc.ranks}


def replica_local_failure(rank, world, out):
    """A rank that cannot take part (a non-tensor in its state) is named; nobody hangs."""
    from sentry.distributed import check_replicas

    state = make_state()
    if rank == 1:
        state["bad"] = "not a tensor"
    try:
        check_replicas(state)
        return {"error": None}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"}


def sharded_ok(rank, world, out):
    from sentry.distributed import verify_sharded

    state = make_state()
    result = {}
    for algorithm in ("blake3", "sha256-tree"):
        for seed in range(3):
            local, layout, bounds = shards(state, world, rank, seed)
            report = verify_sharded(local, expected_of(state, algorithm), layout,
                                    algorithm=algorithm)
            result[(algorithm, seed)] = {"ok": report.ok, "digests": report.digests,
                                         "bounds": bounds, "sent": report.bytes_sent}
    return result


def sharded_flip(rank, world, out):
    """A flipped bit in any rank's shard: every rank names the tensor."""
    from sentry.errors import VerificationError
    from sentry.distributed import verify_sharded

    state = make_state()
    result = {}
    for algorithm in ("blake3", "sha256-tree"):
        trusted = expected_of(state, algorithm)
        for culprit in range(world):
            local, layout, bounds = shards(state, world, rank, seed=10 + culprit)
            # The tensor and byte to flip: the same choice on every rank (seeded).
            rng = random.Random(culprit)
            held = [n for n, b in bounds.items() if b[culprit + 1] > b[culprit]]
            name = rng.choice(held)
            if rank == culprit:
                flip(local[name], rng.randrange(local[name].numel() * local[name].element_size()),
                     rng.randrange(8))
            report = verify_sharded(local, trusted, layout, algorithm=algorithm,
                                    raise_on_mismatch=False)
            try:
                verify_sharded(local, trusted, layout, algorithm=algorithm)
                message = None
            except VerificationError as exc:
                message = str(exc)
            result[(algorithm, culprit)] = {"name": name, "changed": report.changed,
                                            "message": message}
    return result


def sharded_local_failure(rank, world, out):
    """A rank with a bad layout is named by the others; nobody hangs."""
    from sentry.distributed import verify_sharded

    state = make_state()
    local, layout, _ = shards(state, world, rank, seed=4)
    if rank == 1:
        layout["big"] = (0, (70, 130))  # not its shape
    try:
        verify_sharded(local, expected_of(state, "blake3"), layout)
        return {"error": None}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"}


def sharded_signed(rank, world, out):
    """Against a signature bundle over the full tensors; a wrong key fails on every rank."""
    import sentry
    from sentry.crypto import PrivateKey, write_private_key, write_public_key
    from sentry.distributed import verify_sharded

    state = make_state()
    sig, pub, other = (os.path.join(out, f) for f in ("model.sig", "key.pub", "other.pub"))
    if rank == 0:
        key = PrivateKey.generate()
        write_private_key(os.path.join(out, "key.pem"), key)
        write_public_key(pub, key.public_key())
        write_public_key(other, PrivateKey.generate().public_key())
        sentry.sign_model(state, os.path.join(out, "key.pem"), sig, algorithm="sha256-tree")
    dist.barrier()
    local, layout, _ = shards(state, world, rank, seed=3)
    report = verify_sharded(local, sig, layout, public_key=pub)
    try:
        verify_sharded(local, sig, layout, public_key=other)
        wrong = None
    except Exception as exc:  # noqa: BLE001
        wrong = f"{type(exc).__name__}: {exc}"
    return {"ok": report.ok, "algorithm": report.algorithm, "wrong_key": wrong}


def sharded_dtensor(rank, world, out):
    """DTensor Shard(0) (as FSDP2 lays parameters out) and Replicate, on a CPU mesh."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor, init_device_mesh

    from sentry.distributed import verify_sharded

    state = make_state()
    mesh = init_device_mesh("cpu", (world,))
    dts = {n: distribute_tensor(t, mesh, [Replicate() if t.dim() == 0 else Shard(0)])
           for n, t in state.items()}
    trusted = expected_of(state, "blake3")
    ok = verify_sharded(dts, trusted).ok
    if rank == world - 1:
        flip(dts["big"].to_local(), 3, 1)
    changed = verify_sharded(dts, trusted, raise_on_mismatch=False).changed
    return {"ok": ok, "changed": changed}


SCENARIOS = [replicas_equal, replica_flip, replica_flip_rank0_signed, replica_metadata,
             replica_local_failure, sharded_ok, sharded_flip, sharded_local_failure,
             sharded_signed, sharded_dtensor]


def main(rank, world, store, out, names):
    run(SCENARIOS, rank, world, store, out, names)


def run(scenarios, rank, world, store, out, names):
    """Joins the gloo group, runs the named scenarios in order, writes <out>/<rank>.pkl."""
    torch.set_num_threads(1)  # several ranks share two cores
    # Loopback: gloo otherwise picks the interface of the host name, which a container may not
    # resolve.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    results = {"seconds": {}}
    for fn in scenarios:
        if fn.__name__ not in names:
            continue
        t0 = time.perf_counter()
        try:
            results[fn.__name__] = fn(rank, world, out)
        except Exception:  # noqa: BLE001  recorded for the test to show
            results[fn.__name__] = {"exception": traceback.format_exc()}
        results["seconds"][fn.__name__] = round(time.perf_counter() - t0, 3)
    with open(os.path.join(out, f"{rank}.pkl"), "wb") as f:
        pickle.dump(results, f)
    dist.destroy_process_group()
    # Leave without interpreter finalization: a gloo worker thread may still be dropping the
    # last reference to a collective's tensors, which takes the GIL and aborts the process once
    # Python is shutting down (pytorch/pytorch#190489, #179291). Everything is on disk by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
