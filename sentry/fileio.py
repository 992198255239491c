"""Writing files so that readers see the old file or the new one, never a part of one."""
import contextlib
import os
import tempfile


def _umask():
    # Read without os.umask(), which would change the process's umask, even if briefly.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def atomic_write(path, data, mode=None):
    """Writes `data` to `path` through a temporary file in the same directory (created 0600, so
    private data is never readable by others), fsync, then os.replace. The file gets `mode`, by
    default what a plain open() would give (0666 less the umask). An error leaves any old file at
    `path` untouched and no temporary file behind."""
    with atomic_file(path, mode) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_file(path, mode=None):
    """atomic_write for data written piece by piece: yields the temporary file (binary), which
    replaces `path` when the block ends without an error."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask() if mode is None else mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
