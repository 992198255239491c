"""Verified loading: the tensors of a signed model's safetensors files, read from disk once and
checked byte for byte on the way to their device, returned only when everything matched.

``load_verified`` is a shell over the C++ ``sentry::load_verified`` (csrc/ops/load_verified.cpp,
docs/LOADING.md): the signature is opened and checked exactly as ``verify_files`` does; the files
present must be the signed ones (nothing missing, nothing extra) before a byte of data is read.
Then the C++ loader (csrc/io/loader.h) reads every file once:

- with Sentry's tensor table (``predicate.tensors``, written by ``sign_files``), each tensor is
  hashed on its device as it lands, and each safetensors header must describe exactly the signed
  tensors (names, dtypes, shapes, offsets); the model's other files are hashed whole on the CPU;
- with a plain OpenSSF Model Signing ``files`` bundle (a SHA-256 per file, as the reference tool
  and NVIDIA NGC write) or the reference's ``shards`` serialization (a SHA-256 per shard), CPU
  threads hash every file or shard over the same bytes that are copied to the device.
"""
import os
import warnings

import torch

from ..formats import model_files
from ..errors import FormatError, MethodError, Option, SentryWarning, VerificationError

#: Defaults of the C++ loader: bytes per read, and pinned staging of a CUDA load.
BLOCK_SIZE = 8 << 20
PINNED_BYTES = 512 << 20

_FILE_HASHES = ("sha256", "blake3")


def signed_files(statement, source):
    """{file: [(start, end, digest hex)] or None (a whole-file digest)} of the statement."""
    if statement.method == "shards":
        return statement.shards  # checked by the C++ reader to cut each file exactly
    if statement.method == "files":
        if statement.hash_type not in _FILE_HASHES:
            raise VerificationError(f"{source}: unknown file hash '{statement.hash_type}'")
        return {r.name: None for r in statement.resources}
    raise MethodError(
        f"{source}: this signature covers tensors in memory (method {statement.method}), not "
        "files; load the model, then check it with ", Option("verify_model"))


def check_file_list(model_path, signature_path, statement, signed, *, ignore_paths=(),
                    ignore_git_paths=True, allow_symlinks=None):
    """The model's files, as the signature names them, after checking they are the signed ones
    (``signed``: signed_files' keys): VerificationError listing missing and unexpected files
    otherwise. (An empty file is not a resource of the shards method, as the reference cuts it
    into no shards.) The keywords are verify_files'. The check is the C++ loader's
    (sentry::check_model_files)."""
    from sentry_ops import _C

    from ..formats.bundle import native_errors

    allow = statement.allow_symlinks if allow_symlinks is None else allow_symlinks
    with native_errors():
        return _C.bundle.check_model_files(
            os.fsencode(model_path), os.fsencode(signature_path), [os.fsencode(f) for f in signed],
            statement.method == "shards",
            [os.fsencode(p) for p in list(ignore_paths) + list(statement.ignore_paths)],
            ignore_git_paths, allow)


def _ranges(statement, rel, shards, size):
    if shards is None:
        digest = next(r.digest for r in statement.resources if r.name == rel)
        return [(0, size, statement.hash_type, bytes.fromhex(digest))]
    return [(start, end, "sha256", bytes.fromhex(d)) for start, end, d in shards]


def file_table(model_path, signature_path, statement, files):
    """The C++ loader's table (sentry_ops._C.loader.load_files) that checks each signed file's
    bytes against its file or shard digests, loading nothing (verify_files)."""
    signed = signed_files(statement, signature_path)
    table = []
    for rel in files:
        path = model_files.file_path(model_path, rel)
        size = os.stat(path).st_size  # the loader refuses a file that then has another
        table.append((path, rel, b"", -1, _ranges(statement, rel, signed[rel], size), []))
    return table


def run_table(table, *, model_path, signature_path, device, tensor_hash="blake3", threads=None,
              block_size=None, pinned_bytes=None):
    """Runs the C++ loader over a table; {name: tensor} when every digest matched, else
    VerificationError naming the changed files (a shard as PATH:START:END) and tensors."""
    from sentry_ops import _C

    try:
        loaded, files, tensors = _C.loader.load_files(
            table, str(device), tensor_hash, threads or 0, block_size or BLOCK_SIZE,
            pinned_bytes or PINNED_BYTES)
    except _C.io.ReadError as exc:
        raise FormatError(str(exc)) from None
    if loaded is None:
        where = sorted(set(files) | {f for f, _ in tensors})
        raise VerificationError(f"{model_path}: {', '.join(where)} differ(s) from {signature_path}",
                                changed=sorted(files) + sorted(t for _, t in tensors))
    return dict(loaded)


def load_verified(path, signature, *, public_key=None, certificate_chain=None, identity=None,
                  identity_provider=None, trusted_root=None, trust_config=None, device="cuda",
                  dtype=None, file=None, ignore_paths=(), threads=None, block_size=None,
                  pinned_bytes=None):
    """The tensors of a signed model (a directory of safetensors files, or one file), read once
    from disk and returned as {name: tensor} on ``device`` only when every byte matched the
    signature ``signature``.

    The signature is checked as verify_files checks it: give public_key, certificate_chain, or
    identity and identity_provider with trusted_root or trust_config (keyless). Every file the
    signature lists must be present and nothing else (the signature file, its ignore_paths and
    ``ignore_paths``, as verify_files takes them, aside); the other files (config, tokenizer)
    are checked too, but not returned. ``file`` (a path or a list of paths, as the signature
    names them: relative to the model directory) reads, checks and loads only those files:
    two files that hold tensors of the same name (checkpoints side by side) need it.
    ``dtype`` converts floating-point tensors, after verification. threads, block_size (bytes
    per read, a power of two) and pinned_bytes (the pinned staging of a CUDA load) tune the
    reader. Raises VerificationError naming the files and tensors that differ, FormatError for
    bad input (including a file that changes while it is read); nothing is returned then, and
    the memory of the load is freed.
    """
    from sentry_ops import _C

    from ..formats.bundle import native_errors
    from ..signatures.trust import native_trust, trust_from

    device = str(torch.device(device))  # sentry::load_verified refuses one it cannot load to
    trust = trust_from(public_key, certificate_chain, identity, identity_provider,
                       trusted_root, trust_config)
    native, data = native_trust(trust, os.fspath(signature))
    files = None if file is None else [
        os.fsencode(f) for f in ([file] if isinstance(file, (str, os.PathLike)) else file)]
    with native_errors():
        state, notes = _C.bundle.load_verified(
            os.fsencode(path), os.fsencode(signature), native, data, device, dtype, files,
            [os.fsencode(p) for p in ignore_paths], threads or 0, block_size or BLOCK_SIZE,
            pinned_bytes or PINNED_BYTES)
    for note in notes:
        warnings.warn(SentryWarning(note), stacklevel=2)
    return dict(state)
