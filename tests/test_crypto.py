"""sentry.crypto against independent references: Python `cryptography` (its own OpenSSL build)
for keys, signatures, PEM and certificates, the `openssl` CLI, and the OpenSSF Model Signing
tool's certificate rules re-run through pyOpenSSL exactly as its verifier does them."""
import datetime
import hashlib
import os
import shutil
import stat
import subprocess

import pytest

pytest.importorskip("cryptography", reason="the independent reference for these tests")

from cryptography import x509  # noqa: E402
from cryptography.exceptions import InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from sentry import crypto
from sentry.errors import FormatError, VerificationError

CURVES = {
    "P-256": (ec.SECP256R1(), hashes.SHA256(), 32),
    "P-384": (ec.SECP384R1(), hashes.SHA384(), 48),
    "P-521": (ec.SECP521R1(), hashes.SHA512(), 66),
}
ORDERS = {  # the group orders n (SEC 2 / FIPS 186-4)
    "P-256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "P-384": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
    "P-521": int(
        "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
}
PEM = serialization.Encoding.PEM
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


def crypt_pub_pem(key):
    return key.public_key().public_bytes(PEM, SPKI)


def crypt_priv_pem(key, fmt=serialization.PrivateFormat.PKCS8, password=None):
    enc = (serialization.BestAvailableEncryption(password) if password
           else serialization.NoEncryption())
    return key.private_bytes(PEM, fmt, enc)


# ---------------------------------------------------------------------------------------------
# Signatures, both directions
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("curve", list(CURVES))
def test_our_signatures_verify_with_cryptography(curve):
    ec_curve, h, _ = CURVES[curve]
    ours = crypto.PrivateKey.generate(curve)
    assert ours.curve == curve and ours.public_key().curve == curve
    theirs = serialization.load_pem_public_key(ours.public_key().pem())
    assert theirs.curve.name == ec_curve.name
    for data in (b"", b"hello", os.urandom(10000)):
        sig = ours.sign(data)
        theirs.verify(sig, data, ec.ECDSA(h))  # raises if invalid
        assert ours.public_key().verify(data, sig)
        with pytest.raises(InvalidSignature):
            theirs.verify(sig, data + b"!", ec.ECDSA(h))


@pytest.mark.parametrize("curve", list(CURVES))
def test_cryptography_signatures_verify_with_ours(curve):
    ec_curve, h, _ = CURVES[curve]
    key = ec.generate_private_key(ec_curve)
    pub = crypto.PublicKey.load(crypt_pub_pem(key))
    assert pub.curve == curve
    for data in (b"", b"x", os.urandom(5000)):
        sig = key.sign(data, ec.ECDSA(h))
        assert pub.verify(data, sig) is True
        assert pub.verify(data + b"x", sig) is False
        assert pub.verify(bytearray(data), memoryview(sig)) is True
    # Signatures with another hash than the curve's are not valid.
    other = hashes.SHA512() if curve != "P-521" else hashes.SHA256()
    assert pub.verify(b"x", key.sign(b"x", ec.ECDSA(other))) is False


def test_openssl_cli_signatures_verify_and_ours_verify_in_openssl(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI")
    key = crypto.PrivateKey.generate("P-384")
    crypto.write_private_key(tmp_path / "k.pem", key)
    crypto.write_public_key(tmp_path / "k.pub", key)
    (tmp_path / "data").write_bytes(b"model bytes")
    subprocess.run(["openssl", "dgst", "-sha384", "-sign", tmp_path / "k.pem", "-out",
                    tmp_path / "sig", tmp_path / "data"], check=True)
    assert key.public_key().verify(b"model bytes", (tmp_path / "sig").read_bytes())
    (tmp_path / "sig2").write_bytes(key.sign(b"model bytes"))
    out = subprocess.run(["openssl", "dgst", "-sha384", "-verify", tmp_path / "k.pub",
                          "-signature", tmp_path / "sig2", tmp_path / "data"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "Verified OK" in out.stdout


# ---------------------------------------------------------------------------------------------
# Bad signatures: False, never an exception
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("curve", list(CURVES))
def test_bad_signatures_are_false(curve):
    _, h, _ = CURVES[curve]
    n = ORDERS[curve]
    key = ec.generate_private_key(CURVES[curve][0])
    pub = crypto.PublicKey.load(crypt_pub_pem(key))
    data = b"payload"
    sig = key.sign(data, ec.ECDSA(h))
    r, s = decode_dss_signature(sig)
    other = ec.generate_private_key(CURVES[curve][0]).sign(data, ec.ECDSA(h))
    bad = {
        "empty": b"",
        "truncated": sig[:-1],
        "first half": sig[: len(sig) // 2],
        "trailing byte": sig + b"\x00",
        "another key's": other,
        "r = 0": encode_dss_signature(0, s),
        "s = 0": encode_dss_signature(r, 0),
        "r = n": encode_dss_signature(n, s),
        "s = n": encode_dss_signature(r, n),
        "r + n": encode_dss_signature(r + n, s),
        "r, s swapped": encode_dss_signature(s, r),
        "raw r||s": r.to_bytes(CURVES[curve][2], "big") + s.to_bytes(CURVES[curve][2], "big"),
        "huge": b"\x30" + b"\xff" * 100000,
        "BER long-form length": (b"\x30\x81" + sig[1:] if sig[1] < 0x80
                                 else b"\x30\x82\x00" + sig[2:]),
    }
    for what, b in bad.items():
        assert pub.verify(data, b) is False, what
    # High S: a valid ECDSA signature (ECDSA has no low-S rule); cryptography agrees.
    high = encode_dss_signature(r, n - s)
    key.public_key().verify(high, data, ec.ECDSA(h))
    assert pub.verify(data, high) is True


def test_verify_rejects_non_bytes():
    pub = crypto.PrivateKey.generate().public_key()
    with pytest.raises(TypeError):
        pub.verify("text", b"sig")
    with pytest.raises(TypeError):
        pub.verify(b"data", None)


# ---------------------------------------------------------------------------------------------
# Key formats
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("curve", list(CURVES))
@pytest.mark.parametrize("fmt", ["PKCS8", "TraditionalOpenSSL"])
@pytest.mark.parametrize("password", [None, b"correct horse"])
def test_cryptography_private_keys_load(curve, fmt, password):
    key = ec.generate_private_key(CURVES[curve][0])
    pem = crypt_priv_pem(key, getattr(serialization.PrivateFormat, fmt), password)
    marker = {"PKCS8": b"ENCRYPTED PRIVATE KEY" if password else b"BEGIN PRIVATE KEY",
              "TraditionalOpenSSL": b"BEGIN EC PRIVATE KEY"}[fmt]
    assert marker in pem
    ours = crypto.PrivateKey.load(pem, password=password)
    assert ours.curve == curve
    assert ours.public_key().pem() == crypt_pub_pem(key)
    key.public_key().verify(ours.sign(b"m"), b"m", ec.ECDSA(CURVES[curve][1]))
    if password:
        # str passwords are UTF-8.
        assert crypto.PrivateKey.load(pem, password=password.decode()).curve == curve
        with pytest.raises(FormatError, match="wrong password"):
            crypto.PrivateKey.load(pem, password=b"wrong")
        with pytest.raises(FormatError, match="password is needed"):
            crypto.PrivateKey.load(pem)
    else:
        with pytest.raises(FormatError, match="not encrypted"):
            crypto.PrivateKey.load(pem, password=b"unneeded")


@pytest.mark.parametrize("curve", list(CURVES))
def test_our_pems_load_in_cryptography(curve):
    ours = crypto.PrivateKey.generate(curve)
    theirs = serialization.load_pem_private_key(ours.to_pem(), None)
    assert crypt_pub_pem(theirs) == ours.public_key().pem()
    enc = ours.to_pem(password="pässword")
    assert b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in enc
    theirs = serialization.load_pem_private_key(enc, "pässword".encode())
    assert crypt_pub_pem(theirs) == ours.public_key().pem()
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(enc, b"wrong")
    pub = serialization.load_pem_public_key(ours.public_key().pem())
    assert pub.public_bytes(PEM, SPKI) == ours.public_key().pem()
    with pytest.raises(FormatError, match="empty"):
        ours.to_pem(password="")


@pytest.mark.parametrize("curve", list(CURVES))
def test_hint_and_pem_match_the_reference_tool(curve):
    # model_signing's sign_ec_key: hashlib.sha256(public_key.public_bytes(PEM, SPKI)).hexdigest()
    key = ec.generate_private_key(CURVES[curve][0])
    expected = hashlib.sha256(crypt_pub_pem(key)).digest().hex()
    pub = crypto.PublicKey.load(crypt_pub_pem(key))
    assert pub.pem() == crypt_pub_pem(key)
    assert pub.hint() == expected
    assert crypto.PrivateKey.load(crypt_priv_pem(key)).public_key().hint() == expected


@pytest.mark.parametrize("curve", list(CURVES))
def test_raw_xy(curve):
    key = ec.generate_private_key(CURVES[curve][0])
    size = CURVES[curve][2]
    nums = key.public_key().public_numbers()
    raw = crypto.PublicKey.load(crypt_pub_pem(key)).raw_xy()
    assert raw == nums.x.to_bytes(size, "big") + nums.y.to_bytes(size, "big")


def test_bad_keys_are_format_errors():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    k1 = ec.generate_private_key(ec.SECP256K1())
    p224 = ec.generate_private_key(ec.SECP224R1())
    cases = [
        (crypto.PublicKey.load, b"garbage", "no PEM block"),
        (crypto.PrivateKey.load, b"garbage", "no PEM block"),
        (crypto.PublicKey.load, b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
         "malformed"),
        (crypto.PublicKey.load, crypt_pub_pem(rsa_key), "RSA"),
        (crypto.PrivateKey.load, crypt_priv_pem(rsa_key), "RSA"),
        (crypto.PrivateKey.load, crypt_priv_pem(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL), "RSA"),
        (crypto.PublicKey.load, crypt_pub_pem(ed_key), "ED25519"),
        (crypto.PrivateKey.load, crypt_priv_pem(ed_key), "ED25519"),
        (crypto.PublicKey.load, crypt_pub_pem(k1), "secp256k1"),
        (crypto.PrivateKey.load, crypt_priv_pem(p224), "secp224r1"),
        (crypto.PublicKey.load, crypt_priv_pem(k1), "it is a private key"),
        (crypto.PrivateKey.load, crypt_pub_pem(k1), "it is a public key"),
    ]
    for load, pem, needle in cases:
        with pytest.raises(FormatError, match=needle):
            load(pem)
    with pytest.raises(FormatError, match="unsupported curve"):
        crypto.PrivateKey.generate("P-224")
    with pytest.raises(TypeError):
        crypto.PublicKey.load(12345)


def test_explicit_curve_parameters_are_refused(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI")
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-param_enc", "explicit",
                    "-genkey", "-noout", "-out", tmp_path / "k.pem"], check=True)
    subprocess.run(["openssl", "ec", "-in", tmp_path / "k.pem", "-pubout", "-out",
                    tmp_path / "p.pem"], check=True, capture_output=True)
    with pytest.raises(FormatError, match="explicit"):
        crypto.PrivateKey.load(tmp_path / "k.pem")
    with pytest.raises(FormatError, match="explicit"):
        crypto.PublicKey.load(tmp_path / "p.pem")


def test_load_from_paths_and_text(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "pub.pem").write_bytes(crypt_pub_pem(key))
    (tmp_path / "priv.pem").write_bytes(crypt_priv_pem(key, password=b"pw"))
    expected = crypt_pub_pem(key)
    assert crypto.PublicKey.load(tmp_path / "pub.pem").pem() == expected
    assert crypto.PublicKey.load(str(tmp_path / "pub.pem")).pem() == expected
    assert crypto.PublicKey.load(expected.decode()).pem() == expected
    assert crypto.PrivateKey.load(tmp_path / "priv.pem", password="pw").public_key().pem() == expected
    # Errors name the file.
    (tmp_path / "bad.pem").write_bytes(b"nope")
    with pytest.raises(FormatError, match="bad.pem"):
        crypto.PublicKey.load(tmp_path / "bad.pem")
    with pytest.raises(FormatError, match="priv.pem.*wrong password"):
        crypto.PrivateKey.load(tmp_path / "priv.pem", password="nope")
    with pytest.raises(FileNotFoundError):
        crypto.PublicKey.load(tmp_path / "missing.pem")
    pub = crypto.PublicKey.load(expected)
    assert crypto.PublicKey.load(pub) is pub
    assert pub == crypto.PublicKey.load(expected) and hash(pub) == hash(crypto.PublicKey.load(expected))


def test_private_key_repr_and_pickle_reveal_nothing():
    import pickle

    key = ec.generate_private_key(ec.SECP256R1())
    ours = crypto.PrivateKey.load(crypt_priv_pem(key))
    text = repr(ours) + str(ours)
    scalar = key.private_numbers().private_value
    assert format(scalar, "x") not in text and str(scalar) not in text
    assert "PRIVATE" not in text and "P-256" in text
    with pytest.raises(TypeError):
        pickle.dumps(ours)


def test_pae_matches_the_dsse_spec_example():
    assert crypto.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world")
    payload = "é".encode() * 3  # lengths are in bytes
    assert crypto.pae("application/vnd.in-toto+json", payload) == (
        b"DSSEv1 28 application/vnd.in-toto+json 6 " + payload)
    assert crypto.pae(b"", b"") == b"DSSEv1 0  0 "


# ---------------------------------------------------------------------------------------------
# Certificate chains (built with cryptography's x509 builder)
# ---------------------------------------------------------------------------------------------
NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
DAY = datetime.timedelta(days=1)


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def key_usage(**on):
    fields = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                  data_encipherment=False, key_agreement=False, key_cert_sign=False,
                  crl_sign=False, encipher_only=False, decipher_only=False)
    fields.update(on)
    return x509.KeyUsage(**fields)


def make_cert(subject_key, cn, issuer_cert=None, issuer_key=None, *, not_before=NOW - DAY,
              not_after=NOW + 30 * DAY, ca=False, ku=None, eku=None):
    b = (x509.CertificateBuilder()
         .subject_name(name(cn))
         .issuer_name(issuer_cert.subject if issuer_cert else name(cn))
         .public_key(subject_key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(not_before)
         .not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True)
    if ku is not None:
        b = b.add_extension(ku, critical=True)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(issuer_key or subject_key, hashes.SHA256())


def der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def pki():
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = make_cert(root_key, "Test Root", not_before=NOW - 100 * DAY,
                     not_after=NOW + 3650 * DAY, ca=True)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = make_cert(inter_key, "Test Intermediate", root, root_key, not_before=NOW - 50 * DAY,
                      not_after=NOW + 365 * DAY, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())

    def leaf(**kw):
        kw.setdefault("ku", key_usage(digital_signature=True))
        return make_cert(leaf_key, "Signer", inter, inter_key, **kw)

    class P:
        pass

    p = P()
    p.root_key, p.root, p.inter_key, p.inter, p.leaf_key, p.leaf = (
        root_key, root, inter_key, inter, leaf_key, leaf)
    return p


def reference_verify(chain_der, roots_der):
    """The OpenSSF Model Signing verifier's certificate checks (model_signing 1.x,
    _signing/sign_certificate.py, Verifier._verify_certificates), through pyOpenSSL as it does
    them. True when it accepts, False when it raises."""
    from OpenSSL import crypto as ossl

    store = ossl.X509Store()
    for r in roots_der:
        store.add_cert(ossl.X509.from_cryptography(x509.load_der_x509_certificate(r)))
    signing = x509.load_der_x509_certificate(chain_der[0])
    store.set_time(signing.not_valid_before_utc)
    ctx = ossl.X509StoreContext(
        store, ossl.X509.from_cryptography(signing),
        [ossl.X509.from_cryptography(x509.load_der_x509_certificate(c)) for c in chain_der[1:]])
    try:
        ctx.verify_certificate()
    except ossl.X509StoreContextError:
        return False
    ok = False
    try:
        ok = signing.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    except x509.ExtensionNotFound:
        pass
    if not ok:
        try:
            ok = ExtendedKeyUsageOID.CODE_SIGNING in (
                signing.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        except x509.ExtensionNotFound:
            pass
    return ok


def chain_scenarios(p):
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_root = make_cert(other_key, "Other Root", ca=True)
    impostor_root = make_cert(other_key, "Test Root", ca=True, not_before=NOW - 100 * DAY)
    old_inter = make_cert(p.inter_key, "Test Intermediate", p.root, p.root_key,
                          not_before=NOW - 90 * DAY, not_after=NOW - 80 * DAY, ca=True)
    leaf_of_old = make_cert(p.leaf_key, "Signer", old_inter, p.inter_key,
                            ku=key_usage(digital_signature=True))
    expired = p.leaf(not_before=NOW - 20 * DAY, not_after=NOW - 10 * DAY)
    root_der, inter_der = der(p.root), der(p.inter)
    return {
        # name: (chain, roots, expected to verify)
        "good": ([der(p.leaf()), inter_der], [root_der], True),
        "good, root included in chain": ([der(p.leaf()), inter_der, root_der], [root_der], True),
        "good, several roots": ([der(p.leaf()), inter_der], [der(other_root), root_der], True),
        "untrusted root": ([der(p.leaf()), inter_der], [der(other_root)], False),
        "impostor root (same name, other key)": ([der(p.leaf()), inter_der],
                                                 [der(impostor_root)], False),
        "missing intermediate": ([der(p.leaf())], [root_der], False),
        "intermediate as trust anchor (no partial chains)": ([der(p.leaf())], [inter_der], False),
        "expired leaf (valid at its notBefore)": ([der(expired), inter_der], [root_der], True),
        "intermediate expired before the leaf was issued": (
            [der(leaf_of_old), der(old_inter)], [root_der], False),
        "no key usage extensions": ([der(p.leaf(ku=None)), inter_der], [root_der], False),
        "keyUsage keyEncipherment only": (
            [der(p.leaf(ku=key_usage(key_encipherment=True))), inter_der], [root_der], False),
        "EKU serverAuth only": ([der(p.leaf(ku=None, eku=[ExtendedKeyUsageOID.SERVER_AUTH])),
                                 inter_der], [root_der], False),
        "EKU codeSigning only": ([der(p.leaf(ku=None, eku=[ExtendedKeyUsageOID.CODE_SIGNING])),
                                  inter_der], [root_der], True),
        "keyEncipherment + EKU codeSigning": (
            [der(p.leaf(ku=key_usage(key_encipherment=True),
                        eku=[ExtendedKeyUsageOID.CODE_SIGNING])), inter_der], [root_der], True),
        "digitalSignature + EKU emailProtection": (
            [der(p.leaf(eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION])), inter_der], [root_der],
            True),
    }


def test_chains_agree_with_the_reference_tool(pki):
    for what, (chain, roots, expected) in chain_scenarios(pki).items():
        assert reference_verify(chain, roots) is expected, f"reference tool: {what}"
        if expected:
            key = crypto.verify_certificate_chain(chain, roots)
            assert key.pem() == crypt_pub_pem(pki.leaf_key), what
        else:
            with pytest.raises(VerificationError):
                crypto.verify_certificate_chain(chain, roots)


def test_good_chain(pki, tmp_path):
    chain = [der(pki.leaf()), der(pki.inter)]
    key = crypto.verify_certificate_chain(chain, [der(pki.root)])
    assert isinstance(key, crypto.PublicKey) and key.curve == "P-256"
    assert key.hint() == hashlib.sha256(crypt_pub_pem(pki.leaf_key)).hexdigest()
    sig = pki.leaf_key.sign(b"m", ec.ECDSA(hashes.SHA256()))
    assert key.verify(b"m", sig)
    # Roots as a PEM bundle file, as PEM bytes, as a list of PEM and DER; times.
    pem_root = pki.root.public_bytes(PEM)
    other = make_cert(ec.generate_private_key(ec.SECP256R1()), "Other", ca=True)
    (tmp_path / "roots.pem").write_bytes(other.public_bytes(PEM) + b"\n" + pem_root)
    (tmp_path / "other.pem").write_bytes(other.public_bytes(PEM))
    (tmp_path / "root.pem").write_bytes(pem_root)
    for roots in (tmp_path / "roots.pem", str(tmp_path / "roots.pem"), pem_root,
                  pem_root.decode(), [pem_root], [der(other), der(pki.root)],
                  [tmp_path / "other.pem", str(tmp_path / "root.pem")]):
        assert crypto.verify_certificate_chain(chain, roots) == key
    assert crypto.verify_certificate_chain(chain, [pem_root], at_time=NOW) == key
    assert crypto.verify_certificate_chain(chain, [pem_root], at_time=NOW.timestamp()) == key
    naive = NOW.replace(tzinfo=None)
    assert crypto.verify_certificate_chain(chain, [pem_root], at_time=naive) == key
    # The chain's certificates may be PEM too.
    assert crypto.verify_certificate_chain(
        [pki.leaf().public_bytes(PEM), pki.inter.public_bytes(PEM)], [pem_root]) == key


def test_untrusted_root(pki):
    other = make_cert(ec.generate_private_key(ec.SECP256R1()), "Other", ca=True)
    with pytest.raises(VerificationError, match="unable to get local issuer certificate"):
        crypto.verify_certificate_chain([der(pki.leaf()), der(pki.inter)], [der(other)])
    with pytest.raises(VerificationError, match="no trusted root"):
        crypto.verify_certificate_chain([der(pki.leaf()), der(pki.inter)], [])
    # The intermediate alone is no trust anchor (no partial chains, as the reference tool).
    with pytest.raises(VerificationError, match="unable to get issuer certificate"):
        crypto.verify_certificate_chain([der(pki.leaf())], [der(pki.inter)])


def test_expired_leaf(pki):
    expired = pki.leaf(not_before=NOW - 20 * DAY, not_after=NOW - 10 * DAY)
    chain = [der(expired), der(pki.inter)]
    with pytest.raises(VerificationError, match="certificate has expired"):
        crypto.verify_certificate_chain(chain, [der(pki.root)], at_time=NOW)
    # Not valid yet before its notBefore.
    with pytest.raises(VerificationError, match="not yet valid"):
        crypto.verify_certificate_chain(chain, [der(pki.root)], at_time=NOW - 30 * DAY)
    # By default the time is the leaf's notBefore (the reference tool's rule): it verifies.
    assert crypto.verify_certificate_chain(chain, [der(pki.root)]).pem() == crypt_pub_pem(pki.leaf_key)


def test_missing_key_usage(pki):
    with pytest.raises(VerificationError, match="cannot be used for signing"):
        crypto.verify_certificate_chain([der(pki.leaf(ku=None)), der(pki.inter)], [der(pki.root)])
    with pytest.raises(VerificationError, match="cannot be used for signing"):
        crypto.verify_certificate_chain(
            [der(pki.leaf(ku=key_usage(key_agreement=True))), der(pki.inter)], [der(pki.root)])


def test_malformed_certificates_and_unsupported_leaf_keys(pki, tmp_path):
    good = der(pki.leaf())
    with pytest.raises(FormatError, match="not a DER X.509"):
        crypto.verify_certificate_chain([good[:-3], der(pki.inter)], [der(pki.root)])
    with pytest.raises(FormatError, match="bytes after the DER"):
        crypto.verify_certificate_chain([good + b"\0", der(pki.inter)], [der(pki.root)])
    with pytest.raises(FormatError, match="chain is empty"):
        crypto.verify_certificate_chain([], [der(pki.root)])
    with pytest.raises(TypeError):
        crypto.verify_certificate_chain(good, [der(pki.root)])
    (tmp_path / "empty.pem").write_bytes(b"no certificates here")
    with pytest.raises(FormatError, match="empty.pem"):
        crypto.verify_certificate_chain([good, der(pki.inter)], tmp_path / "empty.pem")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    rsa_leaf = make_cert(rsa_key, "RSA signer", pki.inter, pki.inter_key,
                         ku=key_usage(digital_signature=True))
    with pytest.raises(FormatError, match="RSA"):
        crypto.verify_certificate_chain([der(rsa_leaf), der(pki.inter)], [der(pki.root)])


# ---------------------------------------------------------------------------------------------
# Key files
# ---------------------------------------------------------------------------------------------
def test_write_private_key_mode_and_round_trip(tmp_path):
    key = crypto.PrivateKey.generate("P-384")
    path = tmp_path / "signing.key"
    crypto.write_private_key(path, key, password="pw")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert crypto.PrivateKey.load(path, password="pw").public_key() == key.public_key()
    crypto.write_public_key(tmp_path / "signing.pub", key)
    assert stat.S_IMODE(os.stat(tmp_path / "signing.pub").st_mode) == 0o644
    assert crypto.PublicKey.load(tmp_path / "signing.pub") == key.public_key()
    # Overwrites an existing (even world-readable) file, and leaves no temporary files.
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    crypto.write_private_key(path, key)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert crypto.PrivateKey.load(path).public_key() == key.public_key()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signing.key", "signing.pub"]


def test_write_private_key_is_atomic(tmp_path, monkeypatch):
    key = crypto.PrivateKey.generate()
    path = tmp_path / "k.pem"
    path.write_bytes(b"previous content")
    seen = {}
    real_replace = os.replace

    def failing_replace(src, dst):
        # The temporary file is in the target's directory, complete and private, before the rename.
        seen["dir"] = os.path.dirname(os.path.abspath(src))
        seen["mode"] = stat.S_IMODE(os.stat(src).st_mode)
        seen["data"] = open(src, "rb").read()
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        crypto.write_private_key(path, key)
    assert seen["dir"] == str(tmp_path) and seen["mode"] == 0o600
    assert seen["data"] == key.to_pem()
    assert path.read_bytes() == b"previous content"  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["k.pem"]  # temporary file removed
    monkeypatch.setattr(os, "replace", real_replace)
    crypto.write_private_key(path, key)
    assert crypto.PrivateKey.load(path).public_key() == key.public_key()
