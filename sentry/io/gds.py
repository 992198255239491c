"""Reading files straight into GPU memory.

Two ways, one call (``read_into``):

- ``"gds"``: NVIDIA GPUDirect Storage through cuFile. ``libcufile`` is loaded at run time with
  ctypes when present (nothing links against it); with the nvidia-fs driver the storage DMAs
  into GPU memory, without it cuFile runs in its compatibility mode (POSIX reads through its
  own bounce buffers), which ``cufile_status()`` reports.
- ``"pinned"``: the fallback everywhere else: two pinned host buffers, one being filled by
  parallel ``pread`` calls while the other is copied to the device on a side stream.

cuFile reads are not ordered on a CUDA stream, so ``read_into`` waits for the current stream
once before a GDS read (the destination may be memory the caching allocator just recycled).
Reading is meant for whole files or large ranges (a packed dataset loaded once), not per
sample.
"""
import concurrent.futures
import ctypes
import ctypes.util
import glob
import os
import threading
import typing

import torch

from ..errors import FormatError

METHODS = ("auto", "gds", "pinned")
_CHUNK = 64 << 20  # bytes per cuFile call / per pinned buffer
_O_DIRECT = getattr(os, "O_DIRECT", 0)


class _CUfileError(ctypes.Structure):
    _fields_ = [("err", ctypes.c_int), ("cu_err", ctypes.c_int)]


class _Handle(ctypes.Union):
    _fields_ = [("fd", ctypes.c_int), ("handle", ctypes.c_void_p)]


class _CUfileDescr(ctypes.Structure):  # CUfileDescr_t of cufile.h
    _fields_ = [("type", ctypes.c_int), ("handle", _Handle), ("fs_ops", ctypes.c_void_p)]


_CU_FILE_HANDLE_TYPE_OPAQUE_FD = 1


def _library_candidates():
    names = ["libcufile.so.0", "libcufile.so", "libcufile.so.1"]
    found = ctypes.util.find_library("cufile")
    if found:
        names.append(found)
    dirs = [os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "lib64"),
            "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"]
    try:  # the pip wheel nvidia-cufile-cu1x
        import nvidia  # noqa: F401
        for root in nvidia.__path__:
            dirs.append(os.path.join(root, "cufile", "lib"))
    except ImportError:
        pass
    for d in dirs:
        names += sorted(glob.glob(os.path.join(d, "libcufile.so*")))
    return names


def _default_config():
    """Without nvidia-fs, cuFile serves reads only in its compatibility mode, which a system
    cufile.json may leave off. Unless the user points CUFILE_ENV_PATH_JSON at a configuration,
    use one that allows it (read by cuFileDriverOpen)."""
    if "CUFILE_ENV_PATH_JSON" in os.environ:
        return
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cufile.json")
    if os.path.exists(path):
        os.environ["CUFILE_ENV_PATH_JSON"] = path


class _CuFile:
    """libcufile, loaded and its driver opened once per process (or the reason it is not)."""

    _lock = threading.Lock()
    _instance = None

    def __init__(self):
        self.lib, self.error, self.path = None, None, None
        _default_config()
        for name in _library_candidates():
            try:
                self.lib = ctypes.CDLL(name)
                self.path = name
                break
            except OSError:
                continue
        if self.lib is None:
            self.error = "libcufile was not found"
            return
        lib = self.lib
        lib.cuFileDriverOpen.restype = _CUfileError
        lib.cuFileHandleRegister.restype = _CUfileError
        lib.cuFileHandleRegister.argtypes = [ctypes.POINTER(ctypes.c_void_p),
                                             ctypes.POINTER(_CUfileDescr)]
        lib.cuFileHandleDeregister.restype = None
        lib.cuFileHandleDeregister.argtypes = [ctypes.c_void_p]
        lib.cuFileRead.restype = ctypes.c_ssize_t
        lib.cuFileRead.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                   ctypes.c_int64, ctypes.c_int64]
        if torch.cuda.is_available():
            torch.cuda.init()  # cuFile attaches to the CUDA context torch created
        status = lib.cuFileDriverOpen()
        if status.err != 0:
            self.error = f"cuFileDriverOpen failed (cuFile error {status.err}, CUDA {status.cu_err})"
            self.lib = None

    @classmethod
    def get(cls):
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance


def cufile_status():
    """``(available, description)``: whether GDS reads can be used here, and how (the library
    path and whether the nvidia-fs driver is loaded, i.e. true DMA rather than cuFile's
    compatibility mode), or why not."""
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    cf = _CuFile.get()
    if cf.lib is None:
        return False, cf.error
    direct = os.path.exists("/proc/driver/nvidia-fs/stats") or os.path.exists("/dev/nvidia-fs0")
    mode = "nvidia-fs loaded: direct DMA" if direct else "no nvidia-fs: cuFile compatibility mode"
    return True, f"{cf.path} ({mode})"


def _check_destination(out, nbytes):
    if not isinstance(out, torch.Tensor) or out.device.type != "cuda":
        raise ValueError("read_into needs a CUDA tensor to read into")
    if not out.is_contiguous():
        raise ValueError("read_into needs a contiguous destination tensor")
    have = out.numel() * out.element_size()
    if have < nbytes:
        raise ValueError(f"destination holds {have} bytes, {nbytes} are to be read")


def _open(path, direct):
    from .fileio import open_input

    try:
        return open_input(path, "read into GPU memory", _O_DIRECT if direct else 0)
    except FormatError:
        raise
    except OSError:
        if not direct:
            raise
        return open_input(path, "read into GPU memory")  # e.g. tmpfs refuses O_DIRECT


class GdsUnavailable(OSError):
    """cuFile refused this file (its file system, open flags or configuration)."""


def _register(lib, path):
    """(fd, handle) of ``path`` registered with cuFile: O_DIRECT first (what true GDS needs),
    then a plain descriptor (cuFile's compatibility mode takes those)."""
    errors = []
    for direct in (True, False):
        fd = _open(path, direct)
        descr = _CUfileDescr()
        descr.type = _CU_FILE_HANDLE_TYPE_OPAQUE_FD
        descr.handle.fd = fd
        handle = ctypes.c_void_p()
        status = lib.cuFileHandleRegister(ctypes.byref(handle), ctypes.byref(descr))
        if status.err == 0:
            return fd, handle
        os.close(fd)
        errors.append(f"{'O_DIRECT' if direct else 'plain'} descriptor: cuFile error "
                      f"{status.err}")
    raise GdsUnavailable(f"{path}: cuFileHandleRegister refused the file ({'; '.join(errors)}; "
                         "CUfileOpError in cufile.h, details in cufile.log)")


def _read_gds(path, out, offset, nbytes):
    lib = _CuFile.get().lib
    torch.cuda.current_stream(out.device).synchronize()  # see the module docstring
    fd, handle = _register(lib, path)
    try:
        base = out.data_ptr()
        done = 0
        while done < nbytes:
            want = min(_CHUNK, nbytes - done)
            got = lib.cuFileRead(handle, ctypes.c_void_p(base), want, offset + done, done)
            if got < 0:
                raise GdsUnavailable(f"{path}: cuFileRead at byte {offset + done} failed ({got})")
            if got == 0:
                raise FormatError(f"{path}: ends after {offset + done} bytes, "
                                  f"{offset + nbytes} expected")
            done += got
    finally:
        lib.cuFileHandleDeregister(handle)
        os.close(fd)


def _fill(fd, view, offset, path, readers):
    """Reads len(view) bytes at ``offset`` into ``view`` with ``readers`` threads (pread releases
    the GIL: one thread tops out at a memcpy's speed from the page cache)."""
    n = len(view)
    step = -(-n // readers)

    def part(start):
        got = start
        end = min(n, start + step)
        while got < end:
            k = os.preadv(fd, [view[got:end]], offset + got)
            if k <= 0:
                raise FormatError(f"{path}: ends after {offset + got} bytes, "
                                  f"{offset + n} expected")
            got += k

    list(_pool(readers).map(part, range(0, n, step)))


_POOLS = {}


def _pool(workers):
    if workers not in _POOLS:
        _POOLS[workers] = concurrent.futures.ThreadPoolExecutor(workers, "sentry-read")
    return _POOLS[workers]


def _read_pinned(path, out, offset, nbytes, chunk=_CHUNK, readers=4):
    dev = out.device
    flat = out.view(-1).view(torch.uint8) if out.numel() else out
    chunk = max(1, min(chunk, nbytes))
    buffers = [torch.empty(chunk, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
    copied = [None, None]  # events: buffer k's last copy to the device is done
    side = torch.cuda.Stream(dev)
    side.wait_stream(torch.cuda.current_stream(dev))  # out may have just been allocated
    fd = _open(path, False)
    try:
        done, k = 0, 0
        while done < nbytes:
            want = min(chunk, nbytes - done)
            if copied[k] is not None:
                copied[k].synchronize()  # the other buffer keeps the copy engine busy meanwhile
            _fill(fd, memoryview(buffers[k].numpy())[:want], offset + done, path, readers)
            with torch.cuda.stream(side):
                flat[done:done + want].copy_(buffers[k][:want], non_blocking=True)
                copied[k] = torch.cuda.Event()
                copied[k].record(side)
            done += want
            k ^= 1
    finally:
        os.close(fd)
    torch.cuda.current_stream(dev).wait_stream(side)
    out.record_stream(side)


class ReadResult(typing.NamedTuple):
    method: str  # "gds" or "pinned": how the bytes were read
    note: str    # for "auto" falling back to pinned: why GDS was not used


def read_into(path, out, *, offset=0, nbytes=None, method="auto"):
    """Reads ``nbytes`` (default: all of ``out``) from ``path`` at byte ``offset`` into the
    contiguous CUDA tensor ``out``; returns a ReadResult. ``method``: "gds" (fails if cuFile
    cannot read this file), "pinned", or "auto" (GDS, falling back to pinned when cuFile is
    missing or refuses the file; ``note`` says why). The data is ordered before later work on
    the current stream."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    nbytes = out.numel() * out.element_size() if nbytes is None else nbytes
    _check_destination(out, nbytes)
    size = os.path.getsize(path)
    if offset < 0 or offset + nbytes > size:
        raise FormatError(f"{path}: {size} bytes, cannot read {nbytes} at byte {offset}")
    note = ""
    if method in ("gds", "auto"):
        ok, why = cufile_status()
        if ok:
            try:
                if nbytes:
                    _read_gds(path, out, offset, nbytes)
                return ReadResult("gds", "")
            except GdsUnavailable as exc:
                if method == "gds":
                    raise
                note = str(exc)
        elif method == "gds":
            raise RuntimeError(f"GPUDirect Storage is not usable here: {why}")
        else:
            note = why
    if nbytes:
        _read_pinned(path, out, offset, nbytes)
    return ReadResult("pinned", note)
