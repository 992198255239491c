"""Writes the fixtures in this folder: models signed by every released model_signing version.

Run with the system python (it needs `cryptography`), after installing each release in its own
virtual environment (see README.md). It makes fresh keys, writes their public halves to keys/
(the private keys stay in a temporary folder and are deleted), and has each release sign small
models with its own code: the `model_signing sign key|certificate` CLI from v0.3.0 on, and for
v0.2.0 (no CLI in its wheel) the calls of its repository's src/sign.py (`model.sign` with
`IntotoSigner(ECKeySigner | PKISigner)` and `DigestsIntotoPayload`).

    python3 make_fixtures.py VENV_PATTERN      # e.g. "/tmp/ms-{version}"
"""
import datetime
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VERSIONS = ("0.2.0", "0.3.0", "0.3.1", "1.0.0", "1.0.1", "1.1.0", "1.1.1")
HERE = pathlib.Path(__file__).resolve().parent
# Fixed validity, so that the fixtures never expire (chains are checked at the leaf's notBefore).
NOT_BEFORE = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)
NOT_AFTER = datetime.datetime(2045, 1, 1, tzinfo=datetime.timezone.utc)

V020_SIGN = r"""
import pathlib, sys
from model_signing import model
from model_signing.hashing import file, memory
from model_signing.serialization import serialize_by_file
from model_signing.signature import key, pki
from model_signing.signing import in_toto, in_toto_signature

method, model_path, sig_out, private_key = sys.argv[1:5]
ignore = [pathlib.Path(p) for p in sys.argv[5:]]
if method == "key":
    signer = key.ECKeySigner.from_path(private_key_path=private_key)
else:
    signing_cert, chain = ignore.pop(0), ignore.pop(0)
    signer = pki.PKISigner.from_path(private_key, str(signing_cert), [str(chain)])
serializer = serialize_by_file.ManifestSerializer(
    file_hasher_factory=lambda p: file.SimpleFileHasher(file=p, content_hasher=memory.SHA256()))
sig = model.sign(model_path=pathlib.Path(model_path),
                 signer=in_toto_signature.IntotoSigner(signer),
                 payload_generator=in_toto.DigestsIntotoPayload.from_manifest,
                 serializer=serializer, ignore_paths=[pathlib.Path(sig_out)] + ignore)
sig.write(pathlib.Path(sig_out))
"""


# From v1.0.1 on, signing.Config() first sets up a Sigstore signer, which refreshes Sigstore's
# TUF metadata over the network even for key and certificate signing; no network here, so the
# CLI runs with that default set-up skipped (the key and certificate signers are untouched).
CLI = r"""
import runpy, sys
try:
    import model_signing.signing as signing
    if hasattr(signing, "Config"):
        signing.Config.use_sigstore_signer = lambda self, **kwargs: self
except ImportError:
    pass
sys.argv[0] = "model_signing"
runpy.run_module("model_signing", run_name="__main__")
"""


def name(text):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def certificate(subject, issuer, key, issuer_key, ca):
    b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                          False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                          False), critical=True)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA384())


def write_pem(path, obj):
    if isinstance(obj, x509.Certificate):
        data = obj.public_bytes(serialization.Encoding.PEM)
    elif isinstance(obj, ec.EllipticCurvePrivateKey):
        data = obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    else:
        data = obj.public_bytes(serialization.Encoding.PEM,
                                serialization.PublicFormat.SubjectPublicKeyInfo)
    path.write_bytes(data)


def make_keys(secret):
    """Public material in keys/, private keys in `secret`."""
    keys = HERE / "keys"
    keys.mkdir(exist_ok=True)
    root_key = ec.generate_private_key(ec.SECP384R1())
    int_key = ec.generate_private_key(ec.SECP384R1())
    leaf_key = ec.generate_private_key(ec.SECP384R1())
    root = certificate("sentry-test-root-ca", "sentry-test-root-ca", root_key, root_key, True)
    inter = certificate("sentry-test-intermediate-ca", "sentry-test-root-ca", int_key, root_key,
                        True)
    leaf = certificate("sentry-test-signer", "sentry-test-intermediate-ca", leaf_key, int_key,
                       False)
    write_pem(keys / "ca-cert.pem", root)
    write_pem(keys / "int-ca-cert.pem", inter)
    write_pem(keys / "signing-cert.pem", leaf)
    write_pem(secret / "signing-cert.key", leaf_key)
    for curve, cls in (("p256", ec.SECP256R1), ("p384", ec.SECP384R1)):
        k = ec.generate_private_key(cls())
        write_pem(keys / f"key-{curve}.pub", k.public_key())
        write_pem(secret / f"key-{curve}.key", k)


def make_model(folder, single_file):
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    (folder / "signme-1").write_bytes(b"signme-1\n")
    if not single_file:
        (folder / "signme-2").write_bytes(b"signme-2 \x00\xff\n")
        (folder / "ignore-me").write_bytes(b"")


def sign(version, venvs, method, folder, secret, key_name="key-p256", single_file=False):
    python = str(pathlib.Path(venvs.format(version=version)) / "bin" / "python")
    make_model(folder, single_file)
    model = folder / "signme-1" if single_file else folder
    sig = folder / "model.sig"
    ignore = [] if single_file else [str(folder / "ignore-me")]
    if method == "key":
        key = str(secret / f"{key_name}.key")
    else:
        key = str(secret / "signing-cert.key")
    if version == "0.2.0":
        extra = ([] if method == "key"
                 else [str(HERE / "keys" / "signing-cert.pem"), str(HERE / "keys" / "int-ca-cert.pem")])
        cmd = [python, "-c", V020_SIGN, method, str(model), str(sig), key] + extra + ignore
    else:
        cmd = [python, "-c", CLI, "sign", method, "--signature", str(sig),
               "--private_key", key]
        if method == "certificate":
            cmd += ["--signing_certificate", str(HERE / "keys" / "signing-cert.pem"),
                    "--certificate_chain", str(HERE / "keys" / "int-ca-cert.pem")]
        for p in ignore:
            cmd += ["--ignore-paths", p]
        cmd.append(str(model))
    out = subprocess.run(cmd, capture_output=True, text=True)
    # Releases before 1.1 print "Signing failed with error: ..." and exit 0.
    if out.returncode != 0 or "failed" in out.stdout + out.stderr or not sig.exists():
        sys.exit(f"{version} {method}: {out.stdout}{out.stderr}")
    print(f"model_signing {version}: signed {folder.name}")


def main(venvs):
    with tempfile.TemporaryDirectory() as tmp:
        secret = pathlib.Path(tmp)
        make_keys(secret)
        for version in VERSIONS:
            for method in ("key", "certificate"):
                if method == "certificate" and version.startswith("0.3."):
                    continue  # 0.3.x cannot: X509Certificate(raw_byutes=...), fixed in 1.0.0
                sign(version, venvs, method, HERE / f"v{version}-{method}", secret)
        # v0.2.0 signed with SHA-256 whatever the curve; a P-384 key shows it.
        sign("0.2.0", venvs, "key", HERE / "v0.2.0-key-p384", secret, key_name="key-p384")
        for version in ("0.2.0", "1.1.1"):  # a model that is one file
            sign(version, venvs, "key", HERE / f"v{version}-key-single-file", secret,
                 single_file=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
