// Sentry's signature crypto (sentry/crypto.h) against keys, signatures and certificates made
// here with OpenSSL's own APIs: ECDSA round trips per curve, the DSSE spec's PAE example, bad and
// malformed signatures (false, never an exception), keys of other types and curves, encrypted
// PEMs, and certificate chains (good, untrusted root, expired, no signing key usage, ...).
#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <ctime>
#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../../csrc/crypto/openssl_ptr.h"
#include "sentry/crypto.h"

namespace {

using namespace sentry::crypto;

using Pkey = sentry::OpensslPtr<EVP_PKEY, EVP_PKEY_free>;
using Cert = sentry::OpensslPtr<X509, X509_free>;
using Bio = sentry::OpensslPtr<BIO, BIO_free_all>;

const Curve kCurves[] = {Curve::kP256, Curve::kP384, Curve::kP521};

std::string bio_text(BIO* bio) {
  char* p = nullptr;
  long n = BIO_get_mem_data(bio, &p);
  return std::string(p, static_cast<size_t>(n));
}

std::string public_pem(EVP_PKEY* key) {
  Bio bio(BIO_new(BIO_s_mem()));
  EXPECT_EQ(PEM_write_bio_PUBKEY(bio.get(), key), 1);
  return bio_text(bio.get());
}

std::string private_pem(EVP_PKEY* key) {
  Bio bio(BIO_new(BIO_s_mem()));
  EXPECT_EQ(PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr), 1);
  return bio_text(bio.get());
}

// Traditional "EC PRIVATE KEY" PEM, encrypted (Proc-Type: 4,ENCRYPTED) when password is given.
std::string traditional_pem(EVP_PKEY* key, const char* password) {
  Bio bio(BIO_new(BIO_s_mem()));
  const EVP_CIPHER* cipher = password ? EVP_aes_128_cbc() : nullptr;
  int len = password ? static_cast<int>(strlen(password)) : 0;
  EXPECT_EQ(PEM_write_bio_PrivateKey_traditional(
                bio.get(), key, cipher, reinterpret_cast<const unsigned char*>(password), len,
                nullptr, nullptr),
            1);
  return bio_text(bio.get());
}

Pkey ec_key(const char* group) { return Pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", group)); }

std::string der_sig(const BIGNUM* r, const BIGNUM* s) {
  ECDSA_SIG* sig = ECDSA_SIG_new();
  ECDSA_SIG_set0(sig, BN_dup(r), BN_dup(s));
  unsigned char* der = nullptr;
  int n = i2d_ECDSA_SIG(sig, &der);
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(n));
  OPENSSL_free(der);
  ECDSA_SIG_free(sig);
  return out;
}

// (r, s) of a DER signature.
std::pair<BIGNUM*, BIGNUM*> split_sig(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  ECDSA_SIG* sig = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size()));
  EXPECT_NE(sig, nullptr);
  BIGNUM* r = BN_dup(ECDSA_SIG_get0_r(sig));
  BIGNUM* s = BN_dup(ECDSA_SIG_get0_s(sig));
  ECDSA_SIG_free(sig);
  return {r, s};
}

BIGNUM* curve_order(int nid) {
  EC_GROUP* g = EC_GROUP_new_by_curve_name(nid);
  BIGNUM* n = BN_dup(EC_GROUP_get0_order(g));
  EC_GROUP_free(g);
  return n;
}

// ---------------------------------------------------------------------------------------------
// Keys and signatures
// ---------------------------------------------------------------------------------------------
TEST(Crypto, CurveNames) {
  EXPECT_STREQ(curve_name(Curve::kP256), "P-256");
  EXPECT_STREQ(curve_name(Curve::kP384), "P-384");
  EXPECT_STREQ(curve_name(Curve::kP521), "P-521");
  EXPECT_EQ(curve_from_name("P-384"), Curve::kP384);
  EXPECT_EQ(curve_from_name("prime256v1"), Curve::kP256);
  EXPECT_THROW(curve_from_name("P-224"), CryptoError);
  EXPECT_STREQ(curve_hash_name(Curve::kP521), "SHA-512");
}

TEST(Crypto, SignVerifyRoundTripEveryCurve) {
  for (Curve c : kCurves) {
    SCOPED_TRACE(curve_name(c));
    PrivateKey priv = PrivateKey::generate(c);
    EXPECT_EQ(priv.curve(), c);
    PublicKey pub = priv.public_key();
    EXPECT_EQ(pub.curve(), c);
    std::string data = "model weights \x00\x01\x02";
    std::string sig = priv.sign(data);
    EXPECT_TRUE(pub.verify(data, sig));
    EXPECT_TRUE(pub.verify(data, priv.sign(data)));  // random nonce: a second, different one
    EXPECT_FALSE(pub.verify(data + "x", sig));
    EXPECT_FALSE(pub.verify("", sig));
    std::string bad = sig;
    bad[bad.size() - 1] ^= 1;
    EXPECT_FALSE(pub.verify(data, bad));
    // Another key's signature.
    EXPECT_FALSE(PrivateKey::generate(c).public_key().verify(data, sig));
    // Empty data signs and verifies too.
    EXPECT_TRUE(pub.verify("", priv.sign("")));
    EXPECT_EQ(pub.raw_xy().size(), 2 * curve_coordinate_size(c));
  }
}

TEST(Crypto, VerifiesOpenSslSignaturesWithTheCurvesHash) {
  struct Case { const char* group; const EVP_MD* (*md)(); } cases[] = {
      {"P-256", EVP_sha256}, {"P-384", EVP_sha384}, {"P-521", EVP_sha512}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.group);
    Pkey key = ec_key(c.group);
    std::string data = "hello";
    auto sign_with = [&](const EVP_MD* md) {
      EVP_MD_CTX* ctx = EVP_MD_CTX_new();
      EVP_DigestSignInit(ctx, nullptr, md, nullptr, key.get());
      size_t n = 200;
      std::string sig(n, '\0');
      EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &n,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size());
      EVP_MD_CTX_free(ctx);
      sig.resize(n);
      return sig;
    };
    PublicKey pub = PublicKey::from_pem(public_pem(key.get()));
    EXPECT_TRUE(pub.verify(data, sign_with(c.md())));
    if (c.md != EVP_sha256) EXPECT_FALSE(pub.verify(data, sign_with(EVP_sha256())));
    else EXPECT_FALSE(pub.verify(data, sign_with(EVP_sha512())));
    // An explicit hash (model_signing v0.2 used SHA-256 on every curve): only that one.
    const std::string by_sha256 = sign_with(EVP_sha256()), by_sha512 = sign_with(EVP_sha512());
    EXPECT_TRUE(pub.verify(data, by_sha256, "SHA-256"));
    EXPECT_TRUE(pub.verify(data, by_sha512, "SHA-512"));
    EXPECT_FALSE(pub.verify(data, by_sha512, "SHA-256"));
    EXPECT_FALSE(pub.verify(data + "x", by_sha256, "SHA-256"));
    EXPECT_THROW(pub.verify(data, by_sha256, "MD5"), CryptoError);
  }
}

TEST(Crypto, MalformedSignaturesAreFalseNotErrors) {
  PrivateKey priv = PrivateKey::generate(Curve::kP256);
  PublicKey pub = priv.public_key();
  const std::string data = "payload";
  const std::string sig = priv.sign(data);
  ASSERT_TRUE(pub.verify(data, sig));
  auto [r, s] = split_sig(sig);
  BIGNUM* n = curve_order(NID_X9_62_prime256v1);
  BIGNUM* zero = BN_new();
  BN_zero(zero);
  BIGNUM* one = BN_new();
  BN_one(one);

  std::vector<std::pair<std::string, std::string>> bad;
  bad.push_back({"empty", ""});
  bad.push_back({"truncated by one", sig.substr(0, sig.size() - 1)});
  bad.push_back({"half", sig.substr(0, sig.size() / 2)});
  bad.push_back({"trailing zero byte", sig + std::string(1, '\0')});
  bad.push_back({"trailing garbage", sig + "garbage"});
  {  // SEQUENCE length in long form (0x81 len): BER, not DER
    std::string t = "\x30\x81";
    t += sig[1];
    t += sig.substr(2);
    bad.push_back({"non-minimal length", t});
  }
  {  // r with an extra leading zero byte
    int rlen = static_cast<unsigned char>(sig[3]);
    std::string t;
    t += '\x30';
    t += static_cast<char>(static_cast<unsigned char>(sig[1]) + 1);
    t += '\x02';
    t += static_cast<char>(rlen + 1);
    t += '\0';
    t += sig.substr(4);
    bad.push_back({"r with an extra leading zero", t});
  }
  {  // r as a negative INTEGER: its leading zero dropped
    int rlen = static_cast<unsigned char>(sig[3]);
    if (static_cast<unsigned char>(sig[4]) == 0 && rlen > 1) {
      std::string t;
      t += '\x30';
      t += static_cast<char>(static_cast<unsigned char>(sig[1]) - 1);
      t += '\x02';
      t += static_cast<char>(rlen - 1);
      t += sig.substr(5);
      bad.push_back({"negative r", t});
    }
  }
  bad.push_back({"wrong outer tag", std::string(1, '\x31') + sig.substr(1)});
  bad.push_back({"r = 0", der_sig(zero, s)});
  bad.push_back({"s = 0", der_sig(r, zero)});
  bad.push_back({"s = n", der_sig(r, n)});
  bad.push_back({"r = n", der_sig(n, s)});
  {
    BIGNUM* r_plus_n = BN_new();
    BN_add(r_plus_n, r, n);
    bad.push_back({"r + n (same residue, out of range)", der_sig(r_plus_n, s)});
    BN_free(r_plus_n);
  }
  bad.push_back({"r = s = 1", der_sig(one, one)});
  bad.push_back({"swapped r and s", der_sig(s, r)});
  bad.push_back({"1 MiB of zeros", std::string(1 << 20, '\0')});
  bad.push_back({"raw r||s instead of DER", std::string(64, '\x11')});
  for (const auto& [what, b] : bad) {
    SCOPED_TRACE(what);
    bool result = true;
    EXPECT_NO_THROW(result = pub.verify(data, b));
    EXPECT_FALSE(result);
  }

  // High S (n - s) is a valid ECDSA signature: ECDSA itself has no low-S rule.
  BIGNUM* high = BN_new();
  BN_sub(high, n, s);
  EXPECT_TRUE(pub.verify(data, der_sig(r, high)));
  BN_free(high);
  for (BIGNUM* b : {r, s, n, zero, one}) BN_free(b);
}

// r || s for batched verification: exactly OpenSSL's r and s, padded, for every curve; nothing
// for what PublicKey::verify refuses as encoding, nor for a negative or oversized r.
TEST(Crypto, DerSignatureToRaw) {
  for (Curve c : kCurves) {
    SCOPED_TRACE(curve_name(c));
    const std::string sig = PrivateKey::generate(c).sign("data");
    const auto raw = der_signature_to_raw(sig, c);
    ASSERT_TRUE(raw.has_value());
    const int size = static_cast<int>(curve_coordinate_size(c));
    ASSERT_EQ(raw->size(), 2u * size);
    auto [r, s] = split_sig(sig);
    std::string want(2 * size, '\0');
    BN_bn2binpad(r, reinterpret_cast<unsigned char*>(want.data()), size);
    BN_bn2binpad(s, reinterpret_cast<unsigned char*>(want.data()) + size, size);
    EXPECT_EQ(*raw, want);
    BN_free(r);
    BN_free(s);
  }
  const std::string sig = PrivateKey::generate(Curve::kP256).sign("data");
  auto [r, s] = split_sig(sig);
  BIGNUM* big = BN_new();  // r + 2^256: 33 bytes
  BN_set_bit(big, 256);
  BN_add(big, big, r);
  // r = -1 (OpenSSL will not encode a negative r, so by hand): 30 L 02 01 ff <s's INTEGER>.
  const std::string s_int = sig.substr(4 + static_cast<unsigned char>(sig[3]));
  const std::string negative_r = std::string("\x30") + static_cast<char>(3 + s_int.size()) +
                                 std::string("\x02\x01\xff", 3) + s_int;
  BIGNUM* zero = BN_new();
  for (const auto& [what, der, ok] : std::vector<std::tuple<std::string, std::string, bool>>{
           {"valid", sig, true},
           {"empty", "", false},
           {"trailing byte", sig + std::string(1, '\0'), false},
           {"long-form length", std::string("\x30\x81") + sig[1] + sig.substr(2), false},
           {"negative r", negative_r, false},
           {"r longer than 32 bytes", der_sig(big, s), false},
           {"r = 0 (a range question, left to the verifier)", der_sig(zero, s), true},
       }) {
    SCOPED_TRACE(what);
    EXPECT_EQ(der_signature_to_raw(der, Curve::kP256).has_value(), ok);
  }
  EXPECT_TRUE(der_signature_to_raw(der_sig(big, s), Curve::kP384).has_value());
  for (BIGNUM* b : {r, s, big, zero}) BN_free(b);
}

TEST(Crypto, DssePaeMatchesTheSpecExample) {
  EXPECT_EQ(dsse_pae("http://example.com/HelloWorld", "hello world"),
            "DSSEv1 29 http://example.com/HelloWorld 11 hello world");
  EXPECT_EQ(dsse_pae("", ""), "DSSEv1 0  0 ");
  std::string payload(1000, 'x');
  payload[3] = '\0';
  EXPECT_EQ(dsse_pae("t", payload), "DSSEv1 1 t 1000 " + payload);
}

TEST(Crypto, Sha256Hex) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Crypto, PublicKeyPemRoundTripAndHint) {
  for (const char* group : {"P-256", "P-384", "P-521"}) {
    Pkey key = ec_key(group);
    std::string pem = public_pem(key.get());
    PublicKey pub = PublicKey::from_pem(pem);
    EXPECT_EQ(pub.pem(), pem);
    EXPECT_EQ(pub.hint(), sha256_hex(pem));
    EXPECT_EQ(pub.hint().size(), 64u);
  }
}

TEST(Crypto, RawXyIsTheUncompressedPoint) {
  Pkey key = ec_key("P-384");
  unsigned char buf[200];
  size_t len = 0;
  ASSERT_EQ(EVP_PKEY_get_octet_string_param(key.get(), "encoded-pub-key", buf, sizeof buf, &len), 1);
  ASSERT_EQ(len, 97u);
  ASSERT_EQ(buf[0], 4);
  PublicKey pub = PublicKey::from_pem(public_pem(key.get()));
  EXPECT_EQ(pub.raw_xy(), std::string(reinterpret_cast<char*>(buf + 1), 96));
}

TEST(Crypto, CompressedPointKeyIsWrittenUncompressed) {
  Pkey key = ec_key("P-256");
  std::string uncompressed = public_pem(key.get());
  ASSERT_EQ(EVP_PKEY_set_utf8_string_param(key.get(), "point-format", "compressed"), 1);
  std::string compressed = public_pem(key.get());
  ASSERT_NE(compressed, uncompressed);
  EXPECT_EQ(PublicKey::from_pem(compressed).pem(), uncompressed);
}

TEST(Crypto, PrivateKeyPemRoundTrips) {
  for (Curve c : kCurves) {
    SCOPED_TRACE(curve_name(c));
    PrivateKey priv = PrivateKey::generate(c);
    std::string pem = priv.to_pem();
    EXPECT_NE(pem.find("-----BEGIN PRIVATE KEY-----"), std::string::npos);
    PrivateKey again = PrivateKey::from_pem(pem);
    EXPECT_EQ(again.public_key().pem(), priv.public_key().pem());
    EXPECT_TRUE(priv.public_key().verify("x", again.sign("x")));

    std::string enc = priv.to_pem(std::string("s3cret"));
    EXPECT_NE(enc.find("-----BEGIN ENCRYPTED PRIVATE KEY-----"), std::string::npos);
    EXPECT_EQ(PrivateKey::from_pem(enc, std::string("s3cret")).public_key().pem(),
              priv.public_key().pem());
  }
}

TEST(Crypto, EncryptedPemsNeedTheRightPassword) {
  PrivateKey priv = PrivateKey::generate(Curve::kP256);
  Pkey raw(EVP_PKEY_dup(priv.get()));
  const std::string pkcs8 = priv.to_pem(std::string("right"));
  const std::string trad = traditional_pem(raw.get(), "right");
  ASSERT_NE(trad.find("Proc-Type: 4,ENCRYPTED"), std::string::npos);
  ASSERT_NE(trad.find("-----BEGIN EC PRIVATE KEY-----"), std::string::npos);
  for (const std::string& pem : {pkcs8, trad}) {
    EXPECT_EQ(PrivateKey::from_pem(pem, std::string("right")).public_key().pem(),
              priv.public_key().pem());
    try {
      PrivateKey::from_pem(pem, std::string("wrong"));
      ADD_FAILURE() << "wrong password accepted";
    } catch (const CryptoError& e) {
      EXPECT_NE(std::string(e.what()).find("wrong password"), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find("right"), std::string::npos);
    }
    try {
      PrivateKey::from_pem(pem);
      ADD_FAILURE() << "encrypted key loaded without a password";
    } catch (const CryptoError& e) {
      EXPECT_NE(std::string(e.what()).find("password is needed"), std::string::npos) << e.what();
    }
  }
  // Unencrypted traditional key; a password for it is refused.
  const std::string plain = traditional_pem(raw.get(), nullptr);
  ASSERT_NE(plain.find("-----BEGIN EC PRIVATE KEY-----"), std::string::npos);
  EXPECT_EQ(PrivateKey::from_pem(plain).public_key().pem(), priv.public_key().pem());
  EXPECT_THROW(PrivateKey::from_pem(plain, std::string("pw")), CryptoError);
  EXPECT_THROW(priv.to_pem(std::string("")), CryptoError);
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no CryptoError; expected one mentioning '" << needle << "'";
  } catch (const ChainError& e) {
    ADD_FAILURE() << "ChainError where a CryptoError was expected: " << e.what();
  } catch (const CryptoError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Crypto, OtherKeyTypesAndCurvesAreRefused) {
  Pkey ed(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  Pkey rsa(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(1024)));
  Pkey k1 = ec_key("secp256k1");
  Pkey p224 = ec_key("P-224");
  ASSERT_TRUE(ed && rsa && k1 && p224);
  expect_error([&] { PublicKey::from_pem(public_pem(ed.get())); }, "ED25519");
  expect_error([&] { PrivateKey::from_pem(private_pem(ed.get())); }, "ED25519");
  expect_error([&] { PublicKey::from_pem(public_pem(rsa.get())); }, "RSA");
  expect_error([&] { PrivateKey::from_pem(private_pem(rsa.get())); }, "RSA");
  expect_error([&] { PublicKey::from_pem(public_pem(k1.get())); }, "secp256k1");
  expect_error([&] { PrivateKey::from_pem(private_pem(k1.get())); }, "secp256k1");
  expect_error([&] { PublicKey::from_pem(public_pem(p224.get())); }, "secp224r1");
}

TEST(Crypto, MalformedPemsAreErrors) {
  PrivateKey priv = PrivateKey::generate(Curve::kP256);
  std::string pub_pem = priv.public_key().pem();
  std::string priv_pem = priv.to_pem();
  expect_error([] { PublicKey::from_pem(""); }, "no PEM block found");
  expect_error([] { PublicKey::from_pem("garbage"); }, "no PEM block");
  expect_error([&] { PublicKey::from_pem(priv_pem); }, "it is a private key");
  expect_error([&] { PrivateKey::from_pem(pub_pem); }, "it is a public key");
  std::string broken = pub_pem;
  broken[40] = broken[40] == 'A' ? 'B' : 'A';  // a changed base64 character inside the key
  EXPECT_THROW(PublicKey::from_pem(broken), CryptoError);
  expect_error([&] { PrivateKey::from_pem(priv_pem.substr(0, priv_pem.size() / 2)); },
               "not a PEM private key");
  // The message never contains key material.
  try {
    PrivateKey::from_pem(priv_pem.substr(0, 100));
  } catch (const CryptoError& e) {
    std::string body = priv_pem.substr(28, 40);
    EXPECT_EQ(std::string(e.what()).find(body), std::string::npos);
  }
}

TEST(Crypto, NotOnCurvePublicKeyIsRefused) {
  // SPKI of a P-256 key with y changed: not a point on the curve.
  PrivateKey priv = PrivateKey::generate(Curve::kP256);
  unsigned char* der = nullptr;
  int n = i2d_PUBKEY(priv.get(), &der);
  std::string d(reinterpret_cast<char*>(der), static_cast<size_t>(n));
  OPENSSL_free(der);
  d[d.size() - 1] ^= 1;
  Bio bio(BIO_new(BIO_s_mem()));
  PEM_write_bio(bio.get(), "PUBLIC KEY", "", reinterpret_cast<const unsigned char*>(d.data()),
                static_cast<long>(d.size()));
  EXPECT_THROW(PublicKey::from_pem(bio_text(bio.get())), CryptoError);
}

// ---------------------------------------------------------------------------------------------
// Certificate chains
// ---------------------------------------------------------------------------------------------
constexpr long kDay = 86400;

struct CertSpec {
  std::string cn;
  long not_before = -kDay;  // seconds from now
  long not_after = 365 * kDay;
  std::vector<std::pair<int, std::string>> extensions;
};

Cert make_cert(EVP_PKEY* subject_key, const CertSpec& spec, X509* issuer, EVP_PKEY* issuer_key) {
  static long serial = 1;
  Cert cert(X509_new());
  X509_set_version(cert.get(), X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial++);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(spec.cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), spec.not_before);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), spec.not_after);
  X509_set_pubkey(cert.get(), subject_key);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer ? issuer : cert.get(), cert.get(), nullptr, nullptr, 0);
  for (const auto& [nid, value] : spec.extensions) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    EXPECT_NE(ext, nullptr) << value;
    X509_add_ext(cert.get(), ext, -1);
    X509_EXTENSION_free(ext);
  }
  EXPECT_GT(X509_sign(cert.get(), issuer_key ? issuer_key : subject_key, EVP_sha256()), 0);
  return cert;
}

std::string der(X509* cert) {
  unsigned char* p = nullptr;
  int n = i2d_X509(cert, &p);
  std::string out(reinterpret_cast<char*>(p), static_cast<size_t>(n));
  OPENSSL_free(p);
  return out;
}

const std::vector<std::pair<int, std::string>> kCaExt = {
    {NID_basic_constraints, "critical,CA:TRUE"},
    {NID_key_usage, "critical,keyCertSign,cRLSign"}};
const std::vector<std::pair<int, std::string>> kLeafExt = {
    {NID_basic_constraints, "CA:FALSE"}, {NID_key_usage, "critical,digitalSignature"}};

class Chain : public ::testing::Test {
 protected:
  void SetUp() override {
    root_key = ec_key("P-384");
    inter_key = ec_key("P-256");
    leaf_priv = std::make_unique<PrivateKey>(PrivateKey::generate(Curve::kP256));
    root = make_cert(root_key.get(), {"Sentry Test Root", -10 * kDay, 3650 * kDay, kCaExt},
                     nullptr, nullptr);
    inter = make_cert(inter_key.get(), {"Sentry Test Intermediate", -5 * kDay, 365 * kDay, kCaExt},
                      root.get(), root_key.get());
  }
  Cert leaf_with(CertSpec spec) {
    return make_cert(leaf_priv->get(), spec, inter.get(), inter_key.get());
  }
  PublicKey verify(X509* leaf, std::optional<int64_t> at = std::nullopt) {
    return verify_certificate_chain({der(leaf), der(inter.get())}, {der(root.get())}, at);
  }
  void expect_chain_error(const std::function<void()>& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "chain verified; expected a ChainError mentioning '" << needle << "'";
    } catch (const ChainError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    } catch (const CryptoError& e) {
      ADD_FAILURE() << "CryptoError where a ChainError was expected: " << e.what();
    }
  }
  Pkey root_key, inter_key;
  std::unique_ptr<PrivateKey> leaf_priv;
  Cert root, inter;
  const int64_t now = static_cast<int64_t>(std::time(nullptr));
};

TEST_F(Chain, GoodChainReturnsTheLeafKey) {
  Cert leaf = leaf_with({"signer", -kDay, 30 * kDay, kLeafExt});
  PublicKey key = verify(leaf.get());
  EXPECT_EQ(key.pem(), leaf_priv->public_key().pem());
  EXPECT_TRUE(key.verify("m", leaf_priv->sign("m")));
  EXPECT_EQ(verify(leaf.get(), now).pem(), key.pem());
  // The root may come along in the chain too.
  EXPECT_NO_THROW(verify_certificate_chain({der(leaf.get()), der(inter.get()), der(root.get())},
                                           {der(root.get())}, now));
  // Several roots, one of which is the right one.
  Pkey other = ec_key("P-256");
  Cert other_root = make_cert(other.get(), {"Other Root", -kDay, kDay, kCaExt}, nullptr, nullptr);
  EXPECT_NO_THROW(verify_certificate_chain({der(leaf.get()), der(inter.get())},
                                           {der(other_root.get()), der(root.get())}, now));
}

TEST_F(Chain, WrongRootFails) {
  Cert leaf = leaf_with({"signer", -kDay, 30 * kDay, kLeafExt});
  Pkey other = ec_key("P-256");
  Cert other_root = make_cert(other.get(), {"Other Root", -kDay, kDay, kCaExt}, nullptr, nullptr);
  expect_chain_error([&] {
    verify_certificate_chain({der(leaf.get()), der(inter.get())}, {der(other_root.get())});
  }, "unable to get local issuer certificate");
  // A root with the right name but another key.
  Cert impostor =
      make_cert(other.get(), {"Sentry Test Root", -10 * kDay, kDay, kCaExt}, nullptr, nullptr);
  expect_chain_error([&] {
    verify_certificate_chain({der(leaf.get()), der(inter.get())}, {der(impostor.get())});
  }, "certificate signature failure");
  // No roots at all.
  expect_chain_error([&] { verify_certificate_chain({der(leaf.get()), der(inter.get())}, {}); },
                     "no trusted root");
  // The intermediate as the only trust anchor: no partial chains (as the reference tool).
  expect_chain_error([&] {
    verify_certificate_chain({der(leaf.get())}, {der(inter.get())});
  }, "unable to get issuer certificate");
}

TEST_F(Chain, MissingIntermediateFails) {
  Cert leaf = leaf_with({"signer", -kDay, 30 * kDay, kLeafExt});
  expect_chain_error([&] { verify_certificate_chain({der(leaf.get())}, {der(root.get())}); },
                     "unable to get local issuer certificate");
}

TEST_F(Chain, ExpiredLeaf) {
  Cert leaf = leaf_with({"signer", -3 * kDay, -kDay, kLeafExt});
  // At a given time (now) it is expired ...
  expect_chain_error([&] { verify(leaf.get(), now); }, "certificate has expired");
  // ... but by default the chain is checked at the leaf's notBefore, as the reference tool does:
  // a signature made while the certificate was valid stays valid.
  EXPECT_NO_THROW(verify(leaf.get()));
  // Not valid yet at a time before its notBefore.
  expect_chain_error([&] { verify(leaf.get(), now - 4 * kDay); }, "certificate is not yet valid");
}

TEST_F(Chain, IntermediateExpiredWhenTheLeafWasIssuedFails) {
  Cert old_inter = make_cert(inter_key.get(),
                             {"Sentry Test Intermediate", -9 * kDay, -8 * kDay, kCaExt},
                             root.get(), root_key.get());
  Cert leaf = make_cert(leaf_priv->get(), {"signer", -2 * kDay, 30 * kDay, kLeafExt},
                        old_inter.get(), inter_key.get());
  expect_chain_error([&] {
    verify_certificate_chain({der(leaf.get()), der(old_inter.get())}, {der(root.get())});
  }, "certificate has expired");
}

TEST_F(Chain, KeyUsageRules) {
  // keyUsage without digitalSignature, no extendedKeyUsage: refused.
  Cert enc = leaf_with({"signer", -kDay, kDay, {{NID_key_usage, "critical,keyEncipherment"}}});
  expect_chain_error([&] { verify(enc.get()); }, "cannot be used for signing");
  // No key usage extensions at all: refused.
  Cert none = leaf_with({"signer", -kDay, kDay, {{NID_basic_constraints, "CA:FALSE"}}});
  expect_chain_error([&] { verify(none.get()); }, "cannot be used for signing");
  // extendedKeyUsage without codeSigning: refused.
  Cert server = leaf_with({"signer", -kDay, kDay, {{NID_ext_key_usage, "serverAuth"}}});
  expect_chain_error([&] { verify(server.get()); }, "cannot be used for signing");
  // extendedKeyUsage codeSigning alone: accepted.
  Cert code = leaf_with({"signer", -kDay, kDay, {{NID_ext_key_usage, "codeSigning"}}});
  EXPECT_NO_THROW(verify(code.get()));
  // keyUsage without digitalSignature but codeSigning: accepted (the reference tool's rule).
  Cert both = leaf_with({"signer", -kDay, kDay,
                         {{NID_key_usage, "keyEncipherment"}, {NID_ext_key_usage, "codeSigning"}}});
  EXPECT_NO_THROW(verify(both.get()));
  // digitalSignature with an extendedKeyUsage that lacks codeSigning: accepted (idem).
  Cert ds = leaf_with({"signer", -kDay, kDay,
                       {{NID_key_usage, "digitalSignature"}, {NID_ext_key_usage, "emailProtection"}}});
  EXPECT_NO_THROW(verify(ds.get()));
}

TEST_F(Chain, IntermediateThatIsNotACaFails) {
  Cert not_ca = make_cert(inter_key.get(),
                          {"Sentry Test Intermediate", -5 * kDay, kDay, kLeafExt}, root.get(),
                          root_key.get());
  Cert leaf = make_cert(leaf_priv->get(), {"signer", -kDay, kDay, kLeafExt}, not_ca.get(),
                        inter_key.get());
  expect_chain_error([&] {
    verify_certificate_chain({der(leaf.get()), der(not_ca.get())}, {der(root.get())});
  }, "invalid CA certificate");
}

TEST_F(Chain, MalformedDerAndUnsupportedLeafKeysAreFormatErrors) {
  Cert leaf = leaf_with({"signer", -kDay, kDay, kLeafExt});
  std::string d = der(leaf.get());
  expect_error([&] { verify_certificate_chain({}, {der(root.get())}); }, "chain is empty");
  expect_error([&] { verify_certificate_chain({d.substr(0, d.size() - 5)}, {der(root.get())}); },
               "not a DER X.509 certificate");
  expect_error([&] { verify_certificate_chain({d + "x"}, {der(root.get())}); },
               "1 bytes after the DER certificate");
  expect_error([&] { verify_certificate_chain({d, "junk"}, {der(root.get())}); },
               "certificate 1 of the chain");
  expect_error([&] { verify_certificate_chain({d}, {"junk"}); }, "trusted root certificate 0");
  // A valid chain whose leaf has an RSA key.
  Pkey rsa(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(1024)));
  Cert rsa_leaf = make_cert(rsa.get(), {"rsa signer", -kDay, kDay, kLeafExt}, inter.get(),
                            inter_key.get());
  expect_error([&] { verify(rsa_leaf.get()); }, "RSA");
}

TEST_F(Chain, CertificatesFromPem) {
  Bio bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), root.get());
  BIO_puts(bio.get(), "some text between blocks\n");
  PEM_write_bio_PUBKEY(bio.get(), root_key.get());  // skipped
  PEM_write_bio_X509(bio.get(), inter.get());
  std::vector<std::string> certs = certificates_from_pem(bio_text(bio.get()));
  ASSERT_EQ(certs.size(), 2u);
  EXPECT_EQ(certs[0], der(root.get()));
  EXPECT_EQ(certs[1], der(inter.get()));
  EXPECT_THROW(certificates_from_pem("no pem here"), CryptoError);
  EXPECT_THROW(certificates_from_pem(public_pem(root_key.get())), CryptoError);
}

}  // namespace
