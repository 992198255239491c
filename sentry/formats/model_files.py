"""Model directories as OpenSSF Model Signing's `files` method sees them (docs/FORMAT.md §7).

The rules of the reference tool (`model_signing` 1.1.1: hashing.Config.hash,
_serialization/file.py and serialization.py), reproduced here:

- Every regular file under the model directory, at any depth, hidden ones included, is a
  resource named by its POSIX path relative to the directory. Directories (empty ones too) are
  not resources.
- Ignored paths are relative to the model directory and match by whole path components: ``a/b``
  ignores ``a/b`` and everything under it, not ``a/bc``. By default the git paths ``.git``,
  ``.gitattributes``, ``.github`` and ``.gitignore`` at the top of the model directory are
  ignored (not nested ones such as ``sub/.gitignore``). The signature file is ignored when it
  lies inside the model directory.
- Symbolic links anywhere under the directory (even inside ignored directories, as the
  reference checks every path before it applies the ignore list) are refused unless allowed.
  When allowed, a link to a file is hashed as that file's content under the link's own name, a
  link to a directory is not followed (its contents are not part of the model), and a broken
  link is an error. Sockets, FIFOs and devices are always an error.
- A model that is a single file is one resource named ``.``.
- The model name (the statement's subject) is the directory's last path component.
"""
import os
import pathlib

from ..errors import FormatError

#: Ignored at the top of the model directory unless ignore_git_paths=False.
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")

#: Algorithms hash_file knows.
FILE_ALGORITHMS = ("sha256", "blake3", "sha256-tree")


def model_name(model_dir):
    """The last component of the model path, as the reference tool names a model."""
    path = pathlib.Path(model_dir)
    name = path.name
    if not name or name == "..":
        name = os.path.basename(path.resolve())
    return name


def file_path(model_dir, rel):
    """The path on disk of resource ``rel`` (``.`` is the model itself, for a single file)."""
    return os.fspath(model_dir) if rel == "." else os.path.join(os.fspath(model_dir), rel)


def _native():
    from sentry_ops import _C

    return _C.bundle


def effective_ignore_paths(model_dir, *, ignore_paths=(), signature_path=None,
                           ignore_git_paths=True):
    """The ignored paths, relative to the model directory, sorted, without duplicates: what
    list_files skips and what the statement's ``serialization.ignore_paths`` should record (the
    reference records the signature file and the git paths there too).

    Relative entries of ``ignore_paths`` are relative to the model directory; absolute ones are
    made relative to it; entries outside it are dropped (they cannot match anything). The
    signature path is absolute or relative to the current directory, as on a command line.
    (The C++ listing's rules: csrc/bundle/model_files.cpp.)
    """
    from .bundle import native_errors

    with native_errors():
        return _native().effective_ignore_paths(
            os.fsencode(model_dir), [os.fsencode(p) for p in ignore_paths],
            None if signature_path is None else os.fsencode(signature_path), ignore_git_paths)


def list_files(model_dir, *, ignore_paths=(), signature_path=None, ignore_git_paths=True,
               allow_symlinks=False):
    """The model's files as POSIX paths relative to ``model_dir``, sorted (code-point order),
    by the reference tool's rules (module docs; the C++ listing, csrc/bundle/model_files.cpp).
    FormatError names a refused path (OptionError for a symbolic link)."""
    from .bundle import native_errors

    with native_errors():
        return _native().list_files(
            os.fsencode(model_dir), [os.fsencode(p) for p in ignore_paths],
            None if signature_path is None else os.fsencode(signature_path), ignore_git_paths,
            allow_symlinks)


def hash_file(path, algorithm="sha256"):
    """Hex digest of a file's bytes: ``sha256`` (the reference tool's default), ``blake3``
    (equal to b3sum and to the reference's blake3 resource digests) or ``sha256-tree``. Read
    with positional reads, never memory-mapped (sentry/file_reader.py): a file that changes
    while it is read is a FormatError naming it."""
    if algorithm not in FILE_ALGORITHMS:
        raise FormatError(f"unknown file hash algorithm {algorithm!r}; use one of "
                          f"{list(FILE_ALGORITHMS)}")
    from ..io import file_reader

    [got] = file_reader.digest_files([file_reader.Request(os.fspath(path), file_hash=algorithm)])
    return got.file


def _check_pt_records(path, f, size):
    """torch.load inflates a compressed zip record whole into memory before anything can be
    checked: 1 MB can claim gigabytes. torch.save stores every record uncompressed, so a
    compressed one is refused, as are records claiming more bytes than the file holds and a file
    that is not a zip archive (the pre-1.6 format sizes its storages from its own header)."""
    import zipfile

    try:
        with zipfile.ZipFile(f) as z:
            records = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as exc:
        raise FormatError(f"{path}: refused: not a zip archive as torch.save writes since "
                          f"PyTorch 1.6 ({exc})") from None
    for r in records:
        if r.compress_type != zipfile.ZIP_STORED:
            raise FormatError(f"{path}: refused: record {r.filename} is compressed; torch.save "
                              "stores records uncompressed, and torch.load would inflate it "
                              "whole into memory")
    if sum(r.file_size for r in records) > size:
        raise FormatError(f"{path}: refused: its records claim more bytes than the file's {size}")


def _unpickling_reason(exc):
    """Why torch.load(weights_only=True) failed, in one line: the weights-only unpickler's own
    reason, without torch's advice to retry with weights_only=False (which runs code from the
    file)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
        for advice in ("Check the documentation", "Please use `torch.serialization"):
            text = text.split(advice, 1)[0]
    text = " ".join(text.split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_state_dict(path, device="cpu"):
    """A .pt/.pth/.bin state dict loaded with weights_only=True (never runs code from the file):
    a dict of tensors (a pickled module gives its state_dict). FormatError otherwise. The file
    is opened without blocking (a FIFO is refused) and its records are checked before
    torch.load reads them (_check_pt_records)."""
    import torch

    from ..io.file_reader import open_input

    fd, size = open_input(path, "state dict")
    with os.fdopen(fd, "rb") as f:
        _check_pt_records(path, f, size)
        f.seek(0)
        try:
            obj = torch.load(f, map_location=device, weights_only=True)
        except (FormatError, OSError):
            raise
        except Exception as exc:  # pickle errors come in many types
            raise FormatError(f"{path}: refused: not loadable with weights_only=True, which "
                              f"never runs code from the file ({_unpickling_reason(exc)})"
                              ) from exc
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FormatError(f"{path}: expected a state dict (a dict of tensors)")
    return obj
