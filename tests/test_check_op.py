"""torch.ops.sentry.check_digests (the on-device sample check of DatasetChecker) against a
plain-Python reference of its contract, on CPU and CUDA."""
import random

import pytest
import torch

import sentry_ops  # noqa: F401  registers torch.ops.sentry

BYTES, LABEL, UNKNOWN = 1, 2, 4
INT64_MAX = (1 << 63) - 1
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def reference(digests, labels, indices, expected, expected_labels, known, seen, state):
    """What the op must do, one row at a time in plain Python."""
    rows = len(expected)
    first, first_code, bad = INT64_MAX, 0, 0
    for d, y, i in zip(digests, labels, indices):
        r = i if 0 <= i < rows - 1 else rows - 1
        seen[r] = True
        code = UNKNOWN if not known[r] else (BYTES if d != expected[r] else 0) | (
            LABEL if y != expected_labels[r] else 0)
        if code:
            bad += 1
            if i < first:
                first, first_code = i, code
            elif i == first:
                first_code |= code
    if bad and not state[0]:
        state[0:4] = [1, first, first_code, state[5]]
    state[4] += bad
    state[5] += 1


def make_tables(rows, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    expected = torch.randint(0, 256, (rows + 1, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (rows + 1,), generator=g)
    known = torch.rand(rows + 1, generator=g) < 0.9
    known[-1] = False  # the sentinel
    seen = torch.zeros(rows + 1, dtype=torch.bool)
    state = torch.tensor([0, -1, 0, -1, 0, 0])
    return [t.to(device) for t in (expected, labels, known, seen, state)]


def make_batch(expected, labels, known, b, rng, bad_rate):
    rows = expected.shape[0] - 1
    idx = [rng.randrange(-3, rows + 3) if rng.random() < bad_rate / 4 else rng.randrange(rows)
           for _ in range(b)]
    idx = torch.tensor(idx, dtype=torch.int64)
    safe = idx.clamp(0, rows)
    safe[(idx < 0) | (idx >= rows)] = rows
    d = expected.cpu()[safe].clone()
    y = labels.cpu()[safe].clone()
    for k in range(b):
        if rng.random() < bad_rate:
            d[k, rng.randrange(32)] ^= 1 << rng.randrange(8)
        if rng.random() < bad_rate:
            y[k] += 1
    return d, y, idx


def run_both(device, tables, batches):
    expected, labels, known, seen, state = tables
    ref_seen = seen.cpu().tolist()
    ref_state = state.cpu().tolist()
    exp_rows = [bytes(r) for r in expected.cpu().tolist()]
    for d, y, idx in batches:
        torch.ops.sentry.check_digests(d.to(device), y.to(device), idx.to(device), expected,
                                       labels, known, seen, state)
        reference([bytes(r) for r in d.tolist()], y.tolist(), idx.tolist(), exp_rows,
                  labels.cpu().tolist(), known.cpu().tolist(), ref_seen, ref_state)
    return (seen.cpu().tolist(), state.cpu().tolist()), (ref_seen, ref_state)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad_rate", [0.0, 0.001, 0.05, 0.5])
def test_matches_reference(device, bad_rate):
    rng = random.Random(int(bad_rate * 1000))
    tables = make_tables(3000, device)
    batches = [make_batch(*tables[:3], b, rng, bad_rate) for b in (512, 1, 0, 2000, 511, 700)]
    got, want = run_both(device, tables, batches)
    assert got == want


@pytest.mark.parametrize("device", DEVICES)
def test_first_failure_sticks_and_duplicates_merge(device):
    expected, labels, known, seen, state = make_tables(100, device)
    known.fill_(True)
    known[-1] = False
    ok = expected[:4].clone()
    y = labels[:4].clone()
    idx = torch.arange(4, device=device)
    op = torch.ops.sentry.check_digests
    op(ok, y, idx, expected, labels, known, seen, state)
    assert state.tolist() == [0, -1, 0, -1, 0, 1]
    # Index 7 twice: once with other bytes, once with another label; index 9 bad too.
    d = expected[[9, 7, 7]].clone()
    d[0, 0] ^= 1
    d[1, 5] ^= 0x80
    y = labels[[9, 7, 7]].clone()
    y[2] += 1
    op(d, y, torch.tensor([9, 7, 7], device=device), expected, labels, known, seen, state)
    assert state.tolist() == [1, 7, BYTES | LABEL, 1, 3, 2]
    # A later failure at a lower index does not replace the first one; counts go on.
    op(expected[:1].clone(), labels[:1] + 1, idx[:1], expected, labels, known, seen, state)
    assert state.tolist() == [1, 7, BYTES | LABEL, 1, 4, 3]
    assert seen.nonzero().flatten().tolist() == [0, 1, 2, 3, 7, 9]


@pytest.mark.parametrize("device", DEVICES)
def test_unknown_and_out_of_range_go_to_sentinel(device):
    expected, labels, known, seen, state = make_tables(10, device)
    known[3] = False
    idx = torch.tensor([-5, 3, 10, 1 << 40], device=device)
    d = expected[[10, 3, 10, 10]].clone()
    op = torch.ops.sentry.check_digests
    op(d, labels[[10, 3, 10, 10]].clone(), idx, expected, labels, known, seen, state)
    assert state.tolist() == [1, -5, UNKNOWN, 0, 4, 1]
    assert seen.nonzero().flatten().tolist() == [3, 10]


def _args(device="cpu", b=4, rows=9):
    expected, labels, known, seen, state = make_tables(rows - 1, device)
    return [expected[:b].clone(), labels[:b].clone(), torch.arange(b, device=device), expected,
            labels, known, seen, state]


@pytest.mark.parametrize("position,bad,message", [
    (0, torch.zeros(4, 31, dtype=torch.uint8), "digests has shape"),
    (0, torch.zeros(4, 32, dtype=torch.int32), "digests must be Byte"),
    (1, torch.zeros(3, dtype=torch.int64), "labels has shape"),
    (1, torch.zeros(4, dtype=torch.int32), "labels must be Long"),
    (2, torch.zeros(4, 1, dtype=torch.int64), r"indices has shape \[4, 1\]; expected \[4\]"),
    (3, torch.zeros(9, 64, dtype=torch.uint8)[:, ::2], "expected must be contiguous"),
    (4, torch.zeros(8, dtype=torch.int64), "expected_labels has shape"),
    (5, torch.zeros(9, dtype=torch.uint8), "known must be Bool"),
    (0, torch.zeros(4, 64, dtype=torch.uint8)[:, ::2], None),  # strided batch inputs are fine
    (6, torch.zeros(10, dtype=torch.bool), "seen has shape"),
    (7, torch.zeros(5, dtype=torch.int64), "state has shape"),
    (3, torch.zeros(0, 32, dtype=torch.uint8), "sentinel row"),
])
def test_bad_arguments_are_named(position, bad, message):
    args = _args()
    args[position] = bad
    if message is None:
        torch.ops.sentry.check_digests(*args)
        return
    if position == 3 and bad.shape[0] == 0:  # the other tables shrink with it
        args[4], args[5], args[6] = args[4][:0], args[5][:0], args[6][:0]
    with pytest.raises(ValueError, match=message):
        torch.ops.sentry.check_digests(*args)


@pytest.mark.cuda
def test_mixed_devices_are_named():
    args = _args("cuda")
    args[5] = args[5].cpu()
    with pytest.raises(ValueError, match="known is on cpu"):
        torch.ops.sentry.check_digests(*args)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    args = _args(device)
    args[0][1, 0] ^= 1
    torch.library.opcheck(torch.ops.sentry.check_digests.default, args)


@pytest.mark.cuda
def test_cuda_no_sync_and_graph_capture():
    tables = make_tables(5000, "cuda")
    rng = random.Random(5)
    batches = [make_batch(*tables[:3], 512, rng, 0.01) for _ in range(3)]
    static = [t.cuda() for t in batches[0]]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        torch.ops.sentry.check_digests(*static, *tables)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        graph.capture_begin()
        torch.ops.sentry.check_digests(*static, *tables)
        graph.capture_end()
    torch.cuda.current_stream().wait_stream(stream)
    ref_tables = make_tables(5000, "cpu")
    expected_rows = [bytes(r) for r in ref_tables[0].tolist()]
    ref_seen, ref_state = ref_tables[3].tolist(), ref_tables[4].tolist()
    for b in [batches[0]] + batches:  # the eager call above, then one replay per batch
        if b is not batches[0] or ref_state[5] > 0:
            for buf, v in zip(static, b):
                buf.copy_(v)
            graph.replay()
        reference([bytes(r) for r in b[0].tolist()], b[1].tolist(), b[2].tolist(),
                  expected_rows, ref_tables[1].tolist(), ref_tables[2].tolist(), ref_seen,
                  ref_state)
    assert tables[4].tolist() == ref_state and tables[3].tolist() == ref_seen
