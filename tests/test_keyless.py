"""Sigstore keyless signatures, verified offline (sentry.keyless, `sentry verify --identity`).

The model-level fixture is the reference tool's own v1.1.0 keyless signature, verified with the
identity and issuer its test script uses and the trust config it ships; the Sigstore-level
rejections come from the Sigstore conformance suite. Other failures are made by editing the
fixture here. No test opens a socket: a guard makes any attempt fail the test, in this process
and in the CLI subprocesses.
"""
import base64
import copy
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("sigstore", reason="sigstore-python (scripts/setup.sh installs it)")

from sentry import keyless  # noqa: E402
from sentry.errors import DependencyError, FormatError, VerificationError  # noqa: E402
from sentry.signing import verify_files, verify_model  # noqa: E402

VECTORS = pathlib.Path(__file__).parent / "vectors"
OMS = VECTORS / "oms"
CONFORMANCE = VECTORS / "sigstore"
MODEL = OMS / "v1.1.0-sigstore"
IDENTITY = "stefanb@us.ibm.com"
ISSUER = "https://sigstore.verify.ibm.com/oauth2"
TRUST_CONFIG = OMS / "custom_trust_config.json"
PRODUCTION_ROOT = CONFORMANCE / "production_trusted_root.json"
BEACON = ("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
          ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main")
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Imported first by every Python process started with this folder on PYTHONPATH.
NO_NETWORK = textwrap.dedent("""
    import socket

    def _refuse(*args, **kwargs):
        raise OSError("test guard: this process must not use the network")

    socket.socket.connect = socket.socket.connect_ex = _refuse
    socket.create_connection = socket.getaddrinfo = _refuse
""")


def _refuse(*args, **kwargs):
    raise AssertionError("test guard: keyless verification opened a network connection")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    for owner, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"),
                        (socket, "create_connection"), (socket, "getaddrinfo")):
        monkeypatch.setattr(owner, name, _refuse)


@pytest.fixture(scope="module")
def guarded_env(tmp_path_factory):
    """Environment for CLI subprocesses: a sitecustomize that refuses every connection."""
    site = tmp_path_factory.mktemp("no_network")
    (site / "sitecustomize.py").write_text(NO_NETWORK)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(site)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []) + [str(ROOT)])
    return env


def _cli(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sentry", "verify", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd)


def _model_copy(tmp_path, bundle=None):
    """The keyless fixture copied, its bundle replaced by `bundle` (a dict) if given."""
    model = tmp_path / "model"
    shutil.copytree(MODEL, model)
    if bundle is not None:
        (model / "model.sig").write_text(json.dumps(bundle))
    return model


def _fixture_bundle():
    return json.loads((MODEL / "model.sig").read_text())


def _flip(b64, at=5):
    raw = bytearray(base64.b64decode(b64))
    raw[at] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def _verify(model, **kw):
    trust = {} if "trusted_root" in kw or "trust_config" in kw else {"trust_config": TRUST_CONFIG}
    kw = {"identity": IDENTITY, "identity_provider": ISSUER, **trust, **kw}
    return verify_files(str(model), str(model / "model.sig"), ignore_paths=["ignore-me"], **kw)


# ---- the guard itself ------------------------------------------------------------------------


def test_network_guard_refuses_connections(guarded_env):
    with pytest.raises(AssertionError, match="test guard"):
        socket.create_connection(("127.0.0.1", 9))
    probe = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection("
                            "('127.0.0.1', 9))"], capture_output=True, text=True, env=guarded_env)
    assert probe.returncode != 0 and "test guard" in probe.stderr


# ---- the reference's keyless fixture ---------------------------------------------------------


@pytest.mark.parametrize("trust", [{"trust_config": TRUST_CONFIG},
                                   {"trusted_root": PRODUCTION_ROOT}], ids=["config", "root"])
def test_reference_keyless_fixture_verifies(trust):
    result = _verify(MODEL, **trust)
    assert result.names == ["signme-1", "signme-2"]
    assert (result.identity, result.identity_provider) == (IDENTITY, ISSUER)
    assert result.method == "files" and result.hash_type == "sha256"


def test_cli_verifies_with_the_reference_scripts_arguments(guarded_env):
    # test-verify-v1.1.0-sigstore.sh's two commands, plus the trust material Sentry never fetches.
    out = _cli(guarded_env, "--identity", IDENTITY, "--identity-provider", ISSUER,
               "--trust-config", TRUST_CONFIG, "--ignore-paths", MODEL / "ignore-me",
               "--signature", MODEL / "model.sig", MODEL)
    assert out.returncode == 0, out.stderr
    assert f"signed by {IDENTITY} ({ISSUER})" in out.stdout
    out = _cli(guarded_env, "--identity", IDENTITY, "--identity-provider", ISSUER,
               "--trusted-root", PRODUCTION_ROOT, "--ignore-paths", "ignore-me",
               "--signature", "model.sig", ".", cwd=MODEL)
    assert out.returncode == 0, out.stderr


def test_changed_file_is_named(tmp_path, guarded_env):
    model = _model_copy(tmp_path)
    (model / "signme-2").write_bytes(b"changed\n")
    with pytest.raises(VerificationError) as info:
        _verify(model)
    assert info.value.changed == ["signme-2"]
    out = _cli(guarded_env, "--identity", IDENTITY, "--identity-provider", ISSUER,
               "--trust-config", TRUST_CONFIG, "--ignore-paths", "ignore-me", "--signature",
               "model.sig", ".", cwd=model)
    assert out.returncode == 1 and "changed: signme-2" in out.stderr


@pytest.mark.parametrize("who, check", [
    ({"identity": "mallory@example.com"}, "identity (certificate SAN)"),
    ({"identity_provider": "https://accounts.google.com"}, "OIDC issuer"),
])
def test_another_signer_is_rejected(who, check):
    with pytest.raises(VerificationError, match=re.escape(f"[{check}]")):
        _verify(MODEL, **who)


def test_cli_names_another_identity(guarded_env):
    out = _cli(guarded_env, "--identity", "mallory@example.com", "--identity-provider", ISSUER,
               "--trust-config", TRUST_CONFIG, "--ignore-paths", "ignore-me",
               "--signature", "model.sig", ".", cwd=MODEL)
    assert out.returncode == 1
    assert "FAILED" in out.stderr and "identity (certificate SAN)" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def _entry(bundle):
    return bundle["verificationMaterial"]["tlogEntries"][0]


EDITS = {
    # Each names the check that must fail.
    "inclusion proof hash": (lambda b: _entry(b)["inclusionProof"]["hashes"].__setitem__(
        0, _flip(_entry(b)["inclusionProof"]["hashes"][0])), "Rekor inclusion proof"),
    "inclusion proof root": (lambda b: _entry(b)["inclusionProof"].__setitem__(
        "rootHash", _flip(_entry(b)["inclusionProof"]["rootHash"])), "Rekor inclusion proof"),
    "log entry body": (lambda b: _entry(b).__setitem__(
        "canonicalizedBody", _flip(_entry(b)["canonicalizedBody"], 40)), "Rekor"),
    "log index": (lambda b: _entry(b).__setitem__(
        "logIndex", str(int(_entry(b)["logIndex"]) + 1)), "Rekor signed entry timestamp"),
    "integrated time": (lambda b: _entry(b).__setitem__(
        "integratedTime", str(int(_entry(b)["integratedTime"]) + 60)),
        "Rekor signed entry timestamp"),
    "checkpoint": (lambda b: _entry(b)["inclusionProof"]["checkpoint"].__setitem__(
        "envelope", _entry(b)["inclusionProof"]["checkpoint"]["envelope"].replace(
            "\n476246825\n", "\n476246826\n")), "Rekor signed checkpoint"),
    "no log entry": (lambda b: b["verificationMaterial"].__setitem__("tlogEntries", []),
                     "Rekor log entry"),
    # (A timestamp that parses but does not verify is skipped, not fatal: the log's signed
    # integration time is enough for sigstore-python.)
    "timestamp": (lambda b: b["verificationMaterial"]["timestampVerificationData"][
        "rfc3161Timestamps"][0].__setitem__("signedTimestamp", _flip(
            b["verificationMaterial"]["timestampVerificationData"]["rfc3161Timestamps"][0][
                "signedTimestamp"])), "RFC 3161 timestamp"),
    "signature": (lambda b: b["dsseEnvelope"]["signatures"][0].__setitem__(
        "sig", _flip(b["dsseEnvelope"]["signatures"][0]["sig"], 10)), "DSSE signature"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_altered_bundle_is_rejected_and_named(tmp_path, edit):
    change, check = EDITS[edit]
    bundle = _fixture_bundle()
    change(bundle)
    assert bundle != _fixture_bundle()
    model = _model_copy(tmp_path, bundle)
    with pytest.raises(VerificationError) as info:
        _verify(model)
    message = str(info.value)
    assert "keyless signature rejected" in message and check in message, message
    assert "\n" not in message and len(message) < 600


def test_another_sigstore_instance_is_not_trusted():
    # The conformance suite's test instance: its Fulcio CA did not issue the fixture's certificate.
    with pytest.raises(VerificationError, match=re.escape("[certificate chain to the Fulcio CA")):
        _verify(MODEL, trusted_root=CONFORMANCE / "intoto-expired-certificate_fail" /
                "trusted_root.json")


def test_edited_payload_is_rejected(tmp_path):
    bundle = _fixture_bundle()
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "00" * 32
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(VerificationError, match="DSSE signature"):
        _verify(_model_copy(tmp_path, bundle))


# ---- trust material: given, never fetched ------------------------------------------------------


def test_missing_trust_root_is_bad_input(guarded_env):
    with pytest.raises(FormatError, match="fetches nothing"):
        verify_files(str(MODEL), str(MODEL / "model.sig"), identity=IDENTITY,
                     identity_provider=ISSUER)
    out = _cli(guarded_env, "--identity", IDENTITY, "--identity-provider", ISSUER,
               "--signature", MODEL / "model.sig", MODEL)
    assert out.returncode == 2
    assert "--trusted-root" in out.stderr and "--trust-config" in out.stderr
    assert "fetches nothing" in out.stderr


@pytest.mark.parametrize("args, message", [
    (["--trust-config", "/nonexistent/trust.json"], "trust config /nonexistent/trust.json: no such file"),
    (["--trusted-root", TRUST_CONFIG], "is a Sigstore trust config"),
    (["--trust-config", PRODUCTION_ROOT], "is a Sigstore trusted root"),
    (["--trusted-root", MODEL / "signme-1"], "trusted root"),
    (["--trusted-root", PRODUCTION_ROOT, "--trust-config", TRUST_CONFIG], "not both"),
    (["--public-key", OMS / "keys" / "signing-key-pub.pem"], "not both"),
])
def test_bad_trust_arguments_exit_2(guarded_env, args, message):
    out = _cli(guarded_env, "--identity", IDENTITY, "--identity-provider", ISSUER, *args,
               "--signature", MODEL / "model.sig", MODEL)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_identity_needs_its_issuer(guarded_env):
    out = _cli(guarded_env, "--identity", IDENTITY, "--trust-config", TRUST_CONFIG,
               "--signature", MODEL / "model.sig", MODEL)
    assert out.returncode == 2 and "--identity-provider" in out.stderr
    with pytest.raises(FormatError, match="identity_provider"):
        verify_files(str(MODEL), str(MODEL / "model.sig"), identity=IDENTITY,
                     trust_config=TRUST_CONFIG)
    with pytest.raises(FormatError, match="for keyless"):
        verify_files(str(MODEL), str(MODEL / "model.sig"),
                     public_key=OMS / "keys" / "signing-key-pub.pem", trust_config=TRUST_CONFIG)


def test_trust_loaded_once_is_reusable():
    root = keyless.load_trusted_root(trusted_root=PRODUCTION_ROOT)
    assert keyless.load_trusted_root(trusted_root=root) is root
    assert _verify(MODEL, trusted_root=root).identity == IDENTITY


def test_trusted_root_is_parsed_from_the_bytes_read_once(monkeypatch):
    # A second read of the path could see another file than the one checked as regular.
    from sigstore import models

    def second_read(*_):
        raise AssertionError("the trusted root was read a second time")

    monkeypatch.setattr(models.TrustedRoot, "from_file", classmethod(second_read))
    assert _verify(MODEL, trusted_root=PRODUCTION_ROOT).identity == IDENTITY


def test_missing_sigstore_package_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sigstore", None)
    with pytest.raises(DependencyError, match="pip install sigstore"):
        _verify(MODEL)


# ---- methods do not mix ----------------------------------------------------------------------


def test_keyless_bundle_is_not_a_certificate_bundle():
    # The Fulcio chain certifies any identity: trusting it as a certificate chain would accept
    # every Sigstore user's signature.
    config = json.loads(TRUST_CONFIG.read_text())
    fulcio = "".join(
        "-----BEGIN CERTIFICATE-----\n" + "\n".join(textwrap.wrap(c["rawBytes"], 64))
        + "\n-----END CERTIFICATE-----\n"
        for ca in config["trustedRoot"]["certificateAuthorities"]
        for c in ca["certChain"]["certificates"])
    with pytest.raises(VerificationError, match="keyless signature"):
        verify_files(str(MODEL), str(MODEL / "model.sig"), ignore_paths=["ignore-me"],
                     certificate_chain=fulcio.encode())


def test_key_bundle_is_not_keyless():
    model = OMS / "v1.1.0-elliptic-key"
    with pytest.raises(VerificationError, match="signed with a key"):
        verify_files(str(model), str(model / "model.sig"), ignore_paths=["ignore-me"],
                     identity=IDENTITY, identity_provider=ISSUER, trust_config=TRUST_CONFIG)


def test_verify_model_takes_the_keyless_keywords():
    import torch

    state = {"w": torch.zeros(2)}
    kw = dict(identity=IDENTITY, identity_provider=ISSUER, trust_config=TRUST_CONFIG)
    # The signature is accepted; the bundle (files only) then lists no tensors.
    with pytest.raises(VerificationError, match="lists no tensors"):
        verify_model(state, str(MODEL / "model.sig"), **kw)
    with pytest.raises(VerificationError, match="identity"):
        verify_model(state, str(MODEL / "model.sig"), **{**kw, "identity": "x@example.com"})


# ---- Sigstore conformance bundles ------------------------------------------------------------


def _conformance(name, identity=BEACON, issuer=GITHUB_ISSUER, edit=None):
    folder = CONFORMANCE / name
    root = folder / "trusted_root.json"
    policy = keyless.KeylessPolicy.load(
        identity, issuer, trusted_root=root if root.exists() else PRODUCTION_ROOT)
    data = (folder / "bundle.sigstore.json").read_bytes()
    if edit is not None:
        doc = json.loads(data)
        edit(doc)
        data = json.dumps(doc).encode()
    return keyless.verify_bundle(data, name, policy)


def test_conformance_happy_path():
    payload_type, payload = _conformance("happy-path-intoto-in-dsse-v3")
    assert payload_type == "application/vnd.in-toto+json"
    assert json.loads(payload)["_type"] == "https://in-toto.io/Statement/v1"
    with pytest.raises(VerificationError, match="identity"):
        _conformance("happy-path-intoto-in-dsse-v3", identity="https://github.com/other")


@pytest.mark.parametrize("name, check", [
    ("dsse-invalid-sig_fail", "DSSE signature"),
    ("dsse-mismatch-envelope_fail", "Rekor log entry"),
    ("intoto-expired-certificate_fail", "Sigstore"),
])
def test_conformance_failures(name, check):
    with pytest.raises(VerificationError, match=check):
        _conformance(name)


def test_certificate_outside_its_validity_at_signing_time():
    # sigstore-python stops at this bundle's `intoto` entry kind before the time check; relabel
    # the entry (no signature covers the label) so that the validity check is what fails.
    def relabel(doc):
        doc["verificationMaterial"]["tlogEntries"][0]["kindVersion"] = {
            "kind": "dsse", "version": "0.0.1"}

    with pytest.raises(VerificationError) as info:
        _conformance("intoto-expired-certificate_fail", edit=relabel)
    assert "certificate chain to the Fulcio CA, valid at the signing time" in str(info.value)
    assert "not valid at validation time" in str(info.value)


# ---- the bundle parser's side ------------------------------------------------------------------


def test_bundle_keeps_log_entries_and_writes_no_keyless_bundle():
    from sentry.bundle import Bundle, read_bundle

    signed = read_bundle(MODEL / "model.sig")
    assert len(signed.tlog_entries) == 1 and signed.tlog_entries[0]["kindVersion"]["kind"] == "dsse"
    with pytest.raises(FormatError, match="keyless"):
        signed.to_json()
    bundle = _fixture_bundle()
    bundle["verificationMaterial"]["tlogEntries"] = [1]
    with pytest.raises(FormatError, match=re.escape("tlogEntries[0]: must be a JSON object")):
        Bundle.from_json(json.dumps(bundle).encode(), "x.sig")


@pytest.mark.parametrize("option", ["--trust-config", "--trusted-root"])
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_trust_file_that_is_not_regular_exit_2(guarded_env, tmp_path, option, kind):
    # A FIFO used to block the open forever; /dev/zero was read up to the size limit.
    if kind == "fifo":
        path = tmp_path / "trust.json"
        os.mkfifo(path)
    else:
        path = "/dev/zero"
    out = subprocess.run(
        [sys.executable, "-m", "sentry", "verify", "--identity", IDENTITY, "--identity-provider",
         ISSUER, option, str(path), "--signature", str(MODEL / "model.sig"), str(MODEL)],
        capture_output=True, text=True, env=guarded_env, timeout=60)  # a hang fails, not stalls
    assert out.returncode == 2, out.stderr
    assert "not a regular file" in out.stderr and str(path) in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
