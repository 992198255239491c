"""The CLI explains itself (issue 12, "Messages and help"): every command and argument has help
and shows its default, `verify --help` states the exit codes, `demo --model` lists its
choices; errors are one line in the CLI's own spelling, without "[Errno N]" or a temporary
file's name; `hash` of `-` reads standard input (as b3sum does) and `hash` of a directory or a
device says what to do instead.

The CLI runs in-process (sentry.cli.main, the `cli` fixture of conftest.py).
"""
import argparse
import io
import json
import os
import pathlib
import re
import sys

import pytest
import torch

from conftest import assert_one_line_error
from sentry import sign_files, verify_files
from sentry.cli import main, parser
from sentry.crypto import PrivateKey, write_private_key, write_public_key
from sentry.errors import FormatError, VerificationError

import reference

REPO = pathlib.Path(__file__).resolve().parent.parent


def _subparsers(p):
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))


def _commands(p=None, prefix=()):
    """(name path, parser) of every command and agent sub-command."""
    p = p or parser()
    for name, sub in _subparsers(p).choices.items():
        if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
            yield from _commands(sub, prefix + (name,))
        else:
            yield prefix + (name,), sub


def _help_of(path, capsys):
    with pytest.raises(SystemExit) as info:
        main([*path, "--help"])
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


COMMANDS = list(_commands())


@pytest.mark.parametrize("path, sub", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_argument_has_help_and_shows_its_default(path, sub, capsys):
    shown = _help_of(path, capsys)
    assert sub.description, path
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        assert action.help and len(action.help) > 8, (path, name)
        default = action.default
        if default is None or default is False or default == []:
            continue
        # A default that reads badly as a value (a list, "cuda if present") is worded in the help.
        assert f"(default: {default})" in shown or "(default: " in action.help, (path, name)


def test_the_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name, sub in _subparsers(parser()).choices.items():
        assert re.search(rf"^\s+{name}\s+\S", out, re.M), name


def test_verify_help_states_the_exit_codes(capsys):
    shown = _help_of(("verify",), capsys)
    assert "exit codes:" in shown
    # the codes main() returns: 0 verified, 1 a failed check (VerificationError), 2 bad input
    for code, meaning in (("0", "verified"), ("1", "verification failed"), ("2", "bad input")):
        assert f" {code} {meaning}" in shown, code


def test_demo_model_lists_the_known_shapes(capsys):
    shapes = REPO / "sentry" / "pipeline" / "model_shapes" / "model_shapes.json"
    known = sorted(json.loads(shapes.read_text()))
    shown = _help_of(("demo",), capsys)
    assert "{" + ",".join(known) + "}" in shown.replace(" ", "") or all(
        m in shown for m in known)
    with pytest.raises(SystemExit) as info:
        main(["demo", "--hash-only", "--model", "resnet9000"])
    assert info.value.code == 2
    assert "invalid choice: 'resnet9000'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Errors: one line, the CLI's spelling, no "[Errno N]", no temporary file names


@pytest.fixture
def work(tmp_path):
    """A model directory with a file `a`, a key pair, and a plain file `plain`."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a").write_bytes(b"weights\n")
    key = PrivateKey.generate()
    write_private_key(tmp_path / "key.pem", key)
    write_public_key(tmp_path / "key.pub", key.public_key())
    (tmp_path / "plain").write_bytes(b"not a directory\n")
    return tmp_path


SIGN = ["sign", "model", "--private-key", "key.pem", "--signature"]


@pytest.mark.parametrize("args, named", [
    (SIGN + ["nowhere/x.sig"], "nowhere/x.sig"),                     # no such directory
    (SIGN + ["plain/x.sig"], "plain/x.sig"),                         # ENOTDIR
    (["keygen", "--private-key", "nowhere/k.pem", "--public-key", "k.pub"], "nowhere/k.pem"),
    (["keygen", "--private-key", "plain/k.pem", "--public-key", "k.pub"], "plain/k.pem"),
    (["sign", "model", "--private-key", "plain/key.pem", "--signature", "s.sig"], "plain/key.pem"),
    (["verify", "model", "--signature", "plain/s.sig", "--public-key", "key.pub"], "plain/s.sig"),
    (["verify", "model", "--signature", "nowhere.sig", "--public-key", "key.pub"], "nowhere.sig"),
    (["hash", "plain/x"], "plain/x"),
    (["hash", "--tensors", "plain/x.pt"], "plain/x.pt"),
    (["agent", "infer", "--data", "plain/d", "--model", "plain/m", "--keys", "plain/k"], "plain/"),
    (["agent", "dataset", "--out", "plain/out", "--keys", "plain/k", "--samples", "8"], "plain/"),
])
def test_os_errors_are_one_line_naming_the_file_not_a_temporary(cli, work, args, named):
    err = assert_one_line_error(cli(work, *args), 2, named)
    assert not re.search(r"\.[\w.-]+\.[0-9a-z_]{6,}\.tmp|\[Errno", err), err
    assert not [p for p in os.listdir(work) if p.endswith(".tmp")]


def test_data_store_errors_have_no_errno(work):
    from sentry.data import open_store

    with pytest.raises(FormatError) as info:
        open_store(str(work / "plain" / "index.json"))
    assert "[Errno" not in str(info.value) and "not a directory" in str(info.value)


def _link_where_a_file_was_signed(work):
    model = work / "model"
    (model / "b").write_bytes(b"weights\n")
    sign_files(str(model), str(work / "key.pem"), str(work / "model.sig"))
    (model / "b").unlink()
    (model / "b").symlink_to("a")  # the same bytes, now through a link


def test_symlink_errors_use_the_cli_spelling(cli, work):
    _link_where_a_file_was_signed(work)
    for args in (SIGN + ["new.sig"],
                 ["verify", "model", "--signature", "model.sig", "--public-key", "key.pub"]):
        err = assert_one_line_error(cli(work, *args), 2, "model/b is a symbolic link",
                                    "--allow-symlinks")
        assert "allow_symlinks" not in err
    # the Python API keeps its own spelling
    with pytest.raises(FormatError, match=re.escape("unless allow_symlinks=True")):
        verify_files(str(work / "model"), str(work / "model.sig"),
                     public_key=str(work / "key.pub"))


def test_verify_allow_symlinks_accepts_a_link_to_the_signed_bytes(cli, work):
    _link_where_a_file_was_signed(work)
    ok = cli(work, "verify", "model", "--signature", "model.sig", "--public-key", "key.pub",
             "--allow-symlinks")
    assert ok.returncode == 0, ok.stderr
    (work / "model" / "a").write_bytes(b"changed\n")  # the link's target is what is checked
    bad = cli(work, "verify", "model", "--signature", "model.sig", "--public-key", "key.pub",
              "--allow-symlinks")
    assert_one_line_error(bad, 1, "changed: a, b")


def test_a_single_file_models_tamper_names_the_file(cli, work):
    assert cli(work, "sign", "plain", "--private-key", "key.pem", "--signature",
               "plain.sig").returncode == 0
    (work / "plain").write_bytes(b"tampered\n")
    err = assert_one_line_error(cli(work, "verify", "plain", "--signature", "plain.sig",
                                    "--public-key", "key.pub"), 1, "changed: plain")
    assert "changed: ." not in err
    with pytest.raises(VerificationError) as info:  # the API lists the signed resource name
        verify_files(str(work / "plain"), str(work / "plain.sig"),
                     public_key=str(work / "key.pub"))
    assert info.value.changed == ["."] and "changed: " + str(work / "plain") in str(info.value)


# ---------------------------------------------------------------------------------------------
# sentry hash: -, a directory, a device


def _stdin(monkeypatch, data):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


@pytest.mark.parametrize("data", [b"", b"abc\n", bytes(range(256)) * 40],
                         ids=["empty", "4 bytes", "10 KiB"])
@pytest.mark.parametrize("algorithm", ["blake3", "sha256-tree"])
def test_hash_dash_reads_standard_input_like_b3sum(cli, tmp_path, monkeypatch, data, algorithm):
    _stdin(monkeypatch, data)
    proc = cli(tmp_path, "hash", "-a", algorithm, "-")
    assert proc.returncode == 0, proc.stderr
    want = reference.reference_digest(data, algorithm).hex()  # the b3sum binary; RFC 9162
    assert proc.stdout == f"{want}  -\n"


def test_hash_dash_with_tensors_is_refused(cli, tmp_path, monkeypatch):
    _stdin(monkeypatch, b"x")
    assert_one_line_error(cli(tmp_path, "hash", "--tensors", "-"), 2, "-: --tensors",
                          "not standard input")


@pytest.mark.parametrize("path, needles", [
    ("model", ["model: is a directory", "sentry sign"]),
    ("/dev/null", ["/dev/null: is a character device", "sentry hash - < /dev/null"]),
])
def test_hash_of_what_is_not_a_file_says_what_to_do(cli, work, path, needles):
    assert_one_line_error(cli(work, "hash", path), 2, *needles)


# ---------------------------------------------------------------------------------------------
# Python keywords in messages become the CLI's options

OMS = REPO / "tests" / "vectors" / "oms"


@pytest.mark.parametrize("args, cli_words, api_words", [
    # a keyless bundle given certificate roots
    (["verify", OMS / "v1.1.0-sigstore", "--signature", OMS / "v1.1.0-sigstore" / "model.sig",
      "--certificate-chain", OMS / "keys" / "ca-cert.pem"],
     "verify it with --identity, --identity-provider and --trusted-root or --trust-config",
     "verify it with identity, identity_provider and trusted_root or trust_config"),
    # a key bundle verified keyless
    (["verify", OMS / "v1.1.0-elliptic-key", "--signature",
      OMS / "v1.1.0-elliptic-key" / "model.sig", "--identity", "a@example.com",
      "--identity-provider", "https://example.com", "--trust-config",
      OMS / "custom_trust_config.json"],
     "verify it with --public-key", "verify it with public_key"),
])
def test_wrong_method_names_the_cli_options(cli, tmp_path, args, cli_words, api_words):
    from sentry.cli import _verify_method

    err = assert_one_line_error(cli(tmp_path, *args), 1, cli_words)
    assert "_" not in err.split("verify it with")[1]
    keywords = _verify_method(parser().parse_args([str(a) for a in args]))
    with pytest.raises(VerificationError, match=re.escape(api_words)):
        verify_files(str(args[1]), str(args[3]), **keywords)


def test_a_tensors_signature_given_a_directory_says_how_to_verify_it(cli, work):
    import torch

    from sentry import sign_model

    sign_model({"w": torch.ones(2)}, str(work / "key.pem"), str(work / "t.sig"))
    err = assert_one_line_error(cli(work, "verify", "model", "--signature", "t.sig",
                                    "--public-key", "key.pub"), 1, "covers tensors",
                                "sentry verify of the .pt state dict")
    assert "verify_model" in err.split("sentry verify of the .pt")[1]  # the API's way too


def test_an_empty_identity_provider_is_named_as_an_option(cli, work):
    assert_one_line_error(cli(work, "verify", "model", "--signature", "x.sig", "--identity",
                              "a@example.com", "--identity-provider", "", "--trust-config",
                              OMS / "custom_trust_config.json"), 2,
                          "--identity-provider must be a non-empty string")


class _NotATensor:
    """A class torch.load(weights_only=True) refuses to unpickle."""


def test_an_unloadable_pt_is_one_short_line_without_torchs_advice(cli, work):
    torch.save({"w": torch.zeros(2), "obj": _NotATensor()}, work / "bad.pt")
    err = assert_one_line_error(cli(work, "hash", "--tensors", "bad.pt"), 2,
                                "bad.pt: refused: not loadable with weights_only=True",
                                "Unsupported global")
    assert "weights_only` set to `False`" not in err and "Please use" not in err and len(err) < 240
