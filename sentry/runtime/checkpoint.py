"""Signed checkpoints: a safetensors file and a signature bundle next to it.

save() hashes every tensor on its own device before any byte is copied to the host, so what is
signed is what was in GPU memory: a byte changed on the way (the copy, host memory, the disk)
makes the checkpoint fail to verify instead of being signed as it is. The host copy is also
hashed again before signing (check_copy=True), so such a change fails save() itself.

The bundle is exactly what sign_files writes for the one file (method `files`, SHA-256 of the
file, plus the predicate.tensors listing with the device-computed digests), so any OpenSSF Model
Signing verifier checks the file on disk, and load() checks the tensors after they reach
`device`. Both files are written atomically (sentry/fileio.py); a crash between the two leaves
a checkpoint that fails to verify, never one that verifies wrongly.
"""
import hashlib
import json
import os

import torch

from sentry_ops import ALGORITHMS, digests_hex, hash_tensors

from ..formats import bundle as bundle_format
from ..io import file_reader
from ..formats import model_files
from ..formats import safetensors_format
from ..oms import signing
from ..errors import FormatError, VerificationError
from ..io.fileio import atomic_file


def signature_path_for(path):
    return os.fspath(path) + ".sig"


def _header(state, order, metadata):
    """The safetensors header (bytes, padded with spaces to a multiple of 8, as the safetensors
    package does) and each tensor's offset in the data region."""
    header, offsets, at = {}, {}, 0
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise FormatError("safetensors metadata must map strings to strings")
        header["__metadata__"] = dict(metadata)
    for name in order:
        t = state[name]
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": safetensors_format.safetensors_dtype_name(t.dtype),
                        "shape": list(t.shape), "data_offsets": [at, at + nbytes]}
        offsets[name] = at
        at += nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return raw, offsets


def save(state_dict, path, private_key, *, signature_path=None, algorithm="blake3",
         metadata=None, password=None, certificate_chain=None, check_copy=True):
    """Writes `state_dict` (or a module's) to `path` as safetensors and signs it into
    `signature_path` (default: path + ".sig"). Returns the signature path."""
    if algorithm not in ALGORITHMS:
        raise FormatError(f"unknown tensor algorithm '{algorithm}'; use one of {ALGORITHMS}")
    path = os.fspath(path)
    sig = os.fspath(signature_path) if signature_path is not None else signature_path_for(path)
    if os.path.abspath(sig) == os.path.abspath(path):
        raise FormatError(f"{path}: the signature path is the checkpoint itself")
    bundle_format.check_signature_target(sig)  # before anything is written
    state = signing._state_dict(state_dict)
    names = sorted(state)
    # 1. Digests where the tensors are, before anything is copied off the device.
    digests = {}
    for group, rows in signing._digests_by_device(names, state, algorithm).values():
        digests.update(zip(group, digests_hex(rows)))
    # 2. The file: larger elements first, so every tensor's offset is a multiple of its
    # element size (the header is padded to 8); ties by name.
    order = sorted(names, key=lambda n: (-state[n].element_size(), n))
    header, offsets = _header(state, order, metadata)
    data_start = 8 + len(header)
    file_sha = hashlib.sha256()
    copied = []
    with atomic_file(path) as f:
        for chunk in (len(header).to_bytes(8, "little"), header):
            f.write(chunk)
            file_sha.update(chunk)
        for name in order:
            t = state[name].detach().resolve_conj().resolve_neg()
            host = t.to("cpu").contiguous().reshape(-1).view(torch.uint8)
            view = memoryview(host.numpy())
            f.write(view)
            file_sha.update(view)
            if check_copy:
                copied.append((name, host))
            if len(copied) >= 64:  # hash host copies in batches, freeing them as we go
                _check_copies(copied, digests, algorithm, path)
                copied = []
        _check_copies(copied, digests, algorithm, path)
    # 3. The statement sign_files would write for this one file, with the device digests.
    entries = [{"name": n, "dtype": safetensors_format.safetensors_dtype_name(state[n].dtype),
                "shape": list(state[n].shape), "digest": digests[n], "file": ".",
                "offset": data_start + offsets[n],
                "length": state[n].numel() * state[n].element_size()} for n in names]
    ignore = model_files.effective_ignore_paths(path, signature_path=sig)
    statement = bundle_format.make_statement(
        model_files.model_name(path), [bundle_format.Resource(".", "sha256", file_sha.hexdigest())],
        method="files", hash_type="sha256", allow_symlinks=False, ignore_paths=ignore,
        tensors={"hash_type": algorithm, "entries": entries})
    signing._sign_statement(statement, private_key, password, sig, certificate_chain)
    return sig


def _check_copies(copied, digests, algorithm, path):
    if not copied:
        return
    rows = digests_hex(hash_tensors([h for _, h in copied], algorithm))
    bad = [n for (n, _), d in zip(copied, rows) if d != digests[n]]
    if bad:
        raise VerificationError(f"{path}: bytes changed between the device and the host copy; "
                                "nothing was signed", changed=bad)


def load(path, public_key=None, device="cpu", *, certificate_chain=None, signature_path=None):
    """Loads a safetensors checkpoint onto `device` and verifies the loaded tensors there
    against the signature (default: path + ".sig") before returning them. Fails closed:
    VerificationError naming the checkpoint and the tensors that differ, are missing or are
    unexpected; FormatError for a malformed file."""
    path = os.fspath(path)
    sig = os.fspath(signature_path) if signature_path is not None else signature_path_for(path)
    header = safetensors_format.read_header(path)
    # Read, not memory-mapped: a file that changes meanwhile is a FormatError, not a SIGBUS.
    data = file_reader.read_file(path, prefix=header.prefix, size=header.file_size)
    state = {}
    for e in header.entries:
        dtype = safetensors_format.torch_dtype_of(e.dtype)
        raw = data[e.offset:e.offset + e.length]
        itemsize = torch.empty((), dtype=dtype).element_size()
        if e.offset % itemsize:  # an unaligned tensor cannot be viewed in place
            raw = raw.clone()
        t = raw.view(dtype).reshape(e.shape)
        # Always a copy: each tensor owns its memory, and what is verified is what is returned.
        state[e.name] = t.to(device, copy=True)
    try:
        signing.verify_model(state, sig, public_key=public_key, certificate_chain=certificate_chain)
    except VerificationError as exc:
        error = VerificationError(f"checkpoint {path}: {exc}")
        error.changed, error.missing, error.unexpected = exc.changed, exc.missing, exc.unexpected
        raise error from exc
    return {name: state[name] for name in sorted(state)}
