"""CPU tests of torch.ops.sentry.hash_tensors / hash_rows against independent references.

BLAKE3 is checked against the b3sum binary and the official test vectors; sha256-tree against
tests/reference.py (RFC 9162 written recursively over hashlib). A tensor's bytes are
``t.contiguous().view(torch.uint8)`` (SPEC §1).
"""
import json

import pytest
import torch

import reference
from reference import bytes_tensor, digest_rows, random_bytes, sha256_tree, tensor_bytes

ALGORITHMS = ("blake3", "sha256-tree")
KiB, MiB = 1024, 1024 * 1024

# Lengths around every boundary of the two trees and of the kernels' work split:
# BLAKE3 block (64) and chunk (1024) sizes; sha256-tree leaf (4096); the CPU kernel's 64 KiB
# groups and 16-lane SIMD batches of chunks; the GPU kernel's groups of 128 leaves (BLAKE3:
# 128 KiB, sha256-tree: 512 KiB) and of 128 groups (BLAKE3: 16 MiB).
SMALL_LENGTHS = [
    0, 1, 63, 64, 65, 1023, 1024, 1025, 2047, 2048, 2049, 3072, 4095, 4096, 4097,
    8191, 8192, 8193, 16 * KiB - 1, 16 * KiB, 16 * KiB + 1, 17 * KiB + 5,
    64 * KiB - 1, 64 * KiB, 64 * KiB + 1, 64 * KiB + 1024,
    128 * KiB - 1, 128 * KiB, 128 * KiB + 1,
    512 * KiB - 1, 512 * KiB, 512 * KiB + 1,
]
LARGE_LENGTHS = [
    MiB - 1, MiB + 1, 4 * MiB + 3,
    8 * MiB - 1, 8 * MiB, 8 * MiB + 1,
    16 * MiB - 1, 16 * MiB, 16 * MiB + 1,
]

def hash_one(ops, t, algorithm):
    out = ops.hash_tensors([t], algorithm)
    assert out.shape == (1, 32) and out.dtype == torch.uint8
    return digest_rows(out)[0]


def expected(blobs, algorithm):
    """Reference digests of byte strings; skips BLAKE3 checks where b3sum is missing."""
    if algorithm == "blake3" and not reference.have_b3sum():
        pytest.skip("b3sum is not installed: no independent BLAKE3 reference")
    return reference.reference_digests(blobs, algorithm)


def reference_digest(data, algorithm):
    return expected([data], algorithm)[0]


# ---------------------------------------------------------------------------------------------
# The references themselves


def test_reference_sha256_tree_by_hand():
    """The recursive reference against trees written out by hand (RFC 9162 §2.1.1)."""
    import hashlib

    def h(b):
        return hashlib.sha256(b).digest()

    assert sha256_tree(b"") == h(b"")
    assert sha256_tree(b"abc") == h(b"\x00abc")
    d = random_bytes(3 * 4096 + 7, seed=5)
    leaves = [h(b"\x00" + d[i:i + 4096]) for i in range(0, len(d), 4096)]
    assert len(leaves) == 4

    def node(a, b):
        return h(b"\x01" + a + b)

    assert sha256_tree(d) == node(node(leaves[0], leaves[1]), node(leaves[2], leaves[3]))
    # Three leaves: the third is promoted, not duplicated (unlike Bitcoin's tree).
    assert sha256_tree(d[:3 * 4096]) == node(node(leaves[0], leaves[1]), leaves[2])
    # Five leaves split 4 + 1.
    d5 = random_bytes(4 * 4096 + 1, seed=6)
    l5 = [h(b"\x00" + d5[i:i + 4096]) for i in range(0, len(d5), 4096)]
    assert sha256_tree(d5) == node(node(node(l5[0], l5[1]), node(l5[2], l5[3])), l5[4])


@pytest.mark.parametrize("leaves", [1, 2, 3, 5, 6, 7, 8, 9, 13, 16, 17, 31, 33, 100])
def test_reference_sha256_tree_recursive_equals_levelwise(leaves):
    """The spec's two descriptions of the tree agree (so the reference is the spec's tree)."""
    d = random_bytes(leaves * 4096 - 100, seed=leaves)
    assert sha256_tree(d) == reference.sha256_tree_levelwise(d)
    # With tiny leaves the shapes get deep quickly.
    assert sha256_tree(d[:leaves * 3], leaf_bytes=3) == \
        reference.sha256_tree_levelwise(d[:leaves * 3], leaf_bytes=3)


def test_reference_b3sum_known_answers(b3):
    assert b3(b"") == reference.BLAKE3_EMPTY
    assert b3(b"abc").hex() == "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"


# ---------------------------------------------------------------------------------------------
# Digests of byte strings of every interesting length


@pytest.mark.parametrize("n", SMALL_LENGTHS)
def test_blake3_equals_b3sum(ops, b3, n):
    data = random_bytes(n, seed=n)
    assert hash_one(ops, bytes_tensor(data), "blake3").hex() == b3(data).hex()


@pytest.mark.parametrize("n", LARGE_LENGTHS)
def test_blake3_equals_b3sum_large(ops, b3, n):
    data = random_bytes(n, seed=n)
    assert hash_one(ops, bytes_tensor(data), "blake3").hex() == b3(data).hex()


@pytest.mark.parametrize("n", SMALL_LENGTHS)
def test_sha256_tree_equals_reference(ops, n):
    data = random_bytes(n, seed=n)
    assert hash_one(ops, bytes_tensor(data), "sha256-tree").hex() == sha256_tree(data).hex()


@pytest.mark.parametrize("n", LARGE_LENGTHS + [64 * MiB - 1, 64 * MiB + 1])
def test_sha256_tree_equals_reference_large(ops, n):
    data = random_bytes(n, seed=n)
    assert hash_one(ops, bytes_tensor(data), "sha256-tree").hex() == sha256_tree(data).hex()


def test_blake3_official_test_vectors(ops):
    """Every input length of BLAKE3's official vectors (input byte i = i mod 251)."""
    with open(reference.vector_file("blake3_test_vectors.json")) as f:
        cases = json.load(f)["cases"]
    assert len(cases) >= 30
    pattern = bytes(range(251))
    tensors, want = [], []
    for case in cases:
        n = case["input_len"]
        data = (pattern * (n // 251 + 1))[:n]
        tensors.append(bytes_tensor(data))
        want.append(case["hash"][:64])  # the first 32 bytes of the extended output
    got = [d.hex() for d in digest_rows(ops.hash_tensors(tensors, "blake3"))]
    assert got == want


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_all_lengths_in_one_call(ops, algorithm):
    """One call over tensors of every boundary length: each digest is its own tensor's."""
    blobs = [random_bytes(n, seed=n + 7) for n in SMALL_LENGTHS + [MiB + 1, 16 * MiB + 1]]
    got = digest_rows(ops.hash_tensors([bytes_tensor(b) for b in blobs], algorithm))
    assert got == expected(blobs, algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_many_tensors_in_one_call(ops, rng, algorithm):
    """300 tensors of random sizes 0..20000 elements and mixed dtypes in one call."""
    dtypes = [torch.uint8, torch.float32, torch.float16, torch.int64, torch.bool, torch.float64]
    tensors = []
    for i in range(300):
        n = int(rng.integers(0, 20001))
        dtype = dtypes[i % len(dtypes)]
        if dtype == torch.bool:
            t = torch.rand(n) < 0.5
        elif dtype.is_floating_point:
            t = torch.randn(n, dtype=dtype)
        else:
            t = torch.randint(0, 100, (n,), dtype=dtype)
        tensors.append(t)
    got = digest_rows(ops.hash_tensors(tensors, algorithm))
    assert got == expected([tensor_bytes(t) for t in tensors], algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_model_state_dict(ops, algorithm):
    """A real model's tensor list (resnet152's 932 shapes, 0.24 GB): every digest is right."""
    sd = reference.model_state_dict("resnet152")
    tensors = list(sd.values())
    got = digest_rows(ops.hash_tensors(tensors, algorithm))
    assert got == expected([tensor_bytes(t) for t in tensors], algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_equal_bytes_give_equal_digests_distinct_bytes_distinct(ops, algorithm):
    """Only the bytes count: dtype and shape do not; one flipped bit does."""
    x = torch.randn(6, 7)
    as_bytes = x.view(torch.uint8).reshape(-1)
    as_int = x.view(torch.int32).reshape(7, 6)
    y = x.clone()
    y.view(torch.int32)[3, 4] ^= 1 << 17
    d = digest_rows(ops.hash_tensors([x, as_bytes, as_int, y], algorithm))
    assert d[0] == d[1] == d[2]
    assert d[3] != d[0]


# ---------------------------------------------------------------------------------------------
# Layouts, views and dtypes


def _noncontiguous_cases():
    base = torch.randn(300, 257)
    img = torch.randn(4, 3, 33, 35)
    return {
        "transposed": base.t(),
        "sliced_step": base[::3, 1::2],
        "sliced_cols": base[:, 5:200],
        "expanded_stride0": torch.randn(1, 5000).expand(40, 5000),
        "expanded_inner_stride0": torch.randn(40, 1).expand(40, 999),
        "channels_last": img.contiguous(memory_format=torch.channels_last),
        "permuted_3d": torch.randn(17, 19, 23).permute(2, 0, 1),
        "as_strided_overlap": torch.arange(1000, dtype=torch.int16).as_strided((50, 40), (7, 1)),
        "diagonal": torch.randn(500, 500).diagonal(),
        "big_transposed": torch.randint(0, 255, (300, 1500), dtype=torch.uint8).t(),
        "unfold": torch.randn(10000).unfold(0, 64, 17),
    }


NONCONTIG = _noncontiguous_cases()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("name", sorted(NONCONTIG))
def test_noncontiguous_equals_contiguous_copy(ops, algorithm, name):
    t = NONCONTIG[name]
    assert not t.is_contiguous(), name
    got = digest_rows(ops.hash_tensors([t, t.contiguous()], algorithm))
    assert got[0] == got[1]
    assert got[0] == reference_digest(tensor_bytes(t), algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_noncontiguous_mixed_with_contiguous_in_one_call(ops, algorithm):
    names = sorted(NONCONTIG)
    tensors = []
    for name in names:
        tensors += [NONCONTIG[name], torch.randn(33)]
    got = digest_rows(ops.hash_tensors(tensors, algorithm))
    expect = digest_rows(ops.hash_tensors([t.contiguous() for t in tensors], algorithm))
    assert got == expect
    assert len(set(got)) == len(got)  # every tensor got its own digest


def _dtype_list():
    names = [
        "float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64", "uint8",
        "uint16", "uint32", "uint64", "bool", "complex32", "complex64", "complex128",
        "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
        "float4_e2m1fn_x2", "bits8", "bits16",
    ]
    return [getattr(torch, n) for n in names if hasattr(torch, n)]


DTYPES = _dtype_list()


def _random_of_dtype(shape, dtype, seed):
    """A tensor of `dtype` whose bytes are random (any bit pattern, NaNs included)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    n = 1
    for s in shape:
        n *= s
    raw = bytes_tensor(random_bytes(n * itemsize, seed=seed))
    if dtype == torch.bool:  # only 0 and 1 are valid bools
        raw = raw & 1
    return raw.view(dtype).reshape(shape)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_equals_reference_of_its_bytes(ops, algorithm, dtype):
    tensors = [
        _random_of_dtype((37, 41), dtype, seed=1),          # odd byte counts, one leaf
        _random_of_dtype((70, 1031), dtype, seed=2),        # several groups
        _random_of_dtype((3, 1, 5), dtype, seed=3).transpose(0, 2),  # non-contiguous
        _random_of_dtype((), dtype, seed=4),                # 0-dim
        _random_of_dtype((0, 4), dtype, seed=5),            # no elements
    ]
    got = digest_rows(ops.hash_tensors(tensors, algorithm))
    assert got == expected([tensor_bytes(t) for t in tensors], algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_natural_values_of_common_dtypes(ops, algorithm):
    """Tensors made by ordinary ops (not views of random bytes) of the dtypes models use."""
    x = torch.randn(123, 45)
    tensors = [x, x.double(), x.half(), x.bfloat16(), (x * 100).to(torch.int32),
               (x * 100).to(torch.int64), (x * 10).to(torch.int8), x > 0,
               torch.complex(x, -x), torch.complex(x.double(), x.double())]
    if hasattr(torch, "float8_e4m3fn"):
        tensors += [x.to(torch.float8_e4m3fn), x.to(torch.float8_e5m2)]
    got = digest_rows(ops.hash_tensors(tensors, algorithm))
    assert got == expected([tensor_bytes(t) for t in tensors], algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_conjugate_and_negative_views_hash_their_values(ops, algorithm):
    """A lazily conjugated / negated view hashes its logical values, not the storage."""
    c = torch.randn(1000, dtype=torch.complex64)
    x = torch.randn(1000)
    conj, neg = c.conj(), torch._neg_view(x)
    assert conj.is_conj() and neg.is_neg()
    got = digest_rows(ops.hash_tensors([conj, c, neg, x], algorithm))
    assert got[0] != got[1] and got[2] != got[3]
    assert got == expected([tensor_bytes(c.conj().resolve_conj()), tensor_bytes(c),
                            tensor_bytes(-x), tensor_bytes(x)], algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_zero_dim_and_zero_size(ops, algorithm):
    empty = reference.SHA256_EMPTY if algorithm == "sha256-tree" else reference.BLAKE3_EMPTY
    scalar = torch.tensor(3.5)
    tensors = [scalar, torch.tensor(7, dtype=torch.int64), torch.empty(0), torch.empty(3, 0),
               torch.empty(0, 5, dtype=torch.float64), torch.empty(2, 0, 4).transpose(0, 2)]
    got = digest_rows(ops.hash_tensors(tensors, algorithm))
    assert got[2] == got[3] == got[4] == got[5] == empty
    assert got[0] == reference_digest(bytes.fromhex("00006040"), algorithm)  # 3.5f LE
    assert got[1] == reference_digest((7).to_bytes(8, "little"), algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("offset", [1, 2, 3, 5, 7, 9, 15, 4095])
def test_unaligned_data_pointer(ops, algorithm, offset):
    """Views that start at odd addresses (the fast paths assume nothing about alignment)."""
    base = bytes_tensor(random_bytes(300 * KiB + 64, seed=offset))
    views = [base[offset:], base[offset:offset + 1025], base[offset:offset + 64 * KiB + 3],
             base[offset:offset + 16 * 1024]]
    for v in views:
        assert v.data_ptr() % 16 != 0 or offset % 16 == 0
    got = digest_rows(ops.hash_tensors(views, algorithm))
    assert got == expected([tensor_bytes(v) for v in views], algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_float_views_at_element_offsets(ops, algorithm):
    """4-byte aligned but not 16-byte aligned float views, and 2-byte aligned halves."""
    f = torch.randn(100_000)
    h = torch.randn(100_000).half()
    views = [f[1:], f[3:70_001], h[1:], h[5:40_005], f[1::2]]
    got = digest_rows(ops.hash_tensors(views, algorithm))
    expect = digest_rows(ops.hash_tensors([v.clone() for v in views], algorithm))
    assert got == expect
    assert got == expected([tensor_bytes(v) for v in views], algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_bytes_outside_the_view_do_not_matter(ops, algorithm):
    """Only the viewed bytes are read: changing the storage around a view changes nothing."""
    base = bytes_tensor(random_bytes(200_000, seed=11))
    view = base[1001:131_073 + 1001]
    grid = bytes_tensor(random_bytes(150_000, seed=12)).view(100, 1500)
    rows = grid[:, 3:1400]  # rows with gaps between them

    def digests():
        return digest_rows(ops.hash_tensors([view], algorithm)) + \
            digest_rows(ops.hash_rows(rows, algorithm))

    before = digests()
    keep = rows.clone()
    base[:1001] = 0
    base[131_073 + 1001:] = 255
    grid[:, :3] = 7
    grid[:, 1400:] = 9
    assert torch.equal(keep, rows)
    assert digests() == before
    base[131_073 + 1000] ^= 1  # the view's last byte
    grid[99, 1399] ^= 1  # the last row's last byte
    after = digests()
    assert after[0] != before[0] and after[1:100] == before[1:100] and after[100] != before[100]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_requires_grad_parameters(ops, algorithm):
    model = torch.nn.Sequential(torch.nn.Linear(37, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
    params = list(model.parameters())
    assert all(p.requires_grad for p in params)
    out = ops.hash_tensors(params, algorithm)
    assert not out.requires_grad and out.grad_fn is None
    assert digest_rows(out) == digest_rows(ops.hash_tensors([p.detach() for p in params],
                                                            algorithm))
    rows = ops.hash_rows(params[0], algorithm)
    assert not rows.requires_grad
    assert digest_rows(rows) == digest_rows(ops.hash_rows(params[0].detach(), algorithm))
    assert digest_rows(out) == expected([tensor_bytes(p) for p in params], algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_inference_mode_and_no_grad(ops, algorithm):
    with torch.inference_mode():
        t = torch.randn(5000)
        inside = digest_rows(ops.hash_tensors([t], algorithm))
    with torch.no_grad():
        nog = digest_rows(ops.hash_tensors([t], algorithm))
    assert inside == nog == digest_rows(ops.hash_tensors([t.clone()], algorithm))
    assert inside == expected([tensor_bytes(t)], algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_output_tensor_properties(ops, algorithm):
    tensors = [torch.randn(10), torch.randn(3, 3)]
    out = ops.hash_tensors(tensors, algorithm)
    assert out.shape == (2, 32) and out.dtype == torch.uint8 and out.device.type == "cpu"
    assert out.is_contiguous()
    # A fresh tensor: writing into it does not change the next call's answer.
    first = out.clone()
    out.zero_()
    assert torch.equal(ops.hash_tensors(tensors, algorithm), first)
    rows = ops.hash_rows(torch.randn(5, 7), algorithm)
    assert rows.shape == (5, 32) and rows.dtype == torch.uint8 and rows.is_contiguous()


def test_default_algorithm_is_blake3(ops):
    t = torch.randn(1000)
    assert torch.equal(torch.ops.sentry.hash_tensors([t]), ops.hash_tensors([t], "blake3"))
    assert torch.equal(ops.hash_tensors([t]), ops.hash_tensors([t], "blake3"))
    assert torch.equal(torch.ops.sentry.hash_rows(t.view(10, 100)),
                       ops.hash_rows(t.view(10, 100), "blake3"))
    assert not torch.equal(ops.hash_tensors([t], "sha256-tree"), ops.hash_tensors([t], "blake3"))


def test_wrapper_accepts_any_iterable(ops):
    ts = [torch.randn(5), torch.randn(6)]
    expect = ops.hash_tensors(ts)
    assert torch.equal(ops.hash_tensors(tuple(ts)), expect)
    assert torch.equal(ops.hash_tensors(t for t in ts), expect)


def test_empty_list(ops):
    for algorithm in ALGORITHMS:
        out = ops.hash_tensors([], algorithm)
        assert out.shape == (0, 32) and out.dtype == torch.uint8


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_same_tensor_twice_and_aliasing_views(ops, algorithm):
    t = torch.randn(40_000)
    got = digest_rows(ops.hash_tensors([t, t, t[:20_000], t[20_000:]], algorithm))
    assert got[0] == got[1] and got[2] != got[3]
    assert got == expected([tensor_bytes(v) for v in (t, t, t[:20_000], t[20_000:])], algorithm)


# ---------------------------------------------------------------------------------------------
# hash_rows


def _row_cases():
    x4 = torch.randn(6, 3, 17, 19)
    big = torch.randint(0, 255, (3, 200_003), dtype=torch.uint8)
    return {
        "2d_float": torch.randn(8, 1000),
        "4d_batch": x4,
        "4d_channels_last": x4.contiguous(memory_format=torch.channels_last),
        "permuted_rows": torch.randn(7, 5, 9).permute(0, 2, 1),
        "rows_strided": torch.randn(20, 300)[::3],
        "slice_cols": torch.randn(9, 4097)[:, :1025],
        "slice_cols_offset": torch.randint(0, 255, (9, 4097), dtype=torch.uint8)[:, 1:4000],
        "transposed": torch.randn(300, 11).t(),
        "one_d": torch.randn(50),
        "one_d_strided": torch.randn(100)[::2],
        "batch_zero": torch.empty(0, 10),
        "batch_zero_noncontig": torch.empty(10, 0).t(),
        "rows_of_zero_bytes": torch.empty(5, 0),
        "rows_of_zero_bytes_3d": torch.empty(4, 3, 0),
        "expanded_rows_stride0": torch.randn(1, 777).expand(6, 777),
        "expanded_inside_row": torch.randn(6, 1).expand(6, 777),
        "overlapping_rows": torch.arange(3000, dtype=torch.int32).as_strided((40, 100), (13, 1)),
        "big_rows": big,
        "big_rows_unaligned": big[:, 1:],
        "single_row": torch.randn(1, 70_000),
        "bool_rows": torch.rand(6, 333) > 0.5,
        "bf16_rows": torch.randn(12, 2049).bfloat16(),
        "many_rows": torch.randint(0, 255, (2000, 48), dtype=torch.uint8),
    }


ROWS = _row_cases()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("name", sorted(ROWS))
def test_hash_rows_equals_per_row_reference(ops, algorithm, name):
    x = ROWS[name]
    out = ops.hash_rows(x, algorithm)
    assert out.shape == (x.shape[0], 32) and out.dtype == torch.uint8
    blobs = [tensor_bytes(x[i]) for i in range(x.shape[0])]
    assert digest_rows(out) == expected(blobs, algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hash_rows_equals_hash_tensors_of_rows(ops, algorithm):
    x = torch.randn(16, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    assert torch.equal(ops.hash_rows(x, algorithm), ops.hash_tensors(list(x.unbind(0)), algorithm))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hash_rows_of_zero_byte_rows_is_empty_digest(ops, algorithm):
    empty = reference.SHA256_EMPTY if algorithm == "sha256-tree" else reference.BLAKE3_EMPTY
    assert digest_rows(ops.hash_rows(torch.empty(4, 0, 3), algorithm)) == [empty] * 4
    assert ops.hash_rows(torch.empty(0, 3), algorithm).shape == (0, 32)


# ---------------------------------------------------------------------------------------------
# Errors: refused inputs name the offending tensor


def _raise_message(fn):
    with pytest.raises((ValueError, RuntimeError)) as info:
        fn()
    return str(info.value)


def _sparse():
    return torch.randn(4, 4).to_sparse()


def _quantized():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.quantize_per_tensor(torch.randn(4, 4), 0.1, 0, torch.qint8)


def _nested():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.nested.nested_tensor([torch.randn(2), torch.randn(3)])


@pytest.mark.parametrize("make", [_sparse, _quantized, _nested], ids=["sparse", "quantized",
                                                                      "nested"])
def test_refused_layouts_name_the_tensor(ops, make):
    bad = make()
    msg = _raise_message(lambda: ops.hash_tensors([torch.randn(3), torch.randn(3), bad]))
    assert "tensor 2" in msg, msg


@pytest.mark.parametrize("make", [_sparse, _quantized, _nested], ids=["sparse", "quantized",
                                                                      "nested"])
def test_hash_rows_refused_layouts_name_the_input(ops, make):
    msg = _raise_message(lambda: ops.hash_rows(make()))
    assert "sentry.hash_rows" in msg and "input" in msg, msg


def test_raw_op_takes_an_empty_list():
    out = torch.ops.sentry.hash_tensors([])
    assert out.shape == (0, 32) and out.dtype == torch.uint8


def test_meta_tensor_refused_with_index(ops):
    msg = _raise_message(lambda: ops.hash_tensors(
        [torch.empty(3, device="meta"), torch.empty(3, device="meta"),
         torch.empty(5, device="meta")]))
    assert "tensor 0" in msg and "meta" in msg, msg
    msg = _raise_message(lambda: ops.hash_rows(torch.empty(3, 4, device="meta")))
    assert "meta" in msg and "input" in msg, msg


def test_meta_tensor_among_cpu_tensors_named(ops):
    msg = _raise_message(lambda: ops.hash_tensors(
        [torch.randn(3), torch.randn(3), torch.empty(3, device="meta")]))
    assert "tensor 2" in msg and "meta" in msg, msg


@pytest.mark.parametrize("name", ["md5", "sha256", "BLAKE3", "", "blake3 "])
def test_unknown_algorithm(ops, name):
    msg = _raise_message(lambda: ops.hash_tensors([torch.randn(3)], name))
    assert f"'{name}'" in msg and "unknown algorithm" in msg, msg
    msg = _raise_message(lambda: ops.hash_rows(torch.randn(3, 3), name))
    assert f"'{name}'" in msg and "unknown algorithm" in msg, msg


def test_hash_rows_zero_dim_refused(ops):
    msg = _raise_message(lambda: ops.hash_rows(torch.tensor(1.0)))
    assert "0-dim" in msg and "sentry.hash_rows" in msg, msg


# ---------------------------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_deterministic_across_thread_counts(ops, algorithm):
    tensors = [bytes_tensor(random_bytes(9 * MiB + 13, seed=3))] + \
        [torch.randn(int(n)) for n in torch.randint(0, 50_000, (64,))]
    rows = torch.randn(256, 3000)
    old = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            results.append((ops.hash_tensors(tensors, algorithm), ops.hash_rows(rows, algorithm)))
    finally:
        torch.set_num_threads(old)
    for d, r in results[1:]:
        assert torch.equal(d, results[0][0]) and torch.equal(r, results[0][1])
    assert digest_rows(results[0][0]) == expected([tensor_bytes(t) for t in tensors], algorithm)
    assert digest_rows(results[0][1]) == expected([tensor_bytes(r) for r in rows], algorithm)


def test_concurrent_calls_from_python_threads(ops):
    """Calls from several threads at once (each fans out over the intra-op pool) agree."""
    from concurrent.futures import ThreadPoolExecutor

    tensors = [torch.randn(int(n)) for n in torch.randint(0, 300_000, (24,))]
    want = {a: ops.hash_tensors(tensors, a) for a in ALGORITHMS}
    with ThreadPoolExecutor(4) as pool:
        futures = [(a, pool.submit(ops.hash_tensors, tensors, a)) for a in ALGORITHMS * 8]
        for a, fut in futures:
            assert torch.equal(fut.result(), want[a])


def _big_unique_chunks(nbytes):
    """`nbytes` of data in which every 1 KiB chunk differs (a random block, each chunk
    stamped with its index), made quickly enough for multi-GiB tests."""
    block = bytes_tensor(random_bytes(MiB, seed=99))
    t = torch.empty(nbytes, dtype=torch.uint8)
    full = nbytes // MiB
    t[:full * MiB].view(full, MiB).copy_(block)
    t[full * MiB:] = block[:nbytes - full * MiB]
    chunks = nbytes // 1024
    t[:chunks * 1024].view(chunks, 1024)[:, :8].view(torch.int64).view(-1).copy_(
        torch.arange(chunks, dtype=torch.int64))
    return t


@pytest.mark.slow
def test_over_4_gib_cpu(ops, b3):
    """A tensor of more than 2^32 bytes (64-bit sizes and counters everywhere)."""
    try:
        t = _big_unique_chunks(4 * 1024 * MiB + 4097)
    except RuntimeError as exc:  # not enough memory on this machine
        pytest.skip(f"cannot allocate 4 GiB: {exc}")
    got = digest_rows(ops.hash_tensors([t, t[1:]], "blake3"))
    data = t.numpy().data
    assert got[0] == b3(data)
    assert got[1] == b3(data[1:])


def test_repeated_calls_identical(ops):
    tensors = [torch.randn(int(n)) for n in torch.randint(0, 100_000, (40,))]
    first = ops.hash_tensors(tensors)
    for _ in range(5):
        assert torch.equal(ops.hash_tensors(tensors), first)


# ---------------------------------------------------------------------------------------------
# torch.compile and opcheck


def _compiled_pair(tensors, x, algorithm):
    return (torch.ops.sentry.hash_tensors(tensors, algorithm),
            torch.ops.sentry.hash_rows(x, algorithm))


@pytest.mark.parametrize("backend", ["eager", "aot_eager", "inductor"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_torch_compile_fullgraph(ops, backend, algorithm):
    torch._dynamo.reset()
    fn = torch.compile(_compiled_pair, fullgraph=True, backend=backend)
    for size in (100, 4097):  # a second shape: recompiles (or runs dynamic) correctly
        tensors = [torch.randn(size), torch.randint(0, 255, (3, size), dtype=torch.uint8),
                   torch.randn(0), torch.randn(size, 3).t()]
        x = torch.randn(8, size)
        got = fn(tensors, x, algorithm)
        want = _compiled_pair(tensors, x, algorithm)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert digest_rows(got[0]) == expected([tensor_bytes(t) for t in tensors], algorithm)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_dynamic_shapes(ops, backend):
    """dynamic=True: one graph serves batches and row sizes it was not traced with."""
    torch._dynamo.reset()
    fn = torch.compile(lambda x, algorithm: torch.ops.sentry.hash_rows(x, algorithm),
                       fullgraph=True, backend=backend, dynamic=True)
    for b, n in ((4, 100), (9, 4097), (1, 70_000), (33, 5)):
        x = torch.randn(b, n)
        for algorithm in ALGORITHMS:
            got = fn(x, algorithm)
            assert got.shape == (b, 32)
            assert digest_rows(got) == expected([tensor_bytes(r) for r in x], algorithm)


def test_torch_compile_with_surrounding_compute(ops):
    """The op inside a graph with other ops: it sees the computed values, not stale ones."""
    torch._dynamo.reset()

    def f(w, x):
        y = torch.relu(x @ w) + 1
        return torch.ops.sentry.hash_tensors([y, w], "blake3"), y

    w, x = torch.randn(64, 32), torch.randn(16, 64)
    for backend in ("aot_eager", "inductor"):
        got, y = torch.compile(f, fullgraph=True, backend=backend)(w, x)
        assert torch.equal(got, ops.hash_tensors([y, w]))
        assert torch.equal(got[1], ops.hash_tensors([w])[0])


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_sees_in_place_updates(ops, backend):
    """A hash after an in-place update inside the graph hashes the updated values, and one
    before it the old values (functionalization keeps the order)."""
    torch._dynamo.reset()

    def f(x, w):
        before = torch.ops.sentry.hash_rows(x, "sha256-tree")
        x.mul_(2).add_(w)
        after = torch.ops.sentry.hash_rows(x, "sha256-tree")
        return before, after

    x, w = torch.randn(6, 100), torch.randn(100)
    x_eager = x.clone()
    before_e, after_e = f(x_eager, w)
    before_c, after_c = torch.compile(f, fullgraph=True, backend=backend)(x, w)
    assert torch.equal(x, x_eager)
    assert torch.equal(before_c, before_e) and torch.equal(after_c, after_e)
    assert not torch.equal(before_c, after_c)
    assert digest_rows(after_c) == [sha256_tree(tensor_bytes(r)) for r in x_eager]


def _opcheck_samples():
    torch.manual_seed(7)
    for algorithm in ALGORITHMS:
        yield torch.ops.sentry.hash_tensors.default, (
            [torch.randn(100), torch.randint(0, 255, (3, 5000), dtype=torch.uint8),
             torch.randn(0), torch.randn(40, 30).t()], algorithm)
        yield torch.ops.sentry.hash_tensors.default, (
            [torch.randn(70_000), torch.tensor(2.0, requires_grad=True),
             torch.randn(10, 3, requires_grad=True)], algorithm)
        yield torch.ops.sentry.hash_rows.default, (torch.randn(5, 300), algorithm)
        yield torch.ops.sentry.hash_rows.default, (
            torch.randn(4, 3, 9, 9, requires_grad=True).contiguous(
                memory_format=torch.channels_last), algorithm)
        yield torch.ops.sentry.hash_rows.default, (torch.empty(0, 7), algorithm)


@pytest.mark.parametrize("sample", list(range(10)))
def test_opcheck(ops, sample):
    op, args = list(_opcheck_samples())[sample]
    result = torch.library.opcheck(op, args)
    assert all(v == "SUCCESS" for v in result.values()), result
