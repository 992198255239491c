"""Model directories (sentry.model_files): the same files, names and digests as the reference
OpenSSF Model Signing tool's `files` serialization; b3sum and hashlib as digest references."""
import hashlib
import os
import socket

import pytest

import reference as ref
from sentry import model_files as M
from sentry.errors import FormatError


def _tree(root, files):
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def _model(tmp_path):
    model = tmp_path / "my model"
    _tree(model, {
        "config.json": b"{}",
        "weights/model-00001.safetensors": os.urandom(5000),
        "weights/deep/er/x.bin": b"x" * 70000,
        "empty.bin": b"",
        ".hidden": b"h",
        ".git/HEAD": b"ref: refs/heads/main",
        ".git/objects/ab/cdef": b"blob",
        ".gitignore": b"*.tmp",
        ".gitattributes": b"*.bin filter=lfs",
        ".github/workflows/ci.yml": b"on: push",
        "sub/.gitignore": b"kept: only top-level git paths are ignored",
        "sub/.git/config": b"kept too",
        "docs/readme.md": b"ignored dir",
        "docsx/readme.md": b"not ignored: whole components match",
        "notes.txt": b"ignored file",
        "a-b": b"1", "a.b": b"2", "a/b": b"3",
        "sp ace/\u00fcn\u00efc\u00f6de \u2603.txt": b"unicode",
        "model.sig": b"the signature",
    })
    (model / "empty_dir" / "nested_empty").mkdir(parents=True)
    return model


def _reference(model, *, hash_type="sha256", ignore=(), git=True, symlinks=False):
    hashing = pytest.importorskip("model_signing.hashing")
    config = (hashing.Config().use_file_serialization(hashing_algorithm=hash_type)
              .set_ignored_paths(paths=list(ignore), ignore_git_paths=git)
              .set_allow_symlinks(symlinks))
    manifest = config.hash(model)
    return ({rd.identifier: rd.digest.digest_hex for rd in manifest.resource_descriptors()},
            manifest)


def _ours(model, hash_type="sha256", **kwargs):
    files = M.list_files(model, **kwargs)
    return {f: M.hash_file(M.file_path(model, f), hash_type) for f in files}


@pytest.mark.parametrize("hash_type", ["sha256", "blake3"])
def test_same_files_and_digests_as_the_reference(tmp_path, hash_type):
    model = _model(tmp_path)
    theirs, manifest = _reference(model, hash_type=hash_type,
                                  ignore=["docs", "notes.txt", "model.sig"])
    ours = _ours(model, hash_type, ignore_paths=["docs", "notes.txt"],
                 signature_path=model / "model.sig")
    assert ours == theirs
    assert "sub/.gitignore" in ours and "sub/.git/config" in ours and ".hidden" in ours
    assert "docsx/readme.md" in ours and "docs/readme.md" not in ours
    assert not any(f.startswith((".git/", ".github/")) or f in (".gitignore", ".gitattributes")
                   for f in ours)
    assert list(ours) == sorted(ours)
    assert M.model_name(model) == manifest.model_name == "my model"


def test_git_paths_kept_when_asked(tmp_path):
    model = _model(tmp_path)
    theirs, _ = _reference(model, ignore=["model.sig"], git=False)
    ours = _ours(model, ignore_git_paths=False, signature_path=model / "model.sig")
    assert ours == theirs and ".git/HEAD" in ours and ".github/workflows/ci.yml" in ours


def test_effective_ignore_paths(tmp_path, monkeypatch):
    model = _model(tmp_path)
    outside = tmp_path / "elsewhere.sig"
    assert M.effective_ignore_paths(model, signature_path=outside) == list(sorted(M.GIT_PATHS))
    got = M.effective_ignore_paths(
        model, ignore_paths=["docs/", "./notes.txt", str(model / "weights" / "deep"),
                             str(tmp_path / "x"), "../escape"],
        signature_path=model / "model.sig", ignore_git_paths=False)
    assert got == ["docs", "model.sig", "notes.txt", "weights/deep"]
    monkeypatch.chdir(model)  # a relative signature path is relative to the working directory
    assert M.effective_ignore_paths(".", signature_path="model.sig",
                                    ignore_git_paths=False) == ["model.sig"]
    with pytest.raises(FormatError, match="the model directory itself"):
        M.effective_ignore_paths(model, ignore_paths=["."])


def test_symlinks_refused_naming_them(tmp_path):
    model = _model(tmp_path)
    os.symlink("../config.json", model / "weights" / "link.json")
    with pytest.raises(FormatError, match=r"weights/link\.json is a symbolic link"):
        M.list_files(model)
    with pytest.raises(ValueError, match="symlink"):
        _reference(model)


def test_symlinks_refused_even_in_ignored_directories_like_the_reference(tmp_path):
    model = _model(tmp_path)
    os.symlink("HEAD", model / ".git" / "link")
    with pytest.raises(FormatError, match=r"\.git/link is a symbolic link"):
        M.list_files(model)
    with pytest.raises(ValueError, match="symlink"):
        _reference(model)


def test_symlinks_allowed(tmp_path):
    model = _model(tmp_path)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "w.bin").write_bytes(b"outside weights")
    os.symlink(tmp_path / "outside" / "w.bin", model / "linked.bin")
    os.symlink(tmp_path / "outside", model / "linked_dir")  # not followed, as the reference
    os.symlink("../config.json", model / "weights" / "rel.json")
    theirs, _ = _reference(model, ignore=["model.sig"], symlinks=True)
    ours = _ours(model, allow_symlinks=True, signature_path=model / "model.sig")
    assert ours == theirs
    assert ours["linked.bin"] == hashlib.sha256(b"outside weights").hexdigest()
    assert not any(f.startswith("linked_dir") for f in ours)
    os.symlink("missing", model / "broken")
    with pytest.raises(FormatError, match="broken symbolic link"):
        M.list_files(model, allow_symlinks=True)
    with pytest.raises(ValueError):
        _reference(model, symlinks=True)


def test_model_dir_itself_a_symlink(tmp_path):
    model = _model(tmp_path)
    link = tmp_path / "link"
    os.symlink(model, link)
    with pytest.raises(FormatError, match="is a symbolic link"):
        M.list_files(link)
    assert M.list_files(link, allow_symlinks=True) == M.list_files(model)


def test_special_files_refused(tmp_path):
    model = _model(tmp_path)
    os.mkfifo(model / "fifo")
    with pytest.raises(FormatError, match=r"fifo is not a regular file"):
        M.list_files(model)
    os.unlink(model / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(model / "sock"))
        with pytest.raises(FormatError, match=r"sock is not a regular file"):
            M.list_files(model)
    finally:
        sock.close()


def test_single_file_model(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"w" * 10)
    theirs, manifest = _reference(path)
    assert M.list_files(path) == ["."] == list(theirs)
    assert M.hash_file(M.file_path(path, "."), "sha256") == theirs["."]
    assert M.model_name(path) == manifest.model_name == "weights.bin"


def test_model_names(tmp_path, monkeypatch):
    model = _model(tmp_path)
    (model / "weights" / "deep").mkdir(exist_ok=True)
    monkeypatch.chdir(model / "weights")
    for spelling in (str(model), str(model) + "/", str(model) + "/.", ".", "deep/..", "..",
                     "deep"):
        _, manifest = _reference(spelling, ignore=["model.sig"])
        assert M.model_name(spelling) == manifest.model_name, spelling
    assert M.model_name(".") == "weights" and M.model_name("..") == "my model"


def test_not_a_model(tmp_path):
    with pytest.raises(FileNotFoundError):
        M.list_files(tmp_path / "missing")


def test_empty_directory(tmp_path):
    (tmp_path / "m" / "a" / "b").mkdir(parents=True)
    assert M.list_files(tmp_path / "m") == []


SIZES = [0, 1, 1023, 1024, 1025, 4096, 65536, 1 << 20, (1 << 20) + 17, 3 * (1 << 20) + 5]


@pytest.mark.parametrize("size", SIZES)
def test_hash_file_digests(tmp_path, size, b3):
    data = ref.random_bytes(size, seed=size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert M.hash_file(path, "sha256") == hashlib.sha256(data).hexdigest()
    assert M.hash_file(str(path)) == hashlib.sha256(data).hexdigest()
    assert M.hash_file(path, "blake3") == b3(data).hex()
    assert M.hash_file(path, "sha256-tree") == ref.sha256_tree(data).hex()


def test_hash_file_does_not_modify_the_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    before = os.stat(path)
    M.hash_file(path, "blake3")
    after = os.stat(path)
    assert path.read_bytes() == b"abc" * 1000 and before.st_mtime_ns == after.st_mtime_ns


def test_hash_file_unknown_algorithm(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(FormatError, match="unknown file hash algorithm 'md5'"):
        M.hash_file(tmp_path / "f", "md5")
