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
