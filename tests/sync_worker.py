"""One rank of test_weightsync_dist.py: weight-sync scenarios (sentry.weightsync) over a gloo
group of 2 or 4 CPU processes, run by dist_worker.run. Every rank builds the same full tensors
from a seed and keeps its own part; results are checked by the test process against
independent reference digests of the full tensors."""
import os
import random
import zlib

import torch
import torch.distributed as dist

import dist_worker
import layouts


def full_tensors(seed):
    return layouts.random_full(random.Random(seed), count=7)


def outcome(fn):
    """(report, None) or (None, (type, message, ranks, changed)) of a check."""
    from sentry.errors import VerificationError

    try:
        return fn(), None
    except VerificationError as exc:
        return None, (type(exc).__name__, str(exc), tuple(exc.ranks), tuple(exc.changed))


def trainer_manifest(full, rank, world, algorithm="blake3"):
    """The manifest as a sending side would build it: an FSDP-like row split (explicit
    layout, random row boundaries shared by all ranks), hashed where the rows are."""
    from sentry.weightsync import ManifestBuilder

    ranks = layouts.sharded(random.Random(99), full, world, replicate_some=False)
    state, layout, mapping = ranks[rank]
    return ManifestBuilder(state, layout=layout, mapping=mapping, algorithm=algorithm).build()


def signed_by_rank0(manifest, folder, rank):
    """(signature, public key) paths in `folder` (shared by the ranks): rank 0 makes a key and
    signs the manifest; the others wait for it."""
    from sentry.crypto import PrivateKey, write_private_key, write_public_key

    sig, pub, pem = (os.path.join(folder, f"sync.{x}") for x in ("sig", "pub", "pem"))
    if rank == 0:
        key = PrivateKey.generate()
        write_private_key(pem, key)
        write_public_key(pub, key.public_key())
        manifest.sign(pem, sig)
    dist.barrier()
    return sig, pub


def _flip_trials(rank, world, make, manifest, trials, rng_seed):
    """For each trial: a bit flipped on one rank (cycling), the outcome on this rank."""
    from sentry.layout import local_tensor
    from sentry.weightsync import SyncVerifier

    out = []
    for trial in range(trials):
        state, layout, mapping = make()
        culprit = trial % world
        rng = random.Random(rng_seed + trial)
        key = None
        held = {k: local_tensor(v) for k, v in state.items() if local_tensor(v).numel()}
        if rank == culprit and held:
            key = layouts.flip_one_bit(rng, {rank: held}, rank)
        verifier = SyncVerifier(state, manifest, layout=layout, mapping=mapping)
        report, error = outcome(lambda: verifier.check())
        out.append({"culprit": culprit, "key": key, "error": error})
    return out


def dtensor_placements(full, kind, label):
    """{name: placements} of a DTensor scenario: a random Shard dim per tensor (some tensors
    Replicate on a 1-D mesh), seeded by the scenario so the test process can rebuild them."""
    from torch.distributed.tensor import Replicate, Shard

    rng = random.Random(zlib.crc32(f'{kind}/{label}'.encode()))
    ndim = 1 if label == "1d" else 2
    placements = {}
    for name, t in sorted(full.items()):
        if t.dim() == 0:
            placements[name] = [Replicate()] * ndim
        elif kind == "shard":
            placements[name] = [Replicate() if rng.random() < 0.2 else
                                Shard(rng.randrange(t.dim()))]
        elif kind == "tpxdp":
            placements[name] = [Replicate(), Shard(rng.randrange(t.dim()))]
        elif kind == "hsdp":
            placements[name] = [Replicate(), Shard(0)]
        else:
            placements[name] = [Shard(rng.randrange(t.dim())), Shard(rng.randrange(t.dim()))]
    return placements


# ---------------------------------------------------------------------------------------------
# scenarios


def dtensor_layouts(rank, world, out):
    """DTensor Shard(d) on any dim and Replicate, on 1-D and 2-D CPU meshes (TP x DP, HSDP,
    Shard x Shard): verified against a manifest built from another (row-split) layout."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    from sentry.weightsync import SyncVerifier

    full = full_tensors(1)
    manifest = trainer_manifest(full, rank, world)
    meshes = [((world,), "1d")] + ([((2, 2), "2d")] if world == 4 else [((1, 2), "2d")])
    result = {"manifest": {n: d.hex() for n, (_, _, d) in manifest.tensors.items()}}
    for shape, label in meshes:
        mesh = init_device_mesh("cpu", shape)
        for kind in ("shard", "tpxdp", "hsdp", "shardxshard"):
            if (label == "1d") != (kind == "shard"):
                continue
            placements = dtensor_placements(full, kind, label)

            def make():
                return ({n: distribute_tensor(t.clone(), mesh, placements[n])
                         for n, t in sorted(full.items())}, None, None)

            state, _, _ = make()
            report = SyncVerifier(state, manifest).check()
            trials = _flip_trials(rank, world, make, manifest, 2 * world, 7)
            result[(label, kind)] = {"ok": report.ok, "digests": report.digests,
                                     "holders": report.holders, "flips": trials,
                                     "sent": report.bytes_sent}
    # A DTensor of a fused parameter (the concatenation of q, k, v), sharded on a random dim.
    from sentry.weightsync import Fused

    full = layouts.fusable_full(random.Random(21))
    manifest = trainer_manifest(full, rank, world)
    mesh = init_device_mesh("cpu", (world,))
    rng = random.Random(22)
    fused, mapping = {}, {}
    names = sorted(full)
    for k in range(0, len(names) - 2, 3):
        group = names[k:k + 3]
        dim = next(d for d in (0, 1) if layouts.fuse_dims_agree(full, group, d))
        cat = torch.cat([full[n] for n in group], dim)
        fused[f"fused{k}"] = (cat, [Shard(rng.randrange(cat.dim()))])
        mapping[f"fused{k}"] = Fused(tuple(group), dim)
    for n in names[3 * (len(names) // 3):]:
        fused["engine." + n] = (full[n], [Replicate()])
        mapping["engine." + n] = n

    def make_fused():
        return ({k: distribute_tensor(t.clone(), mesh, p) for k, (t, p) in fused.items()}, None,
                mapping)

    state, _, _ = make_fused()
    report = SyncVerifier(state, manifest, mapping=mapping).check()
    result[("1d", "fused")] = {"ok": report.ok, "digests": report.digests,
                               "flips": _flip_trials(rank, world, make_fused, manifest, world, 3),
                               "want_seed": 21}
    return result


def explicit_layouts(rank, world, out):
    """Plain local tensors with Region / Concat / Fused layouts and renamed tensors."""
    from sentry.weightsync import SyncVerifier, WeightManifest

    result = {}
    for kind in ("sharded", "mesh", "fused"):
        rng = random.Random(zlib.crc32(kind.encode()))
        full = layouts.fusable_full(rng) if kind == "fused" else layouts.random_full(rng)
        state_rng = random.Random(5)
        if kind == "fused":
            ranks = layouts.fused(state_rng, full, world)
        else:
            mesh = (world,) if kind == "sharded" or world == 2 else (2, 2)
            ranks = layouts.sharded(state_rng, full, world, mesh)
        manifest = WeightManifest.from_json(trainer_manifest(full, rank, world).to_json())
        state, layout, mapping = ranks[rank]
        report = SyncVerifier(state, manifest, layout=layout, mapping=mapping).check()

        def make():
            s, lay, mp = layouts.fused(random.Random(5), full, world)[rank] if kind == "fused" \
                else layouts.sharded(random.Random(5), full, world, mesh)[rank]
            return s, lay, mp

        trials = _flip_trials(rank, world, make, manifest, 2 * world, 11)
        result[kind] = {"ok": report.ok, "digests": report.digests, "flips": trials,
                        "full_seed": zlib.crc32(kind.encode())}
    return result


def manifest_builder(rank, world, out):
    """The sending side: a manifest from row-split tensors equals the full tensors' digests;
    it survives JSON and signing; its segments finish to its digests."""
    from sentry.weightsync import SyncVerifier, WeightManifest, _authentic

    full = full_tensors(2)
    result = {}
    for algorithm in ("blake3", "sha256-tree"):
        m = trainer_manifest(full, rank, world, algorithm)
        again = WeightManifest.from_json(m.to_json())
        authentic = {n: _authentic(seg, m.tensors[n][2],
                                   full[n].numel() * full[n].element_size(), algorithm)
                     for n, seg in m.segments.items()}
        result[algorithm] = {"digests": {n: d.hex() for n, (_, _, d) in m.tensors.items()},
                             "meta": {n: (dt, list(sh)) for n, (dt, sh, _) in m.tensors.items()},
                             "roundtrip": again == WeightManifest(m.algorithm, m.tensors,
                                                                  m.segments, again.source),
                             "segments": sorted(m.segments), "authentic": authentic}
    sig, pub = signed_by_rank0(m, out, rank)
    signed = WeightManifest.from_signature(sig, public_key=pub)
    state = {n: t.clone() for n, t in full.items()}  # every rank holds everything
    report = SyncVerifier(state, sig, public_key=pub).check()
    result["signed"] = {"same": signed.tensors == m.tensors, "ok": report.ok,
                        "algorithm": report.algorithm}
    return result


def verify_sharded_cache(rank, world, out):
    """verify_sharded plans once per layout: the second call reuses the plan."""
    from sentry import distributed

    full = full_tensors(3)
    manifest = trainer_manifest(full, rank, world)
    state, layout, _ = layouts.sharded(random.Random(4), full, world)[rank]
    distributed._VERIFIERS.clear()
    first = distributed.verify_sharded(state, manifest, layout)
    v1 = list(distributed._VERIFIERS.values())
    second = distributed.verify_sharded(state, manifest, layout)
    v2 = list(distributed._VERIFIERS.values())
    state2, layout2, _ = layouts.sharded(random.Random(8), full, world)[rank]
    third = distributed.verify_sharded(state2, manifest, layout2)
    return {"ok": [first.ok, second.ok, third.ok], "reused": v1 == v2 and len(v1) == 1,
            "cached": len(distributed._VERIFIERS)}


def local_failure(rank, world, out):
    """A rank whose layout is refused is named by the others; nobody hangs."""
    from sentry.layout import Region
    from sentry.weightsync import SyncVerifier

    full = full_tensors(3)
    manifest = trainer_manifest(full, rank, world)
    state, layout, _ = layouts.sharded(random.Random(4), full, world)[rank]
    if rank == 1:
        name = sorted(full)[0]
        layout[name] = Region(name, (1, 1), (0, 0), (5, 5))
    try:
        SyncVerifier(state, manifest, layout=layout)
        return {"error": None}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"}


def different_manifests(rank, world, out):
    """Ranks given different manifests all refuse, rather than disagree on the verdict."""
    from sentry.weightsync import SyncVerifier, WeightManifest

    full = full_tensors(3)
    manifest = trainer_manifest(full, rank, world)
    if rank == 0:
        name = sorted(manifest.tensors)[0]
        tensors = dict(manifest.tensors)
        tensors[name] = (*tensors[name][:2], bytes(32))
        manifest = WeightManifest(manifest.algorithm, tensors)
    state = {n: t.clone() for n, t in full.items()}
    try:
        SyncVerifier(state, manifest).check()
        return {"error": None}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"}


def collective_counts(rank, world, out):
    """Collectives per call, counted at torch.distributed, for a model of 7 tensors and one of
    60: the plan exchanges once; a check, a manifest build and a cached verify_sharded take
    the same few calls for any number of tensors (a second round only to name ranks)."""
    from sentry import distributed
    from sentry.weightsync import ManifestBuilder, SyncVerifier

    calls = []
    names = ("all_gather", "all_gather_object", "all_gather_into_tensor", "all_gather_single",
             "all_reduce", "broadcast", "broadcast_object_list", "all_to_all", "send", "recv",
             "gather", "scatter", "reduce_scatter", "barrier")
    saved = {n: getattr(dist, n) for n in names if hasattr(dist, n)}

    def counting(name, fn):
        def call(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)
        return call

    def count(fn):
        calls.clear()
        for n, f in saved.items():
            setattr(dist, n, counting(n, f))
        try:
            fn()
        finally:
            for n, f in saved.items():
                setattr(dist, n, f)
        return sorted(calls)

    result = {}
    for count_ in (7, 60):
        full = layouts.random_full(random.Random(count_), count=count_, max_bytes=4096)
        manifest = trainer_manifest(full, rank, world)
        state, layout, mapping = layouts.sharded(random.Random(6), full, world)[rank]
        got = {}
        holder = {}
        got["plan"] = count(lambda: holder.setdefault(
            "v", SyncVerifier(state, manifest, layout=layout, mapping=mapping)))
        got["check"] = count(lambda: holder["v"].check())
        builder = ManifestBuilder(state, layout=layout, mapping=mapping)
        got["build"] = count(builder.build)
        distributed._VERIFIERS.clear()
        digests = {n: d for n, (_, _, d) in manifest.tensors.items()}
        distributed.verify_sharded(state, digests, layout, mapping=mapping)
        got["verify_sharded cached"] = count(
            lambda: distributed.verify_sharded(state, digests, layout, mapping=mapping))
        bad = {k: v.clone() for k, v in state.items()}
        if rank == world - 1:
            layouts.flip_one_bit(random.Random(1), {rank: {k: v for k, v in bad.items()
                                                           if k in layout}}, rank)
        got["check, a bit flipped"] = count(
            lambda: holder["v"].check(tensors=bad, raise_on_mismatch=False))
        result[count_] = got
    return result


SCENARIOS = [dtensor_layouts, explicit_layouts, manifest_builder, verify_sharded_cache,
             local_failure, different_manifests, collective_counts]


def main(rank, world, store, out, names):
    dist_worker.run(SCENARIOS, rank, world, store, out, names)
