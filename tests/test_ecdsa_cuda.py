"""CUDA tests of torch.ops.sentry.ecdsa_p256_verify (the kernel runs csrc/core/p256.h).

Against Wycheproof and 100,000 OpenSSL signatures with one bit flipped in r, s, the digest or the
key, and against the CPU (OpenSSL) kernel on the same rows; then streams, no host sync, CUDA
graphs, torch.compile, opcheck. Every test here is marked `cuda` and skipped without a GPU.
"""
import pytest
import torch

import ecdsa_reference as ref
from sentry import ecdsa

pytestmark = pytest.mark.cuda

DEV = "cuda"
LARGE = 100_000


def op(keys, digests, sigs):
    return torch.ops.sentry.ecdsa_p256_verify(keys, digests, sigs)


@pytest.fixture(scope="module")
def large(ops):
    """LARGE random (key, message) pairs signed by OpenSSL, as CPU tensors."""
    keys, digests, raw, _, _ = ref.signed_pairs(LARGE, seed=5)
    return ref.rows(keys), ref.rows(digests), ref.rows(raw)


def _on(device, *ts):
    return [t.to(device) for t in ts]


@pytest.mark.parametrize("form", ["der", "p1363"])
def test_wycheproof(ops, form):
    cases = ref.wycheproof_cases(form)
    assert {c["result"] for c in cases} == {"valid", "invalid"}  # no "acceptable" ones
    got = ecdsa.verify_batch([c["key"] for c in cases], [c["digest"] for c in cases],
                             [c["sig"] for c in cases], signature_format=form, device=DEV)
    assert got.device.type == "cuda" and got.dtype == torch.bool
    wrong = [(c["tc_id"], c["comment"]) for c, g in zip(cases, got.tolist())
             if g != (c["result"] == "valid")]
    assert not wrong
    # The rows that parse, straight through the op: CUDA and CPU kernels agree on each.
    keys, key_ok = ecdsa.public_key_rows([c["key"] for c in cases])
    sigs, sig_ok = ecdsa.signature_rows([c["sig"] for c in cases], form)
    digests = ecdsa.digest_rows([c["digest"] for c in cases])
    assert all(key_ok)
    on_gpu = op(*_on(DEV, keys, digests, sigs)).cpu()
    assert torch.equal(on_gpu, op(keys, digests, sigs))
    assert on_gpu[~torch.tensor(sig_ok)].sum() == 0


def test_large_batch_verifies_and_every_bit_flip_fails(ops, large):
    keys, digests, sigs = large
    k, d, s = _on(DEV, keys, digests, sigs)
    good = op(k, d, s)
    assert good.shape == (LARGE,) and good.all(), (~good).nonzero().flatten()[:20].tolist()
    for part, kk, dd, ss in ref.each_part_flipped(k, d, s):
        got = op(kk, dd, ss)
        assert not got.any(), (part, got.nonzero().flatten()[:20].tolist())


def test_agrees_with_the_cpu_kernel_on_mixed_rows(ops, large):
    """Valid rows, flipped rows, out-of-range scalars, off-curve and unreduced keys, random
    bytes, interleaved: the CUDA answers equal OpenSSL's row by row."""
    keys, digests, sigs = (t[:6000].clone() for t in large)
    g = torch.Generator().manual_seed(11)
    kind = torch.randint(0, 8, (len(keys),), generator=g)
    sigs[kind == 1] = ref.flip_one_bit(sigs[kind == 1], 0, 64, 1)
    keys[kind == 2] = ref.flip_one_bit(keys[kind == 2], 0, 64, 2)
    sigs[kind == 3, :32] = 0                                         # r = 0
    sigs[kind == 4, 32:] = torch.tensor(list(ref.N.to_bytes(32, "big")), dtype=torch.uint8)
    keys[kind == 5] = torch.randint(0, 256, (int((kind == 5).sum()), 64), dtype=torch.uint8,
                                    generator=g)
    keys[kind == 6, 32:] = torch.tensor(list(ref.P.to_bytes(32, "big")), dtype=torch.uint8)
    s_neg = [(ref.N - int.from_bytes(bytes(row[32:].tolist()), "big")).to_bytes(32, "big")
             for row in sigs[kind == 7]]
    sigs[kind == 7, 32:] = ref.rows(s_neg) if s_neg else sigs[kind == 7, 32:]  # n - s: valid
    want = op(keys, digests, sigs)
    got = op(*_on(DEV, keys, digests, sigs)).cpu()
    assert torch.equal(got, want), (got != want).nonzero().flatten()[:20].tolist()
    assert want[(kind == 0) | (kind == 7)].all() and not want[(kind > 0) & (kind < 7)].any()


def test_layouts(ops, large):
    keys, digests, sigs = (t[:300].to(DEV) for t in large)
    bad = ref.flip_one_bit(sigs, 0, 64, seed=4)
    mixed = torch.where((torch.arange(300, device=DEV) % 3 == 0)[:, None], bad, sigs)
    want = torch.arange(300) % 3 != 0
    assert torch.equal(op(keys, digests, mixed).cpu(), want)
    wide = torch.zeros(300, 80, dtype=torch.uint8, device=DEV)
    wide[:, 8:72] = keys
    flat = torch.zeros(1 + mixed.numel(), dtype=torch.uint8, device=DEV)
    flat[1:] = mixed.flatten()
    unaligned = flat[1:].view(-1, 64)  # contiguous, storage offset 1: the bytewise load path
    assert unaligned.data_ptr() % 16 != 0
    assert torch.equal(op(wide[:, 8:72], digests, unaligned).cpu(), want)
    empty = op(keys[:0], digests[:0], sigs[:0])
    assert empty.shape == (0,) and empty.device.type == "cuda"


def test_mixed_devices_are_refused(ops, large):
    keys, digests, sigs = (t[:4] for t in large)
    with pytest.raises(ValueError, match="digests is on cpu but public_keys is on cuda"):
        op(keys.to(DEV), digests, sigs.to(DEV))
    with pytest.raises(ValueError, match="signatures is on cpu but public_keys is on cuda"):
        op(keys.to(DEV), digests.to(DEV), sigs)


def test_no_host_synchronisation(ops, large):
    k, d, s = _on(DEV, *(t[:4096] for t in large))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        op(k, d, s)
        op(k[1:], d[1:], s[1:])
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_side_stream_does_not_wait_for_default_stream(ops, large):
    k, d, s = _on(DEV, *(t[:1024] for t in large))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm the side stream's allocator cache
        op(k, d, s).to("cpu")
    side.synchronize()
    torch.cuda._sleep(4_000_000_000)  # about two seconds on the default stream
    try:
        with torch.cuda.stream(side):
            got_host = op(k, d, s).to("cpu")
        default_still_busy = not torch.cuda.default_stream().query()
    finally:
        torch.cuda.synchronize()
    assert default_still_busy, "the default stream finished early: the test proved nothing"
    assert got_host.all(), "the op did not run on the current (side) stream"


def test_cuda_graph_capture_and_replay(ops, large):
    k, d, s = (t[:2048].to(DEV).clone() for t in large)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        op(k, d, s)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = op(k, d, s)
    graph.replay()
    torch.cuda.synchronize()
    assert captured.all()
    # Change the inputs in place and replay: the answers follow the new data.
    s[::2, 40] ^= 1
    graph.replay()
    torch.cuda.synchronize()
    assert captured.cpu().tolist() == [i % 2 == 1 for i in range(2048)]
    s[::2, 40] ^= 1
    graph.replay()
    torch.cuda.synchronize()
    assert captured.all()


@pytest.mark.parametrize("backend,mode", [("aot_eager", None), ("inductor", None),
                                          ("inductor", "reduce-overhead")])
def test_torch_compile_fullgraph(ops, large, backend, mode):
    torch._dynamo.reset()
    k, d, s = (t[:512].to(DEV).clone() for t in large)

    def f(k, d, s):
        return op(k, d, s), op(k, d, s ^ 1)

    fn = torch.compile(f, fullgraph=True, backend=backend, mode=mode)
    for step in range(4):
        with torch.no_grad():
            d[step] ^= 0x80  # row `step` goes bad, the one before comes back
            if step:
                d[step - 1] ^= 0x80
        good, bad = (g.clone() for g in fn(k, d, s))
        assert good.cpu().tolist() == [i != step for i in range(512)], step
        assert not bad.any()


def test_opcheck(ops, large):
    k, d, s = (t[:16].to(DEV) for t in large)
    for args in ((k, d, s), (k, d, ref.flip_one_bit(s, 0, 64, 2)), (k[:0], d[:0], s[:0])):
        result = torch.library.opcheck(torch.ops.sentry.ecdsa_p256_verify.default, args)
        assert all(v == "SUCCESS" for v in result.values()), result


def test_other_device(ops, large):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    k, d, s = _on("cuda:1", *(t[:256] for t in large))
    with torch.cuda.device(0):
        got = op(k, d, s)
    assert got.device == k.device and got.all()
