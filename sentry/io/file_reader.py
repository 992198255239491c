"""Reading untrusted files. Every model file Sentry hashes or loads is read here: positional reads
into bounded buffers by the C++ reader (sentry_ops._C.io, csrc/io), never through a memory map.

A memory-mapped file that shrinks while it is read kills the process with SIGBUS; here a file
that shrinks, grows or is rewritten while it is read (its size or its header differs from what
was read before) is a FormatError naming it. One read of each file gives every digest asked of
it: the whole file's (sha256, blake3 or sha256-tree, as a bundle's `files` method needs) and the
tree digests of byte ranges (a safetensors file's tensors), so they always describe the same
bytes. Files are read and hashed in parallel by the reader's threads, without the GIL.
"""
import dataclasses
import os
import typing

from . import fileio
from ..errors import FormatError

#: Bytes per read. Buffers in flight: two per thread.
BLOCK_SIZE = 4 << 20

_FILES_OPEN_AT_ONCE = 64


def threads():
    """The reader's threads: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def open_input(path, what="model file"):
    """(descriptor, size) of ``path`` opened by fileio.open_input (no blocking, regular files
    only, checked on the descriptor). The size is what the file has when it is opened; the
    reader refuses a file that has another one by the time it is read. The caller closes the
    descriptor."""
    fd = fileio.open_input(path, what)
    return fd, os.fstat(fd).st_size


@dataclasses.dataclass
class Request:
    """What to compute over one file's bytes."""

    path: str
    file_hash: typing.Optional[str] = None  # "sha256", "blake3", "sha256-tree" or None
    ranges: typing.Sequence = ()  # [(offset, length)], ascending, not overlapping
    range_hash: str = "blake3"  # "blake3" or "sha256-tree", for every range
    prefix: bytes = b""  # the file must still start with these bytes (a header read before)
    size: typing.Optional[int] = None  # and still have this size (default: its size when opened)


@dataclasses.dataclass
class Digests:
    file: typing.Optional[str]  # hex digest of the whole file, None when not asked for
    ranges: list  # hex digest of each range


def _reader():
    from sentry_ops import _C

    return _C.io


def digest_files(requests):
    """The digests each Request asks for, one read of each file, in the order given."""
    io = _reader()
    requests = list(requests)
    out = []
    for start in range(0, len(requests), _FILES_OPEN_AT_ONCE):
        batch = requests[start:start + _FILES_OPEN_AT_ONCE]
        opened = []
        try:
            items = []
            for r in batch:
                fd, size = open_input(r.path)
                opened.append(fd)
                items.append((fd, os.fspath(r.path), r.file_hash or "", bytes(r.prefix),
                              size if r.size is None else r.size,
                              [(int(o), int(n)) for o, n in r.ranges], r.range_hash))
            got = io.digest_files(items, threads(), BLOCK_SIZE)
        except io.ReadError as exc:
            raise FormatError(str(exc)) from None
        finally:
            for fd in opened:
                os.close(fd)
        out += [Digests(None if f is None else f.hex(), [d.hex() for d in ranges])
                for f, ranges in got]
    return out


def read_file(path, *, prefix=b"", size=None):
    """A file's bytes as a new uint8 CPU tensor (read in parallel blocks straight into it); the
    file must still start with ``prefix`` and have ``size`` bytes (default: its size when
    opened)."""
    import torch

    io = _reader()
    fd, size_at_open = open_input(path)
    try:
        nbytes = size_at_open if size is None else size
        out = torch.empty(nbytes, dtype=torch.uint8)
        io.read_into(fd, os.fspath(path), out.numpy(), bytes(prefix), threads(), BLOCK_SIZE)
    except io.ReadError as exc:
        raise FormatError(str(exc)) from None
    finally:
        os.close(fd)
    return out
