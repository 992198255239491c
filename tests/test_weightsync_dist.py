"""Weight-sync checks (sentry.weightsync) across real processes: gloo groups of 2 and 4 CPU
ranks (tests/sync_worker.py runs every scenario in one spawn per world size). Digests the
ranks finish are checked here against independent references of the full tensors (b3sum,
RFC 9162 over hashlib); a flipped bit on any rank must fail the check on every rank with the
same error, naming that rank.

The same checks on NCCL and two GPUs: tests/test_weightsync_nccl.py (under torchrun).
"""
import random
import zlib

import numpy as np
import pytest
import torch.distributed as dist

import layouts
import reference
import sync_worker
from test_distributed import _run, each

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


@pytest.fixture(scope="module", params=[2, 4], ids=lambda w: f"{w}ranks")
def ranks(request, tmp_path_factory):
    world = request.param
    names = [fn.__name__ for fn in sync_worker.SCENARIOS]
    return world, _run(world, tmp_path_factory.mktemp(f"sync{world}"), names, sync_worker.main)


def want_hex(full, algorithm="blake3"):
    if algorithm == "blake3" and not reference.have_b3sum():
        pytest.skip("b3sum is not installed: no independent BLAKE3 reference")
    names = sorted(full)
    digests = reference.reference_digests([reference.tensor_bytes(full[n]) for n in names],
                                          algorithm)
    return {n: d.hex() for n, d in zip(names, digests)}


def check_flips(world, out, key, replicated):
    """Every trial: the error is the same on every rank and names the culprit (exactly, when
    every byte has a copy on another rank). Returns how many trials named it alone."""
    exact = 0
    for trial in range(len(out[0][key]["flips"])):
        results = [r[key]["flips"][trial] for r in out]
        culprit = results[0]["culprit"]
        flipped = results[culprit]["key"]
        errors = {r["error"] for r in results}
        assert len(errors) == 1, errors  # the same verdict and message everywhere
        error = errors.pop()
        if flipped is None:
            assert error is None
            continue
        assert error is not None, (key, trial)
        kind, message, blamed, changed = error
        blamed = list(blamed)
        assert kind == "SyncMismatchError" and len(changed) == 1 and f"'{changed[0]}'" in message
        assert culprit in blamed, (key, trial, blamed, culprit)
        if replicated:
            assert blamed == [culprit], (key, trial, message)
        exact += blamed == [culprit]
    return exact


def test_dtensor_layouts_verify_and_finish_the_full_digests(ranks):
    world, out = each(ranks, "dtensor_layouts")
    want = want_hex(sync_worker.full_tensors(1))
    for r in out:
        assert r["manifest"] == want  # the sending side, hashed where its rows are
    for key in (k for k in out[0] if k != "manifest"):
        expect = want if "want_seed" not in out[0][key] else \
            want_hex(layouts.fusable_full(random.Random(out[0][key]["want_seed"])))
        for r in out:
            assert r[key]["ok"] and r[key]["digests"] == expect, key


def test_dtensor_flipped_bit_names_its_rank_on_every_rank(ranks):
    world, out = each(ranks, "dtensor_layouts")
    exact = 0
    for key in (k for k in out[0] if k != "manifest"):
        label, kind = key
        # Every byte has a copy on another rank when a mesh dim replicates everything.
        replicated = kind in ("tpxdp", "hsdp") and world == 4
        exact += check_flips(world, out, key, replicated)
    assert exact > 0  # segments of the manifest narrow unreplicated bytes down to one rank


def test_explicit_layouts_fused_and_renamed(ranks):
    world, out = each(ranks, "explicit_layouts")
    for kind in ("sharded", "mesh", "fused"):
        rng = random.Random(out[0][kind]["full_seed"])
        full = layouts.fusable_full(rng) if kind == "fused" else layouts.random_full(rng)
        want = want_hex(full)
        for r in out:
            assert r[kind]["ok"] and r[kind]["digests"] == want, kind
        check_flips(world, out, kind, replicated=False)


@pytest.mark.parametrize("algorithm", ["blake3", "sha256-tree"])
def test_manifest_of_sharded_tensors_is_the_full_digests(ranks, algorithm):
    world, out = each(ranks, "manifest_builder")
    full = sync_worker.full_tensors(2)
    want = want_hex(full, algorithm)
    for r in out:
        m = r[algorithm]
        assert m["digests"] == want
        assert m["meta"] == {n: (reference_dtype(t), list(t.shape)) for n, t in full.items()}
        assert m["roundtrip"] and m["segments"] and all(m["authentic"].values())


def reference_dtype(t):
    from sentry.safetensors_format import safetensors_dtype_name

    return safetensors_dtype_name(t.dtype)


def test_signed_manifest_verifies_as_a_signature(ranks):
    _, out = each(ranks, "manifest_builder")
    for r in out:
        assert r["signed"] == {"same": True, "ok": True, "algorithm": "sha256-tree"}


def test_verify_sharded_reuses_its_plan(ranks):
    _, out = each(ranks, "verify_sharded_cache")
    for r in out:
        assert r == {"ok": [True, True, True], "reused": True, "cached": 2}


def test_a_rank_that_cannot_take_part_is_named_and_nobody_hangs(ranks):
    world, out = each(ranks, "local_failure")
    assert out[1]["error"].startswith("FormatError") and "lies outside" in out[1]["error"]
    for rank in set(range(world)) - {1}:
        assert "rank 1 could not take part" in out[rank]["error"]


def test_ranks_with_different_manifests_all_refuse(ranks):
    _, out = each(ranks, "different_manifests")
    for r in out:
        assert r["error"] == "FormatError: sync check: the ranks were given different manifests"


def test_collectives_are_few_and_do_not_grow_with_the_tensors(ranks):
    """Counted at torch.distributed on every rank: one layout exchange to plan; one all-gather
    per check and per manifest build; one more small one for a cached verify_sharded; a second
    round only when a mismatch is narrowed down to ranks. The same for 7 and 60 tensors."""
    world, out = each(ranks, "collective_counts")
    flat = "all_gather_single" if hasattr(dist, "all_gather_single") else "all_gather_into_tensor"
    for r in out:
        assert r[7] == r[60], r
        got = r[7]
        assert got["plan"] == ["all_gather_object"]
        assert got["check"] == got["build"] == [flat]
        assert got["verify_sharded cached"] == sorted(["all_gather", flat])
        assert got["check, a bit flipped"] in ([flat], [flat, flat])


def scenario_layouts(world):
    """(label, [(state, layout, mapping)] per rank) of the layouts the worker's scenarios check,
    rebuilt here from the same seeds: the trainer's manifest layout, the 1-D DTensor shards (as
    Regions: Region.shard splits as Shard(d) does) and the explicit layouts."""
    from torch.distributed.tensor import Shard

    from sentry.layout import Region

    out = []
    full = sync_worker.full_tensors(1)
    out.append(("trainer rows", layouts.sharded(random.Random(99), full, world,
                                                replicate_some=False)))
    placements = sync_worker.dtensor_placements(full, "shard", "1d")
    ranks = []
    for r in range(world):
        state, lay = {}, {}
        for name, t in full.items():
            p = placements[name][0]
            if isinstance(p, Shard):
                lay[name] = Region.shard(name, tuple(t.shape), p.dim, r, world)
                state[name] = layouts.box(t, lay[name].offset, lay[name].shape)
            else:
                state[name] = t.clone()
        ranks.append((state, lay, {}))
    out.append(("DTensor Shard(d)", ranks))
    for kind in ("sharded", "mesh", "fused"):
        rng = random.Random(zlib.crc32(kind.encode()))
        full = layouts.fusable_full(rng) if kind == "fused" else layouts.random_full(rng)
        mesh = (world,) if kind == "sharded" or world == 2 else (2, 2)
        ranks = layouts.fused(random.Random(5), full, world) if kind == "fused" else \
            layouts.sharded(random.Random(5), full, world, mesh)
        out.append((kind, [(s, lay, mp, {n: tuple(t.shape) for n, t in full.items()})
                           for s, lay, mp in ranks]))
    return out


@pytest.mark.parametrize("world", [2, 4])
def test_the_scenarios_hold_the_hard_cases(world):
    """The random layouts the gloo scenarios check do contain what must hold: empty shards,
    splits inside a BLAKE3 chunk and a sha256-tree leaf and on their boundaries, runs shorter
    than a leaf, a tensor of no elements, and tensors held on several ranks (copies)."""
    from sentry import syncplan
    from sentry.safetensors_format import byte_length

    seen = set()
    for label, ranks in scenario_layouts(world):
        held = {}
        for rank, (state, layout, mapping, *shapes) in enumerate(ranks):
            sources, part = syncplan.collect(state, layout, mapping, shapes[0] if shapes else {})
            for key, t in state.items():
                if key in layout and t.numel() == 0:
                    seen.add("empty shard")
            sizes = {n: byte_length(meta[0], list(meta[1])) for n, meta in
                     zip(part["names"], part["meta"])}
            for _, _, tid, start, length in np.asarray(part["runs"]).tolist():
                name = part["names"][tid]
                if sizes[name] == 0:
                    seen.add("tensor of no elements")
                    continue
                held.setdefault((name, start, length), set()).add(rank)
                for leaf, what in ((reference.LEAF_BYTES["blake3"], "chunk"),
                                   (reference.LEAF_BYTES["sha256-tree"], "leaf")):
                    for at in (start, start + length):
                        if 0 < at < sizes[name]:
                            seen.add(f"split inside a {what}" if at % leaf else
                                     f"split on a {what} boundary")
                    if length < leaf and length < sizes[name]:
                        seen.add(f"run shorter than a {what}")
        if any(len(r) > 1 for r in held.values()):
            seen.add("copies")
    assert seen >= {"empty shard", "tensor of no elements", "copies", "split inside a chunk",
                    "split inside a leaf", "split on a chunk boundary",
                    "split on a leaf boundary", "run shorter than a chunk",
                    "run shorter than a leaf"}, seen
