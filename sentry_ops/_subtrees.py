"""Where the pieces of a shard lie (csrc/core/subtree.h, in Python): the fake kernel needs their
number, and the distributed verifier their leaves. Plain integer arithmetic, no hashing.

A shard is bytes [start, start + nbytes) of a full input of `total` bytes. Its whole leaves
[first, end) split into maximal aligned runs of 2^k leaves ("pieces"), each strictly smaller
than the whole tree; a tree of one leaf has no piece (its root needs the leaf's bytes).
"""

LEAF_BYTES = {"blake3": 1024, "sha256-tree": 4096}


def leaf_bytes(algorithm):
    if algorithm not in LEAF_BYTES:
        raise ValueError(f"unknown algorithm '{algorithm}'; tensor digests are 'blake3' or "
                         "'sha256-tree'")
    return LEAF_BYTES[algorithm]


def leaf_count(total, algorithm):
    """Leaves of an input of `total` bytes (an empty input is one empty leaf)."""
    size = leaf_bytes(algorithm)
    return max(1, -(-total // size))


def shard_leaves(start, nbytes, total, algorithm):
    """(first, end, max_level): the whole leaves [first, end) inside the shard, and the largest
    piece allowed (2^max_level leaves)."""
    if start < 0 or nbytes < 0 or start + nbytes > total:
        raise ValueError(f"shard [{start}, {start + nbytes}) lies outside an input of {total} "
                         "bytes")
    size = leaf_bytes(algorithm)
    n = leaf_count(total, algorithm)
    if n == 1:
        return 0, 0, 0
    first = -(-start // size)
    stop = start + nbytes
    end = n if stop == total else stop // size
    return first, max(first, end), (n - 1).bit_length() - 1


def shard_pieces(start, nbytes, total, algorithm):
    """[(first_leaf, level)]: the pieces of the shard, left to right."""
    first, end, max_level = shard_leaves(start, nbytes, total, algorithm)
    out, pos = [], first
    while pos < end:
        k = max_level if pos == 0 else min(max_level, (pos & -pos).bit_length() - 1)
        while (1 << k) > end - pos:
            k -= 1
        out.append((pos, k))
        pos += 1 << k
    return out
