"""Bundles written by every released model_signing version verify (key and certificate methods;
keyless is tests/test_keyless.py). The fixtures in tests/vectors/model_signing/ were signed by
each release itself (see its README); the reference's own v1.1.0 fixtures are in
tests/vectors/oms/. v0.2.0's format (sentry/bundle_v02.py) is checked against the reference."""
import base64
import json
import pathlib
import shutil

import pytest

from sentry import bundle_v02
from sentry.bundle import parse_statement
from sentry.crypto import PrivateKey, PublicKey
from sentry.errors import FormatError, VerificationError
from sentry.signing import verify_files

VECTORS = pathlib.Path(__file__).parent / "vectors"
VERSIONS = VECTORS / "model_signing"
KEYS = VERSIONS / "keys"
FIXTURES = sorted(p.name for p in VERSIONS.iterdir() if p.name.startswith("v"))


def _trust(name, keys=KEYS):
    if "certificate" in name:
        return {"certificate_chain": str(keys / "ca-cert.pem")}
    return {"public_key": str(keys / ("key-p384.pub" if "p384" in name else "key-p256.pub"))}


def _verify(folder, **trust):
    if "single-file" in folder.name:
        return verify_files(str(folder / "signme-1"), str(folder / "model.sig"), **trust)
    return verify_files(str(folder), str(folder / "model.sig"), ignore_paths=["ignore-me"],
                        **trust)


def test_every_release_is_here():
    made = {name.split("-")[0] for name in FIXTURES}
    assert made == {"v0.2.0", "v0.3.0", "v0.3.1", "v1.0.0", "v1.0.1", "v1.1.0", "v1.1.1"}
    certificate = {name.split("-")[0] for name in FIXTURES if "certificate" in name}
    assert certificate == made - {"v0.3.0", "v0.3.1"}  # 0.3.x could not sign with certificates


@pytest.mark.parametrize("name", FIXTURES)
def test_release_bundle_verifies(name):
    result = _verify(VERSIONS / name, **_trust(name))
    assert result.names == (["."] if "single-file" in name else ["signme-1", "signme-2"])
    assert (result.method, result.hash_type) == ("files", "sha256")


@pytest.mark.parametrize("name", FIXTURES)
def test_release_bundle_catches_a_changed_file(tmp_path, name):
    folder = tmp_path / name
    shutil.copytree(VERSIONS / name, folder)
    (folder / "signme-1").write_bytes(b"signme-1 changed\n")
    with pytest.raises(VerificationError) as info:
        _verify(folder, **_trust(name))
    assert info.value.changed == (["."] if "single-file" in name else ["signme-1"])


@pytest.mark.parametrize("name", FIXTURES)
def test_release_bundle_refuses_another_signer(name):
    if "certificate" in name:  # another root: the reference's own test CA
        other = {"certificate_chain": str(VECTORS / "oms" / "keys" / "ca-cert.pem")}
    else:
        other = {"public_key": str(KEYS / ("key-p256.pub" if "p384" in name else "key-p384.pub"))}
    with pytest.raises(VerificationError):
        _verify(VERSIONS / name, **other)


@pytest.mark.parametrize("name", ["v1.1.0-elliptic-key", "v1.1.0-certificate"])
def test_reference_v1_1_0_fixtures_verify(name):
    oms = VECTORS / "oms"
    trust = ({"certificate_chain": str(oms / "keys" / "ca-cert.pem")} if "certificate" in name
             else {"public_key": str(oms / "keys" / "signing-key-pub.pem")})
    folder = oms / name
    result = verify_files(str(folder), str(folder / "model.sig"), ignore_paths=["ignore-me"],
                          **trust)
    assert result.names == ["signme-1", "signme-2"]


# ---- v0.2.0's format ---------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    b'{\n  "a": "b"\n}', b"it's", b'both \' and "', b"back\\slash\ttab\r\x00\x7f\xff",
    "caf\u00e9 \u2603".encode(), b"",
])
def test_v02_pae_is_the_references(payload):
    compat = pytest.importorskip("model_signing._signing.sign_sigstore_pb").pae_compat
    assert bundle_v02.pae(payload) == compat(payload)


def test_v02_signature_made_with_sha256_on_p384():
    """v0.2 signed with SHA-256 whatever the curve: a P-384 key's signature of the buggy PAE
    made by `cryptography` verifies only with that hash (and only via the v0.2 path)."""
    ec = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ec")
    from cryptography.hazmat.primitives import hashes, serialization

    key = ec.generate_private_key(ec.SECP384R1())
    public = PublicKey.load(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    message = bundle_v02.pae(b'{"x": 1}')
    signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    assert public.verify(message, signature, hash="SHA-256")
    assert not public.verify(message, signature)  # the curve's SHA-384
    assert not public.verify(message + b" ", signature, hash="SHA-256")
    with pytest.raises(FormatError, match="unknown hash"):
        public.verify(message, signature, hash="MD5")


def test_v02_pae_is_not_accepted_for_current_statements(tmp_path):
    """The buggy PAE is what v0.2 signed, and only its statements are checked against it."""
    folder = tmp_path / "m"
    shutil.copytree(VERSIONS / "v1.1.1-key", folder)
    bundle = json.loads((folder / "model.sig").read_text())
    payload = base64.b64decode(bundle["dsseEnvelope"]["payload"])
    key = PrivateKey.generate("P-256")
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(
        key.sign(bundle_v02.pae(payload))).decode()
    bundle["verificationMaterial"]["publicKey"]["hint"] = key.public_key().hint()
    (folder / "model.sig").write_text(json.dumps(bundle))
    (tmp_path / "k.pub").write_bytes(key.public_key().pem())
    with pytest.raises(VerificationError, match="does not verify"):
        verify_files(str(folder), str(folder / "model.sig"), ignore_paths=["ignore-me"],
                     public_key=str(tmp_path / "k.pub"))


def _v02_statement(subjects):
    return json.dumps({"_type": "https://in-toto.io/Statement/v1", "subject": subjects,
                       "predicateType": bundle_v02.PREDICATE_TYPE,
                       "predicate": {"unused": "Unused, just passed due to API requirements"}})


def _subject(name, digest="ab" * 32, **extra):
    return {"name": name, "digest": {"sha256": digest},
            "annotations": {"actual_hash_algorithm": "file-sha256"}, **extra}


def test_v02_statement_is_read_as_files_sha256():
    statement = parse_statement(_v02_statement([_subject("b"), _subject("a/c")]))
    assert [r.name for r in statement.resources] == ["a/c", "b"]
    assert (statement.method, statement.hash_type, statement.ignore_paths) == ("files", "sha256", [])
    no_annotation = {"name": "x", "digest": {"sha256": "cd" * 32}}
    assert parse_statement(_v02_statement([no_annotation])).resources[0].digest == "cd" * 32


@pytest.mark.parametrize("subjects, message", [
    ([], "no subject"),
    ([_subject("a"), _subject("a")], "duplicate subject"),
    ([_subject("../a")], "'..'"),
    ([_subject("/etc/passwd")], "absolute"),
    ([_subject("."), _subject("b")], "'.'"),
    ([_subject("a", digest="AB" * 32)], "lower-case hex"),
    ([{"name": "a", "digest": {"sha512": "ab" * 64}}], "sha256"),
    ([{**_subject("a"), "annotations": {"actual_hash_algorithm": "file-blake2"}}], "file-blake2"),
    (["a"], "JSON object"),
])
def test_v02_statement_is_validated(subjects, message):
    with pytest.raises(FormatError, match=message):
        parse_statement(_v02_statement(subjects), "v02.sig")


def test_reference_verifies_the_fixtures():
    """The reference's current CLI accepts what its releases wrote (except v0.2.0's P-384 key
    bundle: it checks that one with SHA-384, unlike v0.2.0 itself)."""
    pytest.importorskip("model_signing")
    import subprocess
    import sys

    for name in FIXTURES:
        folder = VERSIONS / name
        trust = _trust(name)
        method = (["certificate", "--certificate_chain", trust["certificate_chain"]]
                  if "certificate_chain" in trust else ["key", "--public_key", trust["public_key"]])
        model = [str(folder / "signme-1")] if "single-file" in name else [
            "--ignore-paths", str(folder / "ignore-me"), str(folder)]
        out = subprocess.run([sys.executable, "-m", "model_signing", "verify", *method,
                              "--signature", str(folder / "model.sig"), *model],
                             capture_output=True, text=True)
        ok = out.returncode == 0 and "Verification succeeded" in out.stdout
        assert ok == (name != "v0.2.0-key-p384"), (name, out.stdout, out.stderr)
