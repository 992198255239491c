"""The reference tool's `shards` serialization (model_signing 1.1.1,
_serialization/file_shard.py), read by sentry.bundle.

Each file of the model is cut into consecutive shards of ``shard_size`` bytes (the last one
shorter; an empty file has none, so it is not a resource), and each shard is one resource named
``PATH:START:END`` (bytes [START, END)) with algorithm ``sha256-sharded-SHARD_SIZE`` and the
SHA-256 of those bytes. The reference lists them in (path components, start, end) order.

Two quirks of the reference are accepted: it writes ``shard_size`` through a protobuf Struct, so
it comes out as a JSON float (``1000000.0``); and model_signing 1.1.1's own ``verify`` then
fails on its shard bundles (it passes that float to ``range``), so only Sentry verifies them.
"""
import re

from .errors import FormatError

#: Content hashes a shard may use (the reference also offers blake2, which Sentry lacks).
HASH_TYPES = ("sha256",)

_OFFSET = re.compile(r"0|[1-9][0-9]*")


def _fail(source, field, problem):
    raise FormatError(f"{source}: {field}: {problem}")


def parse_shard_size(value, source):
    """serialization.shard_size: a positive integer, written as an int or an integral float."""
    field = "predicate.serialization.shard_size"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or value <= 0 or value >= 1 << 63:
        _fail(source, field, f"must be a positive integer, got {value!r}")
    return value


def algorithm(hash_type, shard_size):
    """What the reference writes as each shard resource's algorithm."""
    return f"{hash_type}-sharded-{shard_size}"


def parse_name(name, source, field):
    """(path, start, end) of a resource named PATH:START:END (the path may hold ':')."""
    parts = name.rsplit(":", 2)
    if len(parts) != 3 or not all(_OFFSET.fullmatch(p) for p in parts[1:]):
        _fail(source, field, f"{name!r} is not PATH:START:END")
    return parts[0], int(parts[1]), int(parts[2])


def order_key(name):
    """The reference's order of shard resources: path components, then start, then end."""
    path, start, end = name.rsplit(":", 2)
    return path.split("/"), int(start), int(end)


def ranges(resources, shard_size, source):
    """{path: [(start, end, digest hex)]} of shard resources, checked to cut each file exactly
    as the reference does: from 0, in steps of shard_size, the last shard not empty."""
    by_path = {}
    for r in resources:
        path, start, end = parse_name(r.name, source, "predicate.resources")
        by_path.setdefault(path, []).append((start, end, r.digest))
    for path, shards in by_path.items():
        shards.sort()
        for i, (start, end, _) in enumerate(shards):
            last = i == len(shards) - 1
            if (start != i * shard_size or end <= start or end - start > shard_size
                    or (not last and end - start != shard_size)):
                _fail(source, "predicate.resources",
                      f"the shards of {path!r} do not cut it into consecutive {shard_size}-byte "
                      f"pieces (shard {start}:{end})")
    return by_path
