"""Independent reference digests for the tests: nothing here touches sentry_ops.

* ``sha256_tree(data)``: RFC 9162 §2.1.1 Merkle Tree Hash over hashlib's SHA-256, written
  recursively exactly as the RFC states it (split at the largest power of two k < n), over the
  consecutive 4096-byte pieces of the input. The kernels build the same tree bottom-up in
  aligned groups; this one shares no code or strategy with them.
* ``b3sum(data)`` / ``b3sum_many(list)``: the official BLAKE3 command-line tool.
* ``tensor_bytes(t)``: a tensor's logical bytes as the spec defines them
  (``t.contiguous().view(torch.uint8)``, row-major, little-endian in-memory form).
"""
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
import torch

SHA256_TREE_LEAF_BYTES = 4096
B3SUM = shutil.which("b3sum")
SHA256_EMPTY = hashlib.sha256(b"").digest()
BLAKE3_EMPTY = bytes.fromhex("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262")


# ---------------------------------------------------------------------------------------------
# sha256-tree (RFC 9162)


def rfc9162_leaf(piece):
    return hashlib.sha256(b"\x00" + bytes(piece)).digest()


def rfc9162_node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n):
    """The largest power of two k with k < n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _mth(view, first, n, leaf_bytes):
    """MTH(D[first : first + n]) of RFC 9162 §2.1.1, D being the leaves of `view`."""
    if n == 1:
        start = first * leaf_bytes
        return rfc9162_leaf(view[start:start + leaf_bytes])
    k = _largest_power_of_two_below(n)
    return rfc9162_node(_mth(view, first, k, leaf_bytes), _mth(view, first + k, n - k, leaf_bytes))


def sha256_tree(data, leaf_bytes=SHA256_TREE_LEAF_BYTES):
    """32-byte sha256-tree digest of `data` (bytes-like)."""
    view = memoryview(data).cast("B")  # no copy: big inputs stay where they are
    if len(view) == 0:
        return SHA256_EMPTY  # RFC 9162: MTH({}) = SHA-256()
    n = (len(view) + leaf_bytes - 1) // leaf_bytes
    return _mth(view, 0, n, leaf_bytes)


def sha256_tree_levelwise(data, leaf_bytes=SHA256_TREE_LEAF_BYTES):
    """The same digest built the other way the spec states: pair nodes level by level, an odd
    last node moving up unchanged. Only used to check the recursive reference itself."""
    data = bytes(data)
    if not data:
        return SHA256_EMPTY
    level = [rfc9162_leaf(data[i:i + leaf_bytes]) for i in range(0, len(data), leaf_bytes)]
    while len(level) > 1:
        nxt = [rfc9162_node(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


# ---------------------------------------------------------------------------------------------
# BLAKE3 through b3sum


def have_b3sum():
    return B3SUM is not None


def b3sum(data):
    """32-byte BLAKE3 digest of `data`, computed by the b3sum binary reading stdin."""
    if B3SUM is None:
        raise FileNotFoundError("b3sum is not installed")
    out = subprocess.run([B3SUM, "--no-names"], input=memoryview(data).cast("B"),
                         capture_output=True, check=True).stdout
    return bytes.fromhex(out.split()[0].decode())


def b3sum_many(blobs):
    """BLAKE3 digests of many byte strings with one b3sum run (over temporary files)."""
    if B3SUM is None:
        raise FileNotFoundError("b3sum is not installed")
    blobs = [bytes(b) for b in blobs]
    if not blobs:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, blob in enumerate(blobs):
            path = os.path.join(tmp, f"{i}.bin")
            with open(path, "wb") as f:
                f.write(blob)
            paths.append(path)
        out = subprocess.run([B3SUM, "--no-names", *paths], capture_output=True, check=True,
                             text=True).stdout.split()
    assert len(out) == len(blobs), out
    return [bytes.fromhex(h) for h in out]


# ---------------------------------------------------------------------------------------------
# Tensors


def tensor_bytes(t):
    """The spec's byte string of a tensor: its elements in row-major order, in-memory form."""
    t = t.detach().cpu()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    flat = t.contiguous().reshape(-1)  # reshape(-1) also turns a 0-dim tensor into [1]
    if flat.dtype != torch.uint8:
        flat = flat.view(torch.uint8)
    return flat.numpy().tobytes()


def reference_digest(data, algorithm):
    if algorithm == "blake3":
        return b3sum(data)
    if algorithm == "sha256-tree":
        return sha256_tree(data)
    raise ValueError(algorithm)


def reference_digests(blobs, algorithm):
    """Reference digests of many byte strings (one b3sum run for BLAKE3)."""
    if algorithm == "blake3":
        return b3sum_many(blobs)
    return [reference_digest(b, algorithm) for b in blobs]


def digest_rows(out):
    """uint8 [N, 32] digest tensor -> list of N bytes objects."""
    assert out.dtype == torch.uint8 and out.dim() == 2 and out.shape[1] == 32, \
        (out.dtype, out.shape)
    flat = out.cpu().contiguous().numpy().tobytes()
    return [flat[32 * i:32 * i + 32] for i in range(out.shape[0])]


# ---------------------------------------------------------------------------------------------
# Test data


def random_bytes(n, seed=0):
    """`n` reproducible random bytes."""
    return np.random.default_rng(seed).bytes(n)


def bytes_tensor(data, device="cpu"):
    """A uint8 tensor holding a copy of `data` (its own, writable memory)."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone().to(device) if len(data) \
        else torch.empty(0, dtype=torch.uint8, device=device)


_TESTS = os.path.dirname(os.path.abspath(__file__))
VECTORS_DIR = os.path.join(_TESTS, "vectors")
MODEL_SHAPES = os.path.join(os.path.dirname(_TESTS), "sentry", "pipeline", "model_shapes",
                            "model_shapes.json")


def vector_file(name):
    """Path of a test vector file of tests/vectors (provenance: tests/vectors/README.md); a
    missing one fails the test that asks for it, naming the file."""
    path = os.path.join(VECTORS_DIR, name)
    if not os.path.isfile(path):
        pytest.fail(f"test vector file {path} is missing (see tests/vectors/README.md)")
    return path


def model_state_dict(model="resnet152", device="cpu", dtype=None, generator_seed=0):
    """A state dict with the tensor names, dtypes and shapes of `model` (the project's
    model_shapes.json, read off the real models), random values."""
    with open(MODEL_SHAPES) as f:
        shapes = json.load(f)[model]
    gen = torch.Generator(device=device).manual_seed(generator_seed)
    out = {}
    for name, dt, shape in shapes:
        dt = getattr(torch, dt)
        if dt.is_floating_point:
            t = torch.randn(shape, generator=gen, device=device, dtype=dt)
            if dtype is not None:
                t = t.to(dtype)
        else:
            t = torch.randint(0, 1000, shape, generator=gen, device=device, dtype=dt)
        out[name] = t
    return out


# ---------------------------------------------------------------------------------------------
# Plain-Python BLAKE3 (the specification's reference algorithm, hash mode), exposing the
# chunk and parent chaining values that sharded hashing exchanges. Slow (~1 ms a chunk): for
# small inputs only. Checked against b3sum in tests/test_subtrees.py.

BLAKE3_CHUNK = 1024
_B3_IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
          0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)
_B3_PERM = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
_CHUNK_START, _CHUNK_END, _PARENT, _ROOT = 1, 2, 4, 8
_M32 = 0xFFFFFFFF


def _b3_g(v, a, b, c, d, x, y):
    v[a] = (v[a] + v[b] + x) & _M32
    v[d] = ((v[d] ^ v[a]) >> 16 | (v[d] ^ v[a]) << 16) & _M32
    v[c] = (v[c] + v[d]) & _M32
    v[b] = ((v[b] ^ v[c]) >> 12 | (v[b] ^ v[c]) << 20) & _M32
    v[a] = (v[a] + v[b] + y) & _M32
    v[d] = ((v[d] ^ v[a]) >> 8 | (v[d] ^ v[a]) << 24) & _M32
    v[c] = (v[c] + v[d]) & _M32
    v[b] = ((v[b] ^ v[c]) >> 7 | (v[b] ^ v[c]) << 25) & _M32


def _b3_compress(cv, block, counter, block_len, flags):
    """First 8 output words of the compression of a 64-byte block (zero padded)."""
    m = list(np.frombuffer(bytes(block).ljust(64, b"\0"), dtype="<u4").tolist())
    v = list(cv) + list(_B3_IV[:4]) + [counter & _M32, counter >> 32, block_len, flags]
    for r in range(7):
        _b3_g(v, 0, 4, 8, 12, m[0], m[1]); _b3_g(v, 1, 5, 9, 13, m[2], m[3])    # noqa: E702
        _b3_g(v, 2, 6, 10, 14, m[4], m[5]); _b3_g(v, 3, 7, 11, 15, m[6], m[7])  # noqa: E702
        _b3_g(v, 0, 5, 10, 15, m[8], m[9]); _b3_g(v, 1, 6, 11, 12, m[10], m[11])  # noqa: E702
        _b3_g(v, 2, 7, 8, 13, m[12], m[13]); _b3_g(v, 3, 4, 9, 14, m[14], m[15])  # noqa: E702
        m = [m[i] for i in _B3_PERM]
    return [v[i] ^ v[i + 8] for i in range(8)]


def _words_bytes(words):
    return np.array(words, dtype="<u4").tobytes()


def blake3_chunk_cv(chunk, index, root=False):
    """32-byte chaining value of chunk `index` (<= 1024 bytes); root: it is the whole input."""
    chunk = bytes(chunk)
    blocks = [chunk[i:i + 64] for i in range(0, len(chunk), 64)] or [b""]
    cv = list(_B3_IV)
    for i, block in enumerate(blocks):
        flags = (_CHUNK_START if i == 0 else 0) | (_CHUNK_END if i == len(blocks) - 1 else 0)
        if root and i == len(blocks) - 1:
            flags |= _ROOT
        cv = _b3_compress(cv, block, index, len(block), flags)
    return _words_bytes(cv)


def blake3_parent_cv(left, right, root=False):
    cv = _b3_compress(_B3_IV, bytes(left) + bytes(right), 0, 64, _PARENT | (_ROOT if root else 0))
    return _words_bytes(cv)


def _b3_subtree(data, first, count, root):
    if count == 1:
        return blake3_chunk_cv(data[first * BLAKE3_CHUNK:(first + 1) * BLAKE3_CHUNK], first, root)
    k = _largest_power_of_two_below(count)
    return blake3_parent_cv(_b3_subtree(data, first, k, False),
                            _b3_subtree(data, first + k, count - k, False), root)


def blake3_py(data):
    """BLAKE3 digest (32 bytes) of `data`, written recursively from the specification."""
    data = bytes(data)
    n = max(1, -(-len(data) // BLAKE3_CHUNK))
    return _b3_subtree(data, 0, n, True)


# ---------------------------------------------------------------------------------------------
# Sharded hashing (docs/DISTRIBUTED.md), stated from the definitions, not the kernels' loops.

LEAF_BYTES = {"blake3": BLAKE3_CHUNK, "sha256-tree": SHA256_TREE_LEAF_BYTES}


def whole_leaves(start, nbytes, total, algorithm):
    """Indices of the leaves of the full input whose bytes all lie in [start, start + nbytes),
    none when the input is a single leaf (its root is the leaf: no piece to exchange)."""
    size = LEAF_BYTES[algorithm]
    n = max(1, -(-total // size))
    if n == 1:
        return []
    return [g for g in range(n)
            if start <= g * size and min((g + 1) * size, total) <= start + nbytes]


def subtree_pieces(start, nbytes, total, algorithm):
    """[(first_leaf, level)]: the maximal runs [j 2^k, (j+1) 2^k) of whole leaves with
    2^k < n (every such aligned run is a node of a left-complete tree, and a proper one),
    left to right. Brute force over all candidate runs."""
    leaves = set(whole_leaves(start, nbytes, total, algorithm))
    n = max(1, -(-total // LEAF_BYTES[algorithm]))
    runs = [(j << k, k) for k in range(64) if (1 << k) < n for j in range(n >> k)
            if all(g in leaves for g in range(j << k, (j + 1) << k))]
    maximal = [(f, k) for f, k in runs
               if not any(f2 <= f and f + (1 << k) <= f2 + (1 << k2) and k2 > k
                          for f2, k2 in runs)]
    return sorted(maximal)


def subtree_value(data, first, level, algorithm):
    """Value (32 bytes, un-finalised) of the complete subtree of 2^level leaves at `first` of
    the full input `data`."""
    data = bytes(data)
    if algorithm == "blake3":
        return _b3_subtree(data, first, 1 << level, False)
    return _mth(memoryview(data), first, 1 << level, SHA256_TREE_LEAF_BYTES)
