"""Opening untrusted input files safely, and writing files so that readers see the old file or
the new one, never a part of one.

Inputs: every file Sentry reads (bundles, keys, certificates, manifests, headers, samples,
model files) is opened by ``open_input``: without blocking (a FIFO planted where a file should
be would otherwise hang the open or the read forever) and refused unless the *opened
descriptor* is a regular file, so a path swapped for a FIFO or a device after it was listed is
caught too.

Outputs: ``atomic_file`` writes into an anonymous file (O_TMPFILE) in the target's directory,
so a writer killed before it is done leaves nothing behind; the finished file gets a name only
for the instant between ``link`` and ``rename``, with SIGINT, SIGTERM and SIGHUP blocked, so
only SIGKILL in that instant can leave a stray. Where the filesystem has no O_TMPFILE, a
named temporary file is used (removed on any error, but left behind if the process is killed
while writing). See docs/FORMAT.md §6 ("Writing a signature").
"""
import contextlib
import os
import signal
import stat
import tempfile

from ..errors import FormatError


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


def _kind(st_mode):
    """What a non-regular file is, in words."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(st_mode):
            return name
    return "not a regular file"


def open_input(path, what="file", flags=0):
    """Opens ``path`` for reading and returns the descriptor (the caller closes it). Never
    blocks: the open is O_NONBLOCK, and anything but a regular file (checked with fstat on the
    opened descriptor) is refused with a FormatError naming the file, ``what`` it is for, and
    what it is instead. A missing or unreadable file raises the OSError (FileNotFoundError,
    PermissionError, ...). ``flags`` adds open flags (e.g. O_DIRECT)."""
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FormatError(f"{path}: is {_kind(st.st_mode)}, not a regular file ({what})")
        os.set_blocking(fd, True)  # a regular file ignores it; later reads are plain reads
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_input_file(path, what="file"):
    """open_input as a binary file object (use it in a ``with``)."""
    return os.fdopen(open_input(path, what), "rb")


def read_input(path, what="file", limit=None):
    """The whole content of a small input file (open_input's checks). A file larger than
    ``limit`` bytes is refused unread, naming the file and the limit."""
    path = os.fspath(path)
    with open_input_file(path, what) as f:
        if limit is not None:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise FormatError(f"{path}: {size} bytes is larger than the {limit}-byte limit "
                                  f"for a {what}")
            data = f.read(limit + 1)
            if len(data) > limit:
                raise FormatError(f"{path}: grew past the {limit}-byte limit for a {what} while "
                                  "it was read")
            return data
        return f.read()


def atomic_write(path, data, mode=None):
    """Writes `data` to `path` through a temporary file in the same directory (created 0600, so
    private data is never readable by others), fsync, then os.replace. The file gets `mode`, by
    default what a plain open() would give (0666 less the umask). An error leaves any old file at
    `path` untouched and no temporary file behind."""
    with atomic_file(path, mode) as f:
        f.write(data)


_NAMING_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@contextlib.contextmanager
def _signals_blocked():
    """Holds back SIGINT, SIGTERM and SIGHUP (delivered when the block ends): the two system
    calls that give the finished file its name are not split by a catchable signal."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _NAMING_SIGNALS)
    except (AttributeError, OSError, ValueError):  # not on this platform: nothing to hold back
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _anonymous_file(directory):
    """A descriptor of an unnamed file in ``directory`` (O_TMPFILE), or None where the
    filesystem or platform has none."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(directory, flag | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except OSError:  # e.g. EOPNOTSUPP or EISDIR: this filesystem has no O_TMPFILE
        return None


def _link_anonymous(fd, path):
    """Gives the O_TMPFILE file ``fd`` the name ``path``: linkat with AT_SYMLINK_FOLLOW on
    /proc/self/fd (os.link takes the linkat path only when a dir_fd is given)."""
    dir_fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"/proc/self/fd/{fd}", os.path.basename(path), dst_dir_fd=dir_fd,
                follow_symlinks=True)
    finally:
        os.close(dir_fd)


def _temp_name(path):
    return os.path.join(os.path.dirname(os.path.abspath(path)),
                        f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")


def _about_target(exc, path):
    """The OSError of a step on the temporary file, told about the file being written: the
    temporary's name means nothing to the user, and nothing of it is left behind."""
    return OSError(exc.errno, exc.strerror or str(exc), path)


@contextlib.contextmanager
def atomic_file(path, mode=None):
    """atomic_write for data written piece by piece: yields the file being written (binary),
    which replaces ``path`` when the block ends without an error. The data goes to an unnamed
    file (O_TMPFILE) that gets its name only for the instant between link and rename (module
    docs), so an interrupted writer leaves no file behind."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd = _anonymous_file(directory)
    named = fd is None
    tmp = None
    if named:
        try:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                                       suffix=".tmp")
        except OSError as exc:
            raise _about_target(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask() if mode is None else mode)
            os.fsync(f.fileno())
            with _signals_blocked():
                try:
                    if not named:
                        tmp = _temp_name(path)
                        _link_anonymous(f.fileno(), tmp)
                    os.replace(tmp, path)
                except OSError as exc:
                    raise _about_target(exc, path) from None
                tmp = None
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
