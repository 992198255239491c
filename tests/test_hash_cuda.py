"""CUDA tests of torch.ops.sentry.hash_tensors / hash_rows.

The CUDA digests are compared with the CPU kernel's (which tests/test_hash_ops.py checks
against b3sum and the RFC 9162 reference) and, for small inputs, with the references directly.
Every test here is marked `cuda` and skipped on machines without a GPU.
"""
import pytest
import torch

import reference
from reference import bytes_tensor, digest_rows, random_bytes, sha256_tree, tensor_bytes

pytestmark = pytest.mark.cuda

ALGORITHMS = ("blake3", "sha256-tree")
KiB, MiB, GiB = 1024, 1024 * 1024, 1024 * 1024 * 1024
DEV = "cuda"


def cpu_digests(ops, tensors, algorithm):
    return ops.hash_tensors([t.cpu() for t in tensors], algorithm)


def assert_cuda_equals_cpu(ops, tensors, algorithm):
    got = ops.hash_tensors(tensors, algorithm)
    assert got.device.type == "cuda" and got.shape == (len(tensors), 32)
    assert got.dtype == torch.uint8
    want = cpu_digests(ops, tensors, algorithm)
    mismatched = [i for i in range(len(tensors)) if not torch.equal(got[i].cpu(), want[i])]
    assert not mismatched, [(i, tuple(tensors[i].shape), tensors[i].dtype,
                             tensors[i].stride(), tensors[i].data_ptr() % 16)
                            for i in mismatched[:10]]
    return got


def check_small_against_reference(digests, tensors, algorithm, limit=2 * MiB):
    """Direct reference checks for the tensors small enough to be cheap."""
    idx = [i for i, t in enumerate(tensors) if t.numel() * t.element_size() <= limit]
    blobs = [tensor_bytes(tensors[i]) for i in idx]
    if algorithm == "blake3":
        if not reference.have_b3sum():
            return
        want = reference.b3sum_many(blobs)
    else:
        want = [sha256_tree(b) for b in blobs]
    rows = digest_rows(digests)
    assert [rows[i] for i in idx] == want


# Byte counts around the GPU kernel's boundaries: groups of 128 leaves (BLAKE3 128 KiB,
# sha256-tree 512 KiB) and groups of 128 groups (BLAKE3 16 MiB, sha256-tree 64 MiB).
LENGTHS = [
    0, 1, 63, 64, 65, 1023, 1024, 1025, 2049, 4095, 4096, 4097, 8193, 65535, 65537,
    128 * KiB - 1, 128 * KiB, 128 * KiB + 1, 128 * KiB + 1024,
    512 * KiB - 1, 512 * KiB, 512 * KiB + 1, 512 * KiB + 4096,
    16 * MiB - 1, 16 * MiB, 16 * MiB + 1, 16 * MiB + 1024,
    64 * MiB - 1, 64 * MiB + 1, 100 * MiB + 5,
]


def test_built_with_cuda(ops):
    assert ops.WITH_CUDA, "sentry_ops was built without its CUDA kernels"
    out = ops.hash_tensors([torch.zeros(3, device=DEV)])
    assert out.device.type == "cuda"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_lengths_cuda_equals_cpu(ops, algorithm):
    """One uint8 tensor per boundary length, all in one call, at aligned and odd addresses."""
    base = bytes_tensor(random_bytes(max(LENGTHS) + 64, seed=1), DEV)
    aligned = [base[:n] for n in LENGTHS]
    odd = [base[1:1 + n] for n in LENGTHS]
    four = [base[4:4 + n] for n in LENGTHS]
    tensors = aligned + odd + four
    got = assert_cuda_equals_cpu(ops, tensors, algorithm)
    check_small_against_reference(got, tensors, algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("n", [0, 1, 1025, 128 * KiB + 1, 512 * KiB + 1, 16 * MiB + 1,
                               64 * MiB + 1])
def test_single_tensor_each_length(ops, algorithm, n):
    """Alone in its call (the grid is this tensor's groups only)."""
    t = bytes_tensor(random_bytes(n, seed=n), DEV)
    assert_cuda_equals_cpu(ops, [t], algorithm)


def _random_list(gen_seed, count, max_bytes):
    g = torch.Generator().manual_seed(gen_seed)
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.uint8, torch.bool,
              torch.float64, torch.int8, torch.complex64]
    out = []
    for i in range(count):
        dt = dtypes[i % len(dtypes)]
        item = torch.empty((), dtype=dt).element_size()
        n = int(torch.randint(0, max_bytes // item + 1, (1,), generator=g))
        if dt == torch.bool:
            t = torch.rand(n, device=DEV) < 0.5
        elif dt.is_floating_point or dt.is_complex:
            t = torch.randn(n, device=DEV, dtype=dt)
        else:
            t = torch.randint(-100 if dt.is_signed else 0, 100, (n,), device=DEV, dtype=dt)
        kind = i % 5
        if kind == 1 and n > 2:
            t = t[1:]  # unaligned by one element
        elif kind == 2 and n >= 6:
            t = t[: (n // 6) * 6].view(-1, 3, 2).transpose(0, 2)  # non-contiguous
        elif kind == 3 and n > 4:
            t = t[::2]  # strided
        out.append(t)
    return out


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_random_list_cuda_equals_cpu(ops, algorithm):
    tensors = _random_list(1, 60, 3 * MiB)
    tensors += [torch.randn(25 * MiB, device=DEV)]  # a 100 MB tensor
    tensors += [torch.randn(1, 4097, device=DEV).expand(300, 4097)]  # stride 0
    tensors += [torch.randn(8, 3, 64, 65, device=DEV).contiguous(
        memory_format=torch.channels_last)]
    tensors += [torch.tensor(1.5, device=DEV), torch.empty(0, 3, device=DEV)]
    got = assert_cuda_equals_cpu(ops, tensors, algorithm)
    check_small_against_reference(got, tensors, algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_unaligned_views(ops, algorithm):
    base8 = bytes_tensor(random_bytes(5 * MiB + 100, seed=2), DEV)
    basef = torch.randn(MiB + 17, device=DEV)
    baseh = torch.randn(MiB + 17, device=DEV, dtype=torch.float16)
    tensors = [base8[o:o + n] for o in (1, 2, 3, 4, 5, 8, 12, 15)
               for n in (1, 63, 64, 1024, 4096, 128 * KiB + 1, 5 * MiB)]
    tensors += [basef[1:], basef[2:], basef[3:1000], basef[1:], baseh[1:], baseh[3:70001]]
    for t in tensors[:8]:
        assert t.data_ptr() % 16 != 0
    got = assert_cuda_equals_cpu(ops, tensors, algorithm)
    check_small_against_reference(got, tensors, algorithm, limit=256 * KiB)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_dtype(ops, algorithm):
    names = ["float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64",
             "uint8", "uint16", "uint32", "uint64", "bool", "complex64", "complex128",
             "float8_e4m3fn", "float8_e5m2"]
    tensors = []
    for i, name in enumerate(names):
        if not hasattr(torch, name):
            continue
        dt = getattr(torch, name)
        item = torch.empty((), dtype=dt).element_size()
        raw = bytes_tensor(random_bytes(33 * 1031 * item, seed=i), DEV)
        if dt == torch.bool:
            raw = raw & 1
        t = raw.view(dt).view(33, 1031)
        tensors += [t, t.t(), t[1:, 1:]]
    assert_cuda_equals_cpu(ops, tensors, algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_many_small_tensors(ops, algorithm):
    """1000 tensors in one call (a table too big for one parameter upload)."""
    g = torch.Generator().manual_seed(3)
    sizes = torch.randint(0, 5000, (1000,), generator=g).tolist()
    tensors = [torch.randn(n, device=DEV) for n in sizes]
    got = assert_cuda_equals_cpu(ops, tensors, algorithm)
    check_small_against_reference(got, tensors, algorithm)
    # And 5000 (several uploads), including empty ones.
    tensors = [torch.randint(0, 255, (n % 300,), dtype=torch.uint8, device=DEV)
               for n in range(5000)]
    assert_cuda_equals_cpu(ops, tensors, algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_resnet_state_dict(ops, algorithm):
    sd = reference.model_state_dict("resnet152", device=DEV)
    assert_cuda_equals_cpu(ops, list(sd.values()), algorithm)
    half = [t.half() if t.is_floating_point() else t for t in sd.values()]
    assert_cuda_equals_cpu(ops, half, algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_bytes_outside_the_view_do_not_matter(ops, algorithm):
    """Only the viewed bytes are read (no over-read by the vector loads or the last leaf)."""
    base = bytes_tensor(random_bytes(3 * MiB, seed=4), DEV)
    a0, a1 = 1001, 1001 + 128 * KiB + 3
    b0, b1 = 256 * KiB + 16, 256 * KiB + 16 + 512 * KiB
    c0, c1 = 2 * MiB + 1, 3 * MiB - 1
    views = [base[a0:a1], base[b0:b1], base[c0:c1]]
    before = ops.hash_tensors(views, algorithm)
    keep = [v.clone() for v in views]
    base[:a0] = 0
    base[a1:b0] = 0x11
    base[b1:c0] = 0xAB
    base[c1:] = 0x5A
    assert all(torch.equal(a, b) for a, b in zip(keep, views))
    assert torch.equal(ops.hash_tensors(views, algorithm), before)
    assert torch.equal(before.cpu(), cpu_digests(ops, views, algorithm))


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_over_4_gib(ops, algorithm):
    """A tensor of more than 2^32 bytes, alone and in a list with small ones, and at an odd
    address: CUDA == CPU."""
    n = 4 * GiB + 4097
    free, _ = torch.cuda.mem_get_info()
    if free < n + 2 * GiB:
        pytest.skip(f"needs {n + 2 * GiB} bytes of free GPU memory, {free} free")
    t = torch.empty(n, dtype=torch.uint8, device=DEV)
    block = bytes_tensor(random_bytes(MiB, seed=5), DEV)
    full = n // MiB
    t[:full * MiB].view(full, MiB).copy_(block)
    t[full * MiB:] = block[:n - full * MiB]
    chunks = n // 1024  # stamp every 1 KiB chunk with its index: no two leaves alike
    t[:chunks * 1024].view(chunks, 1024)[:, :8].view(torch.int64).view(-1).copy_(
        torch.arange(chunks, dtype=torch.int64, device=DEV))
    small = [torch.randn(1000, device=DEV), torch.empty(0, device=DEV)]
    got = ops.hash_tensors([t, small[0], t[1:], small[1]], algorithm)
    host = t.cpu()
    del t
    want = ops.hash_tensors([host, small[0].cpu(), host[1:], small[1].cpu()], algorithm)
    assert torch.equal(got.cpu(), want)
    if algorithm == "blake3" and reference.have_b3sum():
        assert digest_rows(want)[0] == reference.b3sum(host.numpy().data)


# ---------------------------------------------------------------------------------------------
# hash_rows


def _row_cases():
    big = torch.randint(0, 255, (3, 200_003), dtype=torch.uint8, device=DEV)
    cases = {
        "2d": torch.randn(64, 1000, device=DEV),
        "images": torch.randn(32, 3, 32, 32, device=DEV),
        "images_channels_last": torch.randn(32, 3, 32, 32, device=DEV).contiguous(
            memory_format=torch.channels_last),
        "strided_rows": torch.randn(60, 300, device=DEV)[::3],
        "slice_cols": torch.randn(9, 4097, device=DEV)[:, :1025],
        "unaligned_rows": torch.randint(0, 255, (9, 4097), dtype=torch.uint8, device=DEV)[:, 1:],
        "row_stride_odd": torch.randint(0, 255, (50, 333), dtype=torch.uint8, device=DEV)[:, :300],
        "transposed": torch.randn(300, 11, device=DEV).t(),
        "one_d": torch.randn(50, device=DEV),
        "batch_zero": torch.empty(0, 10, device=DEV),
        "zero_byte_rows": torch.empty(5, 0, device=DEV),
        "expanded_rows": torch.randn(1, 777, device=DEV).expand(6, 777),
        "overlapping_rows": torch.arange(3000, dtype=torch.int32, device=DEV).as_strided(
            (40, 100), (13, 1)),
        "big_rows": big,
        "big_rows_unaligned": big[:, 1:],
        "multi_level_rows": torch.randint(0, 255, (3, 16 * MiB + 5), dtype=torch.uint8,
                                          device=DEV),
        "sha_multi_level_rows": torch.randint(0, 255, (2, 64 * MiB + 5), dtype=torch.uint8,
                                              device=DEV),
        "many_rows": torch.randint(0, 255, (100_000, 48), dtype=torch.uint8, device=DEV),
        "bf16": torch.randn(12, 2049, device=DEV).bfloat16(),
    }
    # Around the staged small-row kernel's limit (16 KiB) and its leaf and block edges, with
    # 16-byte aligned rows and rows at odd addresses.
    for n in (1, 63, 64, 65, 1023, 1024, 1025, 3072, 4095, 4096, 4097, 16383, 16384, 16385):
        wide = torch.randint(0, 255, (7, n + 1), dtype=torch.uint8, device=DEV)
        cases[f"rows_of_{n}"] = torch.randint(0, 255, (7, n), dtype=torch.uint8, device=DEV)
        cases[f"rows_of_{n}_unaligned"] = wide[:, 1:]
    return cases


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hash_rows_cuda_equals_cpu(ops, algorithm):
    for name, x in _row_cases().items():
        got = ops.hash_rows(x, algorithm)
        assert got.device.type == "cuda" and got.shape == (x.shape[0], 32), name
        want = ops.hash_rows(x.cpu(), algorithm)
        assert torch.equal(got.cpu(), want), name
        if x.shape[0] and x[0].numel() * x.element_size() <= 1 * MiB and x.shape[0] <= 100:
            check_small_against_reference(got, list(x.unbind(0)), algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hash_rows_equals_hash_tensors_of_rows(ops, algorithm):
    x = torch.randn(16, 3, 40, 40, device=DEV)
    assert torch.equal(ops.hash_rows(x, algorithm), ops.hash_tensors(list(x.unbind(0)), algorithm))


# ---------------------------------------------------------------------------------------------
# Streams, synchronisation, CUDA graphs


def test_no_host_synchronisation(ops):
    """The ops never synchronise with the host (SPEC §3: no per-sample host sync)."""
    tensors = [torch.randn(n, device=DEV) for n in (0, 10, 100_000, 3 * MiB)] + \
        [torch.randn(300, 40, device=DEV).t()] + [torch.randn(5, device=DEV)] * 5000
    rows = torch.randn(128, 3, 32, 32, device=DEV)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for algorithm in ALGORITHMS:
            ops.hash_tensors(tensors, algorithm)
            ops.hash_rows(rows, algorithm)
            ops.hash_rows(rows[:, :, :, :16], algorithm)
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_side_stream_order(ops, algorithm):
    """Data written by a kernel on a side stream and hashed on that stream: the hash sees the
    written data, even when the write is held back behind a long kernel."""
    n = 256 * MiB
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device=DEV)
    want_data = cpu_digests(ops, [src], algorithm)
    zeros = cpu_digests(ops, [torch.zeros(n, dtype=torch.uint8)], algorithm)
    side = torch.cuda.Stream()
    for attempt in range(3):
        x = torch.zeros(n, dtype=torch.uint8, device=DEV)
        rows = torch.zeros(64, n // 64, dtype=torch.uint8, device=DEV)
        side.wait_stream(torch.cuda.current_stream())  # x and rows exist before the side work
        with torch.cuda.stream(side):
            torch.cuda._sleep(50_000_000)  # ~ tens of ms of spinning before the writes
            x.copy_(src)
            rows.copy_(src.view(64, -1))
            got = torch.ops.sentry.hash_tensors([x], algorithm)
            got_rows = torch.ops.sentry.hash_rows(rows, algorithm)
        side.synchronize()
        assert torch.equal(got.cpu(), want_data), "hash ran before the write it follows"
        assert not torch.equal(got.cpu(), zeros)
        assert torch.equal(got_rows.cpu(), ops.hash_rows(src.view(64, -1).cpu(), algorithm))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_side_stream_does_not_wait_for_default_stream(ops, algorithm):
    """With the default stream held up by a long kernel, a hash issued on a side stream
    finishes and is read back on that side stream while the default stream is still busy
    (a hash launched on the default stream would not have run yet)."""
    x = torch.randn(MiB, device=DEV)
    want = cpu_digests(ops, [x], algorithm)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())  # x exists; nothing after this is waited on
    with torch.cuda.stream(side):  # warm the side stream's allocator cache (no cudaMalloc later)
        torch.ops.sentry.hash_tensors([x], algorithm).to("cpu")
    side.synchronize()
    torch.cuda._sleep(4_000_000_000)  # about two seconds on the default stream
    try:
        with torch.cuda.stream(side):
            got = torch.ops.sentry.hash_tensors([x], algorithm)
            got_host = got.to("cpu")  # copy on the side stream, synchronising with it only
        default_still_busy = not torch.cuda.default_stream().query()
    finally:
        torch.cuda.synchronize()
    assert default_still_busy, "the default stream finished early: the test proved nothing"
    assert torch.equal(got_host, want), "the hash did not run on the current (side) stream"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cuda_graph_capture_and_replay(ops, algorithm):
    base = torch.randn(3 * MiB + 7, device=DEV)
    tensors = [base, base[1:100_001], torch.randn(300, 200, device=DEV).t(),
               torch.empty(0, device=DEV), torch.randn(17 * MiB // 4, device=DEV)]
    tensors += [torch.randn(n, device=DEV) for n in range(0, 3000, 3)]  # 1000 more: big table
    rows = torch.randn(64, 3, 32, 32, device=DEV)
    strided_rows = torch.randn(64, 3, 32, 40, device=DEV)[..., :32]

    def work():
        return (torch.ops.sentry.hash_tensors(tensors, algorithm),
                torch.ops.sentry.hash_rows(rows, algorithm),
                torch.ops.sentry.hash_rows(strided_rows, algorithm))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            work()
    torch.cuda.current_stream().wait_stream(side)
    eager = work()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = work()
    graph.replay()
    torch.cuda.synchronize()
    for c, e in zip(captured, eager):
        assert torch.equal(c, e)

    # Change the inputs in place and replay: the digests follow the new data.
    for t in tensors[:3] + tensors[4:]:
        t.mul_(-1).add_(0.25)
    rows.add_(1)
    strided_rows.add_(1)
    new_eager = work()
    assert not torch.equal(new_eager[0][:3], eager[0][:3])
    graph.replay()
    torch.cuda.synchronize()
    for c, e in zip(captured, new_eager):
        assert torch.equal(c, e)
    assert torch.equal(captured[0].cpu(), cpu_digests(ops, tensors, algorithm))
    assert torch.equal(captured[1].cpu(), ops.hash_rows(rows.cpu(), algorithm))
    graph.replay()  # a third replay: same inputs, same answers
    torch.cuda.synchronize()
    for c, e in zip(captured, new_eager):
        assert torch.equal(c, e)


def test_other_device(ops):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    x = torch.randn(MiB + 3, device="cuda:1")
    with torch.cuda.device(0):
        got = ops.hash_tensors([x, x[1:]])
        rows = ops.hash_rows(x[:MiB].view(64, -1))
    assert got.device == x.device and rows.device == x.device
    assert torch.equal(got.cpu(), cpu_digests(ops, [x, x[1:]], "blake3"))
    assert torch.equal(rows.cpu(), ops.hash_rows(x[:MiB].view(64, -1).cpu()))


def test_mixed_devices_refused_with_index(ops):
    for tensors, idx in (([torch.randn(3, device=DEV), torch.randn(3)], 1),
                         ([torch.randn(3), torch.randn(3), torch.randn(3, device=DEV)], 2)):
        with pytest.raises((ValueError, RuntimeError)) as info:
            ops.hash_tensors(tensors)
        msg = str(info.value)
        assert f"tensor {idx}" in msg and "cuda" in msg and "cpu" in msg, msg


# ---------------------------------------------------------------------------------------------
# torch.compile and opcheck


def _pair(tensors, x, algorithm):
    return (torch.ops.sentry.hash_tensors(tensors, algorithm),
            torch.ops.sentry.hash_rows(x, algorithm))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("backend,mode", [("aot_eager", None), ("inductor", None),
                                          ("inductor", "reduce-overhead")])
def test_torch_compile_fullgraph(ops, algorithm, backend, mode):
    """Including mode="reduce-overhead" (CUDA graphs): each call sees that call's data."""
    torch._dynamo.reset()
    fn = torch.compile(_pair, fullgraph=True, backend=backend, mode=mode)
    tensors = [torch.randn(100_000, device=DEV), torch.randn(30, 40, device=DEV).t(),
               torch.randint(0, 255, (5 * MiB + 1,), dtype=torch.uint8, device=DEV)]
    x = torch.randn(16, 3, 32, 32, device=DEV)
    for step in range(4):
        with torch.no_grad():
            for t in tensors:
                t.add_(1)
            x.mul_(-1)
        got = fn(tensors, x, algorithm)
        got = tuple(g.clone() for g in got)  # cudagraph outputs are overwritten by the next run
        want = _pair(tensors, x, algorithm)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), step
        assert torch.equal(got[0].cpu(), cpu_digests(ops, tensors, algorithm))


def test_torch_compile_with_surrounding_compute(ops):
    torch._dynamo.reset()

    def f(w, x):
        y = torch.relu(x @ w) + 1
        return torch.ops.sentry.hash_rows(y, "blake3"), torch.ops.sentry.hash_tensors([w]), y

    w, x = torch.randn(256, 128, device=DEV), torch.randn(64, 256, device=DEV)
    rows, dw, y = torch.compile(f, fullgraph=True)(w, x)
    assert torch.equal(rows, ops.hash_rows(y)) and torch.equal(dw, ops.hash_tensors([w]))
    assert torch.equal(rows.cpu(), ops.hash_rows(y.cpu()))


def _opcheck_samples():
    torch.manual_seed(7)
    for algorithm in ALGORITHMS:
        yield torch.ops.sentry.hash_tensors.default, (
            [torch.randn(100, device=DEV),
             torch.randint(0, 255, (3, 5000), dtype=torch.uint8, device=DEV)[:, 1:],
             torch.randn(0, device=DEV), torch.randn(40, 30, device=DEV).t()], algorithm)
        yield torch.ops.sentry.hash_tensors.default, (
            [torch.randn(70_000, device=DEV), torch.tensor(2.0, device=DEV, requires_grad=True),
             torch.randn(10, 3, device=DEV, requires_grad=True)], algorithm)
        yield torch.ops.sentry.hash_rows.default, (torch.randn(5, 300, device=DEV), algorithm)
        yield torch.ops.sentry.hash_rows.default, (
            torch.randn(4, 3, 9, 9, device=DEV, requires_grad=True).contiguous(
                memory_format=torch.channels_last), algorithm)


@pytest.mark.parametrize("sample", list(range(8)))
def test_opcheck(ops, sample):
    op, args = list(_opcheck_samples())[sample]
    result = torch.library.opcheck(op, args)
    assert all(v == "SUCCESS" for v in result.values()), result
