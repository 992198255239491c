"""Signing and verification end to end: the tamper matrix (every change is caught and named),
files and tensors from one signature, and interoperability with the reference OpenSSF Model
Signing tool (`model_signing`)."""
import base64
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from sentry.errors import FormatError, VerificationError
from sentry.signing import sign_files, sign_model, verify_files, verify_model

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def _state(device):
    g = torch.Generator().manual_seed(1)
    state = {
        "embed.weight": torch.randn(64, 32, generator=g),
        "block.0.w": torch.randn(32, 32, generator=g),
        "block.1.w": torch.randn(32, 32, generator=g),
        "block.0.b": torch.randn(32, generator=g),
        "norm.scale": torch.randn(32, generator=g).to(torch.bfloat16),
        "steps": torch.tensor(7, dtype=torch.int64),
        "mask": torch.rand(16, generator=g) > 0.5,
    }
    return {k: v.to(device) for k, v in state.items()}


def _rejects(state, sig, pub, **expect):
    with pytest.raises(VerificationError) as info:
        verify_model(state, sig, public_key=pub)
    for field, names in expect.items():
        assert sorted(getattr(info.value, field)) == sorted(names), str(info.value)
    for names in expect.values():
        for name in names:
            assert name in str(info.value)
    return info.value


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("algorithm", ["blake3", "sha256-tree"])
def test_tamper_matrix_in_memory(tmp_path, keys, device, algorithm):
    priv, pub = keys["alice"]
    sig = str(tmp_path / "model.sig")
    state = _state(device)
    sign_model(state, priv, sig, algorithm=algorithm)
    assert verify_model(state, sig, public_key=pub).names == sorted(state)

    for name in state:  # one bit of any tensor
        bad = dict(state)
        t = state[name].clone()
        t.view(-1).view(torch.uint8)[-1] ^= 1
        bad[name] = t
        _rejects(bad, sig, pub, changed=[name])

    swapped = dict(state, **{"block.0.w": state["block.1.w"], "block.1.w": state["block.0.w"]})
    _rejects(swapped, sig, pub, changed=["block.0.w", "block.1.w"])

    renamed = dict(state)
    renamed["block.0.bias"] = renamed.pop("block.0.b")
    _rejects(renamed, sig, pub, missing=["block.0.b"], unexpected=["block.0.bias"])

    dropped = dict(state)
    del dropped["steps"]
    _rejects(dropped, sig, pub, missing=["steps"], changed=[], unexpected=[])

    _rejects(dict(state, extra=torch.zeros(1, device=device)), sig, pub, unexpected=["extra"])

    retyped = dict(state, **{"block.0.w": state["block.0.w"].view(torch.int32)})  # same bytes
    _rejects(retyped, sig, pub, changed=["block.0.w"])

    reshaped = dict(state, **{"embed.weight": state["embed.weight"].reshape(32, 64)})  # same bytes
    _rejects(reshaped, sig, pub, changed=["embed.weight"])

    with pytest.raises(VerificationError, match="does not verify"):
        verify_model(state, sig, public_key=keys["mallory"][1])


def test_edited_payload_is_rejected(tmp_path, keys):
    priv, pub = keys["alice"]
    sig = tmp_path / "model.sig"
    state = _state("cpu")
    sign_model(state, priv, str(sig))
    doc = json.loads(sig.read_text())
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "00" * 32
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(doc))
    with pytest.raises(VerificationError, match="does not verify"):
        verify_model(state, str(sig), public_key=pub)


def test_module_and_state_dict_agree(tmp_path, keys):
    priv, pub = keys["alice"]
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    sign_model(model, priv, str(tmp_path / "m.sig"))
    verify_model(model.state_dict(), str(tmp_path / "m.sig"), public_key=pub)
    with torch.no_grad():
        model[0].weight[0, 0] += 1
    _rejects(model, str(tmp_path / "m.sig"), pub, changed=["0.weight"])


def test_tensor_of_a_dtype_safetensors_cannot_name_is_refused_by_name(tmp_path, keys):
    priv, pub = keys["alice"]
    state = _state("cpu")
    sign_model(state, priv, str(tmp_path / "m.sig"))
    state["block.0.b"] = state["block.0.b"].to(torch.complex128)
    with pytest.raises(FormatError, match="tensor 'block.0.b': ComplexDouble has no safetensors"):
        verify_model(state, str(tmp_path / "m.sig"), public_key=pub)


# ---- files, and one signature for files and tensors ------------------------------------------


def _model_dir(root):
    from safetensors.torch import save_file

    d = root / "model"
    (d / "sub").mkdir(parents=True)
    state = _state("cpu")
    save_file(state, str(d / "model.safetensors"))
    (d / "config.json").write_text('{"hidden": 32}')
    (d / "sub" / "tokenizer.txt").write_text("a b c\n")
    for name in ("a-b", "a.b"):  # names whose code-point and path-component orders differ
        (d / name).write_text(name)
    (d / "a").mkdir()
    (d / "a" / "b").write_text("a/b")
    return d, state


@pytest.mark.parametrize("device", DEVICES)
def test_one_signature_for_files_and_loaded_tensors(tmp_path, keys, device):
    from safetensors.torch import load_file

    priv, pub = keys["alice"]
    d, _ = _model_dir(tmp_path)
    sig = str(tmp_path / "model.sig")
    sign_files(str(d), priv, sig)
    verify_files(str(d), sig, public_key=pub)
    loaded = load_file(str(d / "model.safetensors"), device=device)
    verify_model(loaded, sig, public_key=pub)  # no file access: digests from the signature
    loaded["block.0.w"][0, 0] += 1
    _rejects(loaded, sig, pub, changed=["block.0.w"])


def test_tamper_matrix_files(tmp_path, keys):
    priv, pub = keys["alice"]
    d, _ = _model_dir(tmp_path)
    sig = str(tmp_path / "model.sig")
    sign_files(str(d), priv, sig)
    for rel in ("config.json", "sub/tokenizer.txt", "model.safetensors", "a/b"):
        path = d / rel
        original = path.read_bytes()
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(VerificationError) as info:
            verify_files(str(d), sig, public_key=pub)
        assert info.value.changed == [rel]
        path.write_bytes(original)
    (d / "new.txt").write_text("x")
    with pytest.raises(VerificationError) as info:
        verify_files(str(d), sig, public_key=pub)
    assert info.value.unexpected == ["new.txt"]
    os.remove(d / "new.txt")
    os.remove(d / "config.json")
    with pytest.raises(VerificationError) as info:
        verify_files(str(d), sig, public_key=pub)
    assert info.value.missing == ["config.json"]


# ---- interoperability with the reference tool -------------------------------------------------


def _model_signing(*args):
    exe = shutil.which("model_signing")
    cmd = [exe] if exe else [sys.executable, "-m", "model_signing"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True)


@pytest.fixture
def reference_tool():
    pytest.importorskip("model_signing", reason="the reference model-signing package")


def test_reference_verifies_what_we_sign(tmp_path, keys, reference_tool):
    priv, pub = keys["alice"]
    d, _ = _model_dir(tmp_path)
    sig = str(tmp_path / "model.sig")
    sign_files(str(d), priv, sig)  # sha256 files, as the reference's default
    ok = _model_signing("verify", "key", "--signature", sig, "--public_key", pub, str(d))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (d / "config.json").write_text('{"hidden": 33}')
    bad = _model_signing("verify", "key", "--signature", sig, "--public_key", pub, str(d))
    assert bad.returncode != 0
    with pytest.raises(VerificationError):
        verify_files(str(d), sig, public_key=pub)


def test_we_verify_what_the_reference_signs(tmp_path, keys, reference_tool):
    priv, pub = keys["alice"]
    d, _ = _model_dir(tmp_path)
    sig = str(tmp_path / "ref.sig")
    made = _model_signing("sign", "key", "--private_key", priv, "--signature", sig, str(d))
    assert made.returncode == 0, made.stdout + made.stderr
    verify_files(str(d), sig, public_key=pub)
    with pytest.raises(VerificationError):
        verify_files(str(d), sig, public_key=keys["mallory"][1])
    (d / "sub" / "tokenizer.txt").write_text("changed")
    with pytest.raises(VerificationError) as info:
        verify_files(str(d), sig, public_key=pub)
    assert info.value.changed == ["sub/tokenizer.txt"]
    assert _model_signing("verify", "key", "--signature", sig, "--public_key", pub,
                          str(d)).returncode != 0


def test_signature_file_is_written_atomically(tmp_path, keys, monkeypatch):
    priv, _ = keys["alice"]
    sig = tmp_path / "model.sig"
    sig.write_text("previous signature")
    state = dict(_state("cpu"), bad=torch.randn(2).to_sparse())
    with pytest.raises((FormatError, ValueError)):
        sign_model(state, priv, str(sig))
    assert sig.read_text() == "previous signature"
    assert sorted(os.listdir(tmp_path)) == ["model.sig"]


# ---- certificates ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A root CA and a code-signing leaf, built with the cryptography package."""
    pytest.importorskip("cryptography")
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, issuer, key, issuer_key, ca):
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        else:
            b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    out = {}
    for name in ("root", "other_root"):
        key = ec.generate_private_key(ec.SECP256R1())
        out[name] = (key, cert(name, name, key, key, True))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = cert("signer", "root", leaf_key, out["root"][0], False)
    pem = serialization.Encoding.PEM
    (d / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (d / "leaf.key").write_bytes(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    for name in ("root", "other_root"):
        (d / f"{name}.pem").write_bytes(out[name][1].public_bytes(pem))
    return {k: str(d / k) for k in ("leaf.pem", "leaf.key", "root.pem", "other_root.pem")}


def test_certificate_signing_tensors_and_files(tmp_path, pki, keys):
    state = _state("cpu")
    sig = str(tmp_path / "model.sig")
    sign_model(state, pki["leaf.key"], sig, certificate_chain=[pki["leaf.pem"]])
    doc = json.loads(open(sig).read())
    assert "x509CertificateChain" in doc["verificationMaterial"]
    verify_model(state, sig, certificate_chain=pki["root.pem"])
    with pytest.raises(VerificationError):
        verify_model(state, sig, certificate_chain=pki["other_root.pem"])
    with pytest.raises(FormatError, match="not the private key"):
        sign_model(state, keys["alice"][0], sig, certificate_chain=[pki["leaf.pem"]])


def test_reference_verifies_our_certificate_bundle(tmp_path, pki, reference_tool):
    d, _ = _model_dir(tmp_path)
    sig = str(tmp_path / "model.sig")
    sign_files(str(d), pki["leaf.key"], sig, certificate_chain=[pki["leaf.pem"]])
    verify_files(str(d), sig, certificate_chain=pki["root.pem"])
    ok = _model_signing("verify", "certificate", "--signature", sig, "--certificate_chain",
                        pki["root.pem"], str(d))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = _model_signing("verify", "certificate", "--signature", sig, "--certificate_chain",
                         pki["other_root.pem"], str(d))
    assert bad.returncode != 0


def test_pt_needing_unsafe_unpickling_is_refused(tmp_path):
    import collections

    path = tmp_path / "evil.pt"
    torch.save({"w": torch.randn(2), "obj": collections.Counter("abc")}, path)
    from sentry.cli import main

    assert main(["hash", "--tensors", str(path)]) == 2
    assert main(["sign", str(path), "--private-key", "x.pem", "--signature",
                 str(tmp_path / "s.sig")]) == 2
    assert not (tmp_path / "s.sig").exists()
