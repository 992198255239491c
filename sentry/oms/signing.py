"""Sign and verify models: tensors in memory (method `tensors`) and model directories (`files`).

Both write and read OpenSSF Model Signing v1.0 bundles (docs/FORMAT.md §6). A directory signed
with `sign_files` also lists every safetensors tensor (predicate.tensors), so the same signature
verifies the files on disk and, after loading, the tensors in GPU memory (`verify_model`).
Verification fails closed: any difference raises VerificationError naming what differed.

A signature is verified by one of three methods, chosen by the keywords given (the same on every
verifying function): ``public_key``; ``certificate_chain`` (the trusted root certificates);
or keyless Sigstore, ``identity`` and ``identity_provider`` with ``trusted_root`` or
``trust_config`` (sentry.keyless, offline).
"""
import dataclasses
import os
import time
import warnings

import torch

from sentry_ops import ALGORITHMS, digests_hex, hash_tensors

from sentry_ops import _C

from ..errors import FormatError, MethodError, Option, SentryWarning, VerificationError
from ..formats import bundle as bundle_format
from ..formats import model_files, safetensors_format
from ..io import file_reader
from ..signatures.keys import PrivateKey, certificate_public_key, load_certificates
from ..signatures.trust import native_trust, open_bundle, signer_keywords, trust_from

_native = _C.bundle


@dataclasses.dataclass
class Verified:
    """What a successful verification established."""

    model_name: str
    method: str
    hash_type: str
    names: list
    key_hint: str
    timings_ms: dict
    identity: str = None  # keyless: the certificate's identity and OIDC issuer that were checked
    identity_provider: str = None


def _state_dict(model_or_state_dict, check_entries=True):
    if isinstance(model_or_state_dict, torch.nn.Module):
        state = model_or_state_dict.state_dict()
    elif isinstance(model_or_state_dict, dict):
        state = model_or_state_dict
    else:
        raise FormatError(
            f"expected an nn.Module or a state dict, got {type(model_or_state_dict).__name__}")
    if check_entries:
        _check_entries(state)
    return state


def _check_entries(state):
    for name, value in state.items():
        if not isinstance(name, str):
            raise FormatError(f"state dict key {name!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise FormatError(f"state dict entry '{name}' is a {type(value).__name__}, not a tensor")


def _digests_by_device(names, state, algorithm):
    """{device: (names, uint8 [n, 32] digests on that device)}: one op call per device."""
    groups = {}
    for name in names:
        groups.setdefault(state[name].device, []).append(name)
    # No detach(): the op reads parameters that require grad as they are (uint8 output, no graph).
    return {device: (group, hash_tensors([state[n] for n in group], algorithm))
            for device, group in groups.items()}


def _load_private_key(private_key, password):
    return private_key if isinstance(private_key, PrivateKey) else PrivateKey.load(private_key, password)


def _sign_statement(statement, private_key, password, signature_path, certificate_chain=None):
    """Signs and writes the bundle: with a public-key hint, or with the signing certificate
    chain (leaf first) when one is given."""
    key = _load_private_key(private_key, password)
    chain = load_certificates(certificate_chain) if certificate_chain is not None else []
    if chain and certificate_public_key(chain[0]) != key.public_key():
        raise FormatError("the first certificate of the chain is not the private key's "
                          "certificate (its public key differs)")
    signature = key.sign(bundle_format.pae(bundle_format.PAYLOAD_TYPE, statement))
    signed = bundle_format.Bundle(payload=statement, payload_type=bundle_format.PAYLOAD_TYPE,
                                  signature=signature,
                                  public_key_hint=None if chain else key.public_key().hint(),
                                  certificate_chain=chain)
    bundle_format.write_bundle(signature_path, signed)
    return signed


def sign_model(model_or_state_dict, private_key, signature_path, *, algorithm="blake3",
               model_name="model", password=None, certificate_chain=None):
    """Signs the tensors of a module or state dict, hashed on their own devices.

    private_key: a PEM path or PrivateKey. certificate_chain: the key's certificate first, then
    intermediates (paths or PEM/DER); the bundle then carries the chain instead of a key hint.
    """
    if algorithm not in ALGORITHMS:
        raise FormatError(f"unknown tensor algorithm '{algorithm}'; use one of {ALGORITHMS}")
    bundle_format.check_signature_target(signature_path)  # before any hashing
    state = _state_dict(model_or_state_dict)
    names = sorted(state)
    hexes = {}
    for group, digests in _digests_by_device(names, state, algorithm).values():
        hexes.update(zip(group, digests_hex(digests)))
    entries = [{"name": n, "dtype": safetensors_format.safetensors_dtype_name(state[n].dtype),
                "shape": list(state[n].shape), "digest": hexes[n]} for n in names]
    return sign_tensor_entries(entries, private_key, signature_path, algorithm=algorithm,
                               model_name=model_name, password=password,
                               certificate_chain=certificate_chain)


def sign_tensor_entries(entries, private_key, signature_path, *, algorithm, model_name="model",
                        password=None, certificate_chain=None):
    """Signs a tensor listing ({name, dtype, shape, digest (hex)} per tensor) as sign_model
    does: method `tensors`, the entries in predicate.tensors. Used by sign_model and by
    sentry.weightsync.WeightManifest.sign."""
    resources = [bundle_format.Resource(e["name"], algorithm, e["digest"]) for e in entries]
    statement = bundle_format.make_statement(
        model_name, resources, method="tensors", hash_type=algorithm,
        tensors={"hash_type": algorithm, "entries": list(entries)})
    return _sign_statement(statement, private_key, password, signature_path, certificate_chain)


def _file_list(file):
    """verify_model's ``file``: None, or the paths (as the signature names them) as a list."""
    if file is None:
        return None
    return [os.fspath(file)] if isinstance(file, (str, os.PathLike)) else [
        os.fspath(f) for f in file]


def expected_table(signature_path, trust, file=None):
    """The signature's table of expected tensor digests, its signature checked with ``trust``
    (trust_from): (hash_type, [(name, 32-byte digest, safetensors dtype, shape)]) sorted by
    name, of every file or of ``file`` (a path or a list, as the signature names them). The C++
    reader builds it (sentry::expected_tensors): a name signed in two of the files concerned is
    a FormatError, a signature without tensors a VerificationError."""
    path = os.fspath(signature_path)
    native, data = native_trust(trust, path)
    with bundle_format.native_errors():
        return _native.expected_tensors(path, native, data, _file_list(file))


def verify_model(model_or_state_dict, signature_path, *, public_key=None, certificate_chain=None,
                 identity=None, identity_provider=None, trusted_root=None, trust_config=None,
                 file=None):
    """Checks a module or state dict against a signature, on the tensors' devices.

    With a signature of a directory (method files), the state dict must hold every signed
    tensor of the directory's safetensors files, or, given ``file`` (a path, or a list of
    paths, as the signature names them: relative to the model directory), exactly the tensors
    of those files. A name signed in two of the files concerned is refused (FormatError): the
    state dict's keys cannot say which file it came from.

    Only digests go to the device and only one mismatch flag per tensor comes back. Raises
    VerificationError listing changed, missing and unexpected tensors by name. Give public_key
    (PEM path or PublicKey), certificate_chain (the trusted root certificates, PEM path), or
    identity and identity_provider (keyless: the signer's identity and OIDC issuer) with
    trusted_root (a Sigstore trusted_root.json) or trust_config (a client trust config).

    The work is C++ (sentry::verify_model): CUDA tensors start hashing, one call per device,
    while background threads read the bundle, check its signature and parse its statement.
    """
    # The binding checks every key and value as it converts them (a TypeError); only then are
    # they looked at here, for the error that names the entry.
    state = _state_dict(model_or_state_dict, check_entries=False)
    trust = trust_from(public_key, certificate_chain, identity, identity_provider,
                       trusted_root, trust_config)
    path = os.fspath(signature_path)
    native, data = native_trust(trust, path)
    names, tensors = list(state), list(state.values())
    files = _file_list(file)
    with bundle_format.native_errors():
        try:
            if data is None:
                v = _native.verify_model(names, tensors, path, native, files)
            else:
                v = _native.verify_model_data(names, tensors, data, path, native, files)
        except TypeError:
            _check_entries(state)
            raise
    return Verified(v["model_name"], v["method"], v["hash_type"], v["names"], v["key_hint"],
                    v["timings_ms"], **signer_keywords(trust))


def _safetensors_headers(model_dir, rels):
    """{rel: SafetensorsHeader} of the files in rels; a malformed one maps to its FormatError."""
    headers = {}
    for rel in rels:
        try:
            headers[rel] = safetensors_format.read_header(model_files.file_path(model_dir, rel))
        except FormatError as exc:
            headers[rel] = exc
    return headers


def _signed_headers(model_dir, files):
    """{rel: SafetensorsHeader} of the safetensors files whose tensors a files bundle lists. A
    file named .safetensors that is not one is signed as a plain file, with a warning."""
    headers = {}
    for rel in files:
        path = model_files.file_path(model_dir, rel)  # rel is "." for a single-file model
        if path.endswith(".safetensors"):
            header = _header_or_warning(path)
            if header is not None and header.entries:
                headers[rel] = header
    return headers


def _read_files(model_dir, files, hash_type, headers, tensor_algorithm=None):
    """One read of each file (sentry/file_reader.py): {rel: hex file digest} and, given
    tensor_algorithm, {rel: [hex digest of each tensor of headers[rel], in header order]}. A
    file with a header must still start with it and have the size it was parsed against, so
    the digests and the header describe the same bytes."""
    requests = []
    for rel in files:
        request = file_reader.Request(model_files.file_path(model_dir, rel), file_hash=hash_type)
        header = headers.get(rel)
        if isinstance(header, safetensors_format.SafetensorsHeader):
            request.prefix, request.size = header.prefix, header.file_size
            if tensor_algorithm is not None:
                request.ranges = [(e.offset, e.length) for e in header.entries]
                request.range_hash = tensor_algorithm
        requests.append(request)
    got = file_reader.digest_files(requests)
    return ({rel: d.file for rel, d in zip(files, got)},
            {rel: d.ranges for rel, d in zip(files, got) if d.ranges})


def _tensor_entries(headers, tensor_digests):
    """predicate.tensors entries of every safetensors file: digests of their data regions. (A
    name is unique in its file; several files may hold the same names.)"""
    entries = []
    for rel, digests in tensor_digests.items():
        for e, digest in zip(headers[rel].entries, digests):
            entries.append({"name": e.name, "dtype": e.dtype, "shape": list(e.shape),
                            "digest": digest, "file": rel, "offset": e.offset,
                            "length": e.length})
    return sorted(entries, key=lambda e: (e["name"], e["file"]))


def _header_or_warning(path):
    """The safetensors header of ``path``, or None with a SentryWarning when it has none: the
    file is then signed by its bytes only, as model_signing signs every file."""
    try:
        return safetensors_format.read_header(path)
    except FormatError as exc:
        why = str(exc).removeprefix(f"{path}: ")
        warnings.warn(SentryWarning(f"{path}: not a safetensors file ({why}); signed as a plain "
                                    "file, its tensors not listed"), stacklevel=4)
        return None


def sign_files(model_dir, private_key, signature_path, *, hash_type="sha256", ignore_paths=(),
               ignore_git_paths=True, allow_symlinks=False, tensor_algorithm="blake3",
               password=None, certificate_chain=None):
    """Signs a model directory exactly as OpenSSF Model Signing's `files` method does, and lists
    the safetensors tensors it holds (predicate.tensors) for verify_model."""
    bundle_format.check_signature_target(signature_path)  # before any hashing
    files = model_files.list_files(model_dir, ignore_paths=ignore_paths,
                                   signature_path=signature_path,
                                   ignore_git_paths=ignore_git_paths,
                                   allow_symlinks=allow_symlinks)
    headers = _signed_headers(model_dir, files)
    # The file digests and the tensor digests come from one read of each file.
    digests, tensor_digests = _read_files(model_dir, files, hash_type, headers, tensor_algorithm)
    resources = [bundle_format.Resource(f, hash_type, digests[f]) for f in files]
    entries = _tensor_entries(headers, tensor_digests)
    tensors = {"hash_type": tensor_algorithm, "entries": entries} if entries else None
    recorded_ignores = model_files.effective_ignore_paths(
        model_dir, ignore_paths=ignore_paths, signature_path=signature_path,
        ignore_git_paths=ignore_git_paths)
    statement = bundle_format.make_statement(
        model_files.model_name(model_dir), resources, method="files", hash_type=hash_type,
        allow_symlinks=allow_symlinks, ignore_paths=recorded_ignores, tensors=tensors)
    return _sign_statement(statement, private_key, password, signature_path, certificate_chain)


def verify_files(model_dir, signature_path, *, public_key=None, certificate_chain=None,
                 identity=None, identity_provider=None, trusted_root=None, trust_config=None,
                 ignore_paths=(), ignore_git_paths=True, allow_symlinks=None):
    """Checks a model directory against a `files` signature; raises VerificationError listing
    changed, missing and unexpected files. The signature's method keywords are verify_model's."""
    trust = trust_from(public_key, certificate_chain, identity, identity_provider,
                       trusted_root, trust_config)
    statement, key, timings = open_bundle(signature_path, trust)
    if statement.method == "shards":
        return _verify_shards(model_dir, signature_path, statement, key, timings, trust,
                              ignore_paths=ignore_paths, ignore_git_paths=ignore_git_paths,
                              allow_symlinks=allow_symlinks)
    if statement.method != "files":
        raise MethodError(
            f"{signature_path}: this signature covers tensors (method {statement.method}), not "
            "files; verify the loaded model with ", Option("verify_model"))
    allow = statement.allow_symlinks if allow_symlinks is None else allow_symlinks
    files = model_files.list_files(
        model_dir, ignore_paths=list(ignore_paths) + list(statement.ignore_paths),
        signature_path=signature_path, ignore_git_paths=ignore_git_paths, allow_symlinks=allow)
    expected = {r.name: r.digest for r in statement.resources}
    missing = sorted(set(expected) - set(files))
    unexpected = sorted(set(files) - set(expected))
    common = sorted(set(expected) & set(files))
    t0 = time.perf_counter()
    # The headers the listing is checked against are read first and bound to the bytes hashed.
    listed = {e.get("file") for e in statement.tensors["entries"]} if statement.tensors else ()
    headers = _safetensors_headers(model_dir, [f for f in common if f in listed])
    actual, _ = _read_files(model_dir, common, statement.hash_type, headers)
    timings["hash files"] = (time.perf_counter() - t0) * 1e3
    changed = [f for f in common if actual[f] != expected[f]]
    if changed or missing or unexpected:
        raise VerificationError(f"{model_dir}: the files do not match {signature_path}",
                                changed=changed, missing=missing, unexpected=unexpected,
                                shown={".": os.fspath(model_dir)})
    if statement.tensors:
        _check_tensor_listing(statement, headers, signature_path)
    return Verified(statement.model_name, "files", statement.hash_type, common, key.hint(), timings,
                    **signer_keywords(trust))


def _verify_shards(model_dir, signature_path, statement, key, timings, trust, **listing):
    """verify_files for the reference's shards method: a SHA-256 per shard, the shards of
    every file hashed in parallel from one read (the verified loader, without loading)."""
    from . import loader

    signed = loader.signed_files(statement, signature_path)
    files = loader.check_file_list(model_dir, signature_path, statement, signed, **listing)
    t0 = time.perf_counter()
    table = loader.file_table(model_dir, signature_path, statement, files)
    loader.run_table(table, model_path=model_dir, signature_path=signature_path, device="cpu")
    timings["hash files"] = (time.perf_counter() - t0) * 1e3
    return Verified(statement.model_name, "shards", statement.hash_type, files, key.hint(),
                    timings, **signer_keywords(trust))


def _check_tensor_listing(statement, headers, source):
    """The signed tensor list must describe the (verified) safetensors headers exactly."""
    by_file = {}
    for e in statement.tensors["entries"]:
        by_file.setdefault(e.get("file"), []).append(e)
    for rel, signed in by_file.items():
        if rel is None or rel not in {r.name for r in statement.resources}:
            raise VerificationError(f"{source}: predicate.tensors names a file that is not signed: {rel}")
        header = headers.get(rel)
        if not isinstance(header, safetensors_format.SafetensorsHeader):
            raise VerificationError(f"{source}: predicate.tensors does not describe {rel} "
                                    f"({header or 'no safetensors header read'})")
        on_disk = sorted((e.name, e.dtype, list(e.shape), e.offset, e.length) for e in header.entries)
        listed = sorted((e["name"], e["dtype"], list(e["shape"]), e["offset"], e["length"]) for e in signed)
        if on_disk != listed:
            raise VerificationError(f"{source}: predicate.tensors does not describe {rel}")
