"""Sentry signs and verifies what the reference tool (model_signing 1.1.1) does (issue 12,
"Parity with the reference tool"): a single file of any type is a model, `--ignore-paths` is
relative to the current directory (the reference's own verify commands run unchanged), and a
file that is not what its name says is signed as a plain file, with a warning.

The reference runs in-process (its click CLI with standalone_mode=False, or its API); Sentry's
CLI through the `cli` fixture (conftest.py).
"""
import json
import os
import pathlib
import shlex
import shutil

import pytest

from conftest import assert_one_line_error
from sentry import bundle as B
from sentry.crypto import PrivateKey, write_private_key, write_public_key

model_signing = pytest.importorskip("model_signing")
from model_signing import verifying  # noqa: E402
from model_signing._cli import main as reference_cli  # noqa: E402

VECTORS = pathlib.Path(__file__).resolve().parent / "vectors"
OMS = VECTORS / "oms"
RELEASES = VECTORS / "model_signing"


@pytest.fixture
def keys(tmp_path):
    key = PrivateKey.generate()
    write_private_key(tmp_path / "key.pem", key)
    write_public_key(tmp_path / "key.pub", key.public_key())
    return tmp_path / "key.pem", tmp_path / "key.pub"


def _reference(cwd, monkeypatch, *args):
    """model_signing's CLI, run in `cwd`; raises SystemExit on failure."""
    monkeypatch.chdir(cwd)
    reference_cli([str(a) for a in args], standalone_mode=False)


def _statement(signature):
    return B.parse_statement(B.read_bundle(signature).payload)


# ---------------------------------------------------------------------------------------------
# The reference's own verify commands (tests/vectors/oms/test-verify-*.sh) run with sentry verify


def _reference_commands(script):
    """(directory, arguments) of each `python -m model_signing verify METHOD ...` in a
    test-verify script, with the directory it runs in (pushd/popd followed)."""
    text = (OMS / script).read_text().replace("\\\n", " ")
    cwd, stack, out = OMS, [], []
    for line in text.splitlines():
        words = shlex.split(line.split(";")[0])
        if words[:1] == ["pushd"]:
            stack.append(cwd)
            cwd = cwd / words[1]
        elif words[:1] == ["popd"]:
            cwd = stack.pop()
        elif "model_signing" in words:
            args = words[words.index("model_signing") + 1:]
            assert args[0] == "verify", line
            out.append((cwd, args[2:]))  # drop "verify METHOD": sentry picks it by the options
    return out


SCRIPTS = sorted(p.name for p in OMS.glob("test-verify-*.sh"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_reference_scripts_verify_commands_run_unchanged(cli, script):
    commands = _reference_commands(script)
    assert commands
    for cwd, args in commands:
        # Only where the files differ: this copy keeps the keys in keys/ (README.md), and
        # keyless trust material comes from a file (Sentry fetches nothing).
        args = [a.replace("./keys/certificate/", "./keys/") for a in args]
        if "--identity" in args:
            args += ["--trust-config", OMS / "custom_trust_config.json"]
        assert "--ignore-paths" in args
        proc = cli(cwd, "verify", *args)
        assert proc.returncode == 0, (cwd, args, proc.stderr)
        assert "(2 files, sha256" in proc.stdout and proc.stderr == ""


def test_ignore_paths_are_relative_to_the_current_directory(cli, tmp_path, keys):
    model = tmp_path / "model"
    shutil.copytree(OMS / "v1.1.0-elliptic-key", model)
    (model / "model.sig").unlink()
    sign = ["sign", "model", "--private-key", keys[0], "--signature", "m.sig"]
    assert cli(tmp_path, *sign, "--ignore-paths", "model/ignore-me").returncode == 0
    assert [r.name for r in _statement(tmp_path / "m.sig").resources] == ["signme-1", "signme-2"]
    verify = ["verify", "model", "--signature", tmp_path / "m.sig", "--public-key", keys[1]]
    assert cli(tmp_path, *verify).returncode == 0  # the statement records what was ignored
    # from inside the model, the same file is plain "ignore-me"
    assert cli(model, *verify[:1], ".", *verify[2:], "--ignore-paths", "ignore-me").returncode == 0


def test_ignore_paths_accumulate_over_repeated_options(cli, tmp_path, keys):
    model = tmp_path / "model"
    shutil.copytree(OMS / "v1.1.0-elliptic-key", model)
    (model / "model.sig").unlink()
    proc = cli(model, "sign", ".", "--private-key", keys[0], "--signature", "../m.sig",
               "--ignore-paths", "ignore-me", "--ignore-paths", "signme-2")
    assert proc.returncode == 0, proc.stderr
    assert [r.name for r in _statement(tmp_path / "m.sig").resources] == ["signme-1"]


def test_an_ignore_path_outside_the_model_is_a_warning(cli, tmp_path, keys):
    model = tmp_path / "model"
    shutil.copytree(OMS / "v1.1.0-elliptic-key", model)
    (model / "model.sig").unlink()
    proc = cli(tmp_path, "sign", "model", "--private-key", keys[0], "--signature", "m.sig",
               "--ignore-paths", "ignore-me")  # meant model/ignore-me: it ignores nothing
    assert proc.returncode == 0
    assert proc.stderr.count("\n") == 1 and "warning: --ignore-paths ignore-me: not inside the " \
        "model" in proc.stderr
    assert "ignore-me" in [r.name for r in _statement(tmp_path / "m.sig").resources]


def test_ignore_paths_are_recorded_as_the_reference_records_them(cli, tmp_path, keys,
                                                                monkeypatch):
    model = tmp_path / "m"
    for rel in ("a", "sub/b", "sub/c", "ignore-me", "deep/x/y"):
        (model / rel).parent.mkdir(parents=True, exist_ok=True)
        (model / rel).write_text(rel)
    options = ["--ignore-paths", "m/sub/b", "--ignore-paths", "./m/ignore-me",
               "--ignore-paths", str(model / "deep"), "--ignore-paths", "elsewhere/x",
               "--signature", "m/model.sig"]
    _reference(tmp_path, monkeypatch, "sign", "key", "--private_key", keys[0], *options, "m")
    theirs = _statement(model / "model.sig")
    (model / "model.sig").unlink()
    proc = cli(tmp_path, "sign", "m", "--private-key", keys[0], *options)
    assert proc.returncode == 0, proc.stderr
    ours = _statement(model / "model.sig")
    assert sorted(ours.ignore_paths) == sorted(theirs.ignore_paths) == [
        ".git", ".gitattributes", ".github", ".gitignore", "deep", "ignore-me", "model.sig",
        "sub/b"]
    assert {(r.name, r.digest) for r in ours.resources} == {
        (r.name, r.digest) for r in theirs.resources} == {
        (r.name, r.digest) for r in ours.resources if r.name in ("a", "sub/c")}


# ---------------------------------------------------------------------------------------------
# A single file of any type is a model


@pytest.mark.parametrize("name", ["v1.1.1-key-single-file", "v0.2.0-key-single-file"])
def test_the_references_single_file_signatures_verify(cli, tmp_path, name):
    folder = RELEASES / name
    verify = ["verify", folder / "signme-1", "--signature", folder / "model.sig",
              "--public-key", RELEASES / "keys" / "key-p256.pub"]
    proc = cli(tmp_path, *verify)
    assert proc.returncode == 0, proc.stderr
    assert "(1 file, sha256" in proc.stdout
    shutil.copy(folder / "signme-1", tmp_path / "signme-1")
    (tmp_path / "signme-1").write_bytes(b"changed\n")
    verify[1] = "signme-1"
    assert_one_line_error(cli(tmp_path, *verify), 1, "changed: signme-1")


@pytest.mark.parametrize("name", ["weights.gguf", "model.onnx", "README", "model.pt"])
def test_any_single_file_is_signed_as_the_reference_signs_it(cli, tmp_path, keys, name):
    (tmp_path / name).write_bytes(os.urandom(5000))  # model.pt: bytes, not a state dict
    proc = cli(tmp_path, "sign", name, "--private-key", keys[0], "--signature", "f.sig")
    assert proc.returncode == 0, proc.stderr
    if name == "model.pt":  # said, in one line, naming the file
        assert proc.stderr.count("\n") == 1
        assert f"warning: {name}: holds no state dict" in proc.stderr
        assert "signed as a file" in proc.stderr
    else:
        assert proc.stderr == ""
    st = _statement(tmp_path / "f.sig")
    assert (st.method, [r.name for r in st.resources], st.tensors) == ("files", ["."], None)
    verifying.Config().use_elliptic_key_verifier(public_key=keys[1]).verify(
        tmp_path / name, tmp_path / "f.sig")
    verify = ["verify", name, "--signature", "f.sig", "--public-key", keys[1]]
    assert cli(tmp_path, *verify).returncode == 0
    with open(tmp_path / name, "r+b") as f:
        f.write(b"X")
    assert_one_line_error(cli(tmp_path, *verify), 1, f"changed: {name}")
    with pytest.raises(ValueError):
        verifying.Config().use_elliptic_key_verifier(public_key=keys[1]).verify(
            tmp_path / name, tmp_path / "f.sig")


# ---------------------------------------------------------------------------------------------
# Safetensors files: the same tensor names in two files; a .safetensors that is not one


def _checkpoints(root):
    """ckpt-1/ and ckpt-2/model.safetensors: the same names, dtypes and shapes, other values."""
    import torch
    from safetensors.torch import save_file

    states = {}
    for i in (1, 2):
        state = {"w": torch.full((2, 3), float(i)), "b": torch.arange(4, dtype=torch.int64) * i}
        (root / f"ckpt-{i}").mkdir(parents=True)
        save_file(state, root / f"ckpt-{i}" / "model.safetensors")
        states[f"ckpt-{i}/model.safetensors"] = state
    return states


def test_two_files_with_the_same_tensor_names_are_signed(cli, tmp_path, keys):
    from sentry import sign_files, verify_files

    model = tmp_path / "model"
    _checkpoints(model)
    proc = cli(tmp_path, "sign", "model", "--private-key", keys[0], "--signature", "m.sig")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    st = _statement(tmp_path / "m.sig")
    assert [(e["name"], e["file"]) for e in st.tensors["entries"]] == [
        ("b", "ckpt-1/model.safetensors"), ("b", "ckpt-2/model.safetensors"),
        ("w", "ckpt-1/model.safetensors"), ("w", "ckpt-2/model.safetensors")]
    verifying.Config().use_elliptic_key_verifier(public_key=keys[1]).verify(
        model, tmp_path / "m.sig")  # the reference reads the bundle as any other
    assert cli(tmp_path, "verify", "model", "--signature", "m.sig", "--public-key",
               keys[1]).returncode == 0
    sign_files(str(model), str(keys[0]), str(tmp_path / "api.sig"))  # the API too
    verify_files(str(model), str(tmp_path / "api.sig"), public_key=str(keys[1]))


def test_verify_model_of_a_listing_with_repeated_names_must_be_told_the_file(tmp_path, keys):
    import torch

    from sentry import FormatError, VerificationError, sign_files, verify_model

    model = tmp_path / "model"
    states = _checkpoints(model)
    sig = str(tmp_path / "m.sig")
    sign_files(str(model), str(keys[0]), sig)
    one, two = states
    # Which file's "w" would a bare state dict be? Refused, naming the names and the files.
    with pytest.raises(FormatError, match=r"'b' \(ckpt-1/model.safetensors and ckpt-2/model"
                                          r".safetensors\), 'w' .*file="):
        verify_model(states[one], sig, public_key=str(keys[1]))
    for name, state in states.items():
        assert verify_model(state, sig, public_key=str(keys[1]), file=name).names == ["b", "w"]
    both = [one, two]
    with pytest.raises(FormatError, match="several files"):
        verify_model(states[one], sig, public_key=str(keys[1]), file=both)
    # The other file's values, or a changed tensor, are caught.
    with pytest.raises(VerificationError) as info:
        verify_model(states[two], sig, public_key=str(keys[1]), file=one)
    assert info.value.changed == ["b", "w"]
    tampered = dict(states[one], w=states[one]["w"].clone().fill_(7))
    with pytest.raises(VerificationError) as info:
        verify_model(tampered, sig, public_key=str(keys[1]), file=one)
    assert info.value.changed == ["w"]
    with pytest.raises(VerificationError, match="lists no tensors of ckpt-3/model.safetensors"):
        verify_model(states[one], sig, public_key=str(keys[1]), file="ckpt-3/model.safetensors")
    # A file's tensors, given the file, when the others are elsewhere: only that file's count.
    with pytest.raises(VerificationError) as info:
        verify_model({"w": states[one]["w"]}, sig, public_key=str(keys[1]), file=one)
    assert info.value.missing == ["b"]
    del torch


def test_the_guard_refuses_an_ambiguous_listing_too(tmp_path, keys):
    from sentry import FormatError, sign_files
    from sentry.expected import resolve

    model = tmp_path / "model"
    _checkpoints(model)
    sign_files(str(model), str(keys[0]), str(tmp_path / "m.sig"))
    with pytest.raises(FormatError, match="several files"):
        resolve(str(tmp_path / "m.sig"), public_key=str(keys[1]))


@pytest.mark.parametrize("method, where", [("files", "in one file"), ("tensors", "")])
def test_a_name_repeated_in_one_file_or_a_tensors_listing_is_refused(method, where):
    from sentry import FormatError

    entry = {"name": "w", "dtype": "F32", "shape": [1], "digest": "ab" * 32}
    if method == "files":
        entry.update(file="m.safetensors", offset=16, length=4)
        resources = [B.Resource("m.safetensors", "sha256", "cd" * 32)]
    else:
        resources = [B.Resource("w", "blake3", "ab" * 32)]
    message = f"duplicate tensor name\\(s\\){' ' + where if where else ''} \\['w'\\]"
    def statement(entries):
        return B.make_statement("m", resources, method=method,
                                hash_type="sha256" if method == "files" else "blake3",
                                tensors={"hash_type": "blake3", "entries": entries})

    with pytest.raises(FormatError, match=message):  # make_statement parses what it writes
        statement([entry, dict(entry)])
    doc = json.loads(statement([entry]))  # and a signed statement that repeats an entry
    doc["predicate"]["tensors"]["entries"] *= 2
    with pytest.raises(FormatError, match=message):
        B.parse_statement(json.dumps(doc).encode())


def test_a_safetensors_name_on_another_file_is_signed_as_a_plain_file(cli, tmp_path, keys):
    from sentry import SentryWarning, sign_files, verify_files

    model = tmp_path / "model"
    _checkpoints(model)
    (model / "notes.safetensors").write_bytes(b"not a safetensors file at all\n")
    proc = cli(tmp_path, "sign", "model", "--private-key", keys[0], "--signature", "m.sig")
    assert proc.returncode == 0
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(
        "sentry sign: warning: model/notes.safetensors: not a safetensors file (header length ")
    assert "signed as a plain file" in proc.stderr
    st = _statement(tmp_path / "m.sig")
    assert "notes.safetensors" in [r.name for r in st.resources]
    assert {e["file"] for e in st.tensors["entries"]} == {"ckpt-1/model.safetensors",
                                                         "ckpt-2/model.safetensors"}
    verifying.Config().use_elliptic_key_verifier(public_key=keys[1]).verify(
        model, tmp_path / "m.sig")
    verify = ["verify", "model", "--signature", "m.sig", "--public-key", keys[1]]
    assert cli(tmp_path, *verify).returncode == 0
    (model / "notes.safetensors").write_bytes(b"not a safetensors file at all!\n")
    assert_one_line_error(cli(tmp_path, *verify), 1, "changed: notes.safetensors")
    # the API warns with a SentryWarning; a single file is the same
    with pytest.warns(SentryWarning, match="notes.safetensors: not a safetensors file"):
        sign_files(str(model / "notes.safetensors"), str(keys[0]), str(tmp_path / "one.sig"))
    verify_files(str(model / "notes.safetensors"), str(tmp_path / "one.sig"),
                 public_key=str(keys[1]))
