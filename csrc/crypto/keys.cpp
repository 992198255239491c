// Sentry's signature crypto through OpenSSL 3 (see sentry/crypto.h for the contract).
//
// Every OpenSSL object is owned by a unique_ptr (or a shared_ptr for keys, which the key
// classes share on copy). Errors become CryptoError messages that say what is wrong, with
// OpenSSL's reason string where it helps; the OpenSSL error queue is cleared on every path so
// that a stale error never shows up in a later message. Nothing here prints, logs, or puts key
// material (PEM, DER of private keys, passwords) in a message.
#include "crypto.h"
#include "openssl_ptr.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <climits>
#include <cstring>
#include <ctime>

namespace sentry::crypto {
namespace {

// ---------------------------------------------------------------------------------------------
// RAII
// ---------------------------------------------------------------------------------------------
using BioPtr = OpensslPtr<BIO, BIO_free_all>;
using PkeyPtr = OpensslPtr<EVP_PKEY, EVP_PKEY_free>;
using PkeyCtxPtr = OpensslPtr<EVP_PKEY_CTX, EVP_PKEY_CTX_free>;
using MdCtxPtr = OpensslPtr<EVP_MD_CTX, EVP_MD_CTX_free>;
using X509Ptr = OpensslPtr<X509, X509_free>;
using StorePtr = OpensslPtr<X509_STORE, X509_STORE_free>;
using StoreCtxPtr = OpensslPtr<X509_STORE_CTX, X509_STORE_CTX_free>;
using EcdsaSigPtr = OpensslPtr<ECDSA_SIG, ECDSA_SIG_free>;
using BnPtr = OpensslPtr<BIGNUM, BN_free>;

struct X509StackDeleter {
  void operator()(STACK_OF(X509) * s) const { sk_X509_pop_free(s, X509_free); }
};
using X509StackPtr = std::unique_ptr<STACK_OF(X509), X509StackDeleter>;

struct OpensslFree {  // for buffers OpenSSL allocates (i2d_*, PEM_read_bio)
  void operator()(void* p) const { OPENSSL_free(p); }
};
template <class T>
using OsslBuf = std::unique_ptr<T, OpensslFree>;

std::shared_ptr<EVP_PKEY> share(PkeyPtr key) {
  return std::shared_ptr<EVP_PKEY>(key.release(), EVP_PKEY_free);
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

// OpenSSL's reason for the most recent error, as ": reason" (empty when there is none), and
// clears the queue.
std::string openssl_reason() {
  unsigned long last = 0;
  for (unsigned long e; (e = ERR_get_error()) != 0;) last = e;
  ERR_clear_error();
  if (last == 0) return "";
  const char* reason = ERR_reason_error_string(last);
  if (reason != nullptr) return std::string(": ") + reason;
  char buf[256];
  ERR_error_string_n(last, buf, sizeof buf);
  return std::string(": ") + buf;
}

[[noreturn]] void fail(const std::string& what) { throw CryptoError(what + openssl_reason()); }

// Clears OpenSSL's error queue when a scope ends, whatever happened in it.
struct ClearErrorsOnExit {
  ClearErrorsOnExit() { ERR_clear_error(); }
  ~ClearErrorsOnExit() { ERR_clear_error(); }
};

BioPtr read_bio(std::string_view data, const char* what) {
  if (data.size() > static_cast<std::size_t>(INT_MAX)) {
    throw CryptoError(std::string(what) + " is too large (" + std::to_string(data.size()) +
                      " bytes)");
  }
  BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  if (!bio) fail("out of memory");
  return bio;
}

std::string bio_string(BIO* bio) {
  char* p = nullptr;
  long n = BIO_get_mem_data(bio, &p);
  if (n < 0 || (n > 0 && p == nullptr)) fail("cannot read OpenSSL's memory buffer");
  return std::string(p, static_cast<std::size_t>(n));
}

// Why a PEM text did not load as a public (want_public) or private key, in words, for the
// message: what it holds instead, or that its key block is malformed (then with OpenSSL's reason).
std::string pem_problem(std::string_view pem, bool want_public, const std::string& reason) {
  auto has = [&](std::string_view s) { return pem.find(s) != std::string_view::npos; };
  if (!has("-----BEGIN ")) return ": no PEM block found";
  const bool is_public = has("-----BEGIN PUBLIC KEY-----");
  const bool is_private = has("PRIVATE KEY-----");
  if (want_public ? is_public : is_private) return ": the key block is malformed" + reason;
  if (has("-----BEGIN CERTIFICATE-----")) return ": it is a certificate";
  if (is_public) return ": it is a public key";
  if (has("-----BEGIN RSA PUBLIC KEY-----")) return ": it is an RSA public key";
  if (is_private) return ": it is a private key";
  return reason;
}

// ---------------------------------------------------------------------------------------------
// Curves and keys
// ---------------------------------------------------------------------------------------------
const EVP_MD* curve_md(Curve c) {
  switch (c) {
    case Curve::kP256: return EVP_sha256();
    case Curve::kP384: return EVP_sha384();
    case Curve::kP521: return EVP_sha512();
  }
  throw CryptoError("unknown curve");
}

// The curve of an EC key on P-256/384/521 with named-curve parameters; CryptoError naming the
// key type or curve otherwise. `what` names the key in messages ("public key", ...).
Curve supported_curve(EVP_PKEY* key, const std::string& what) {
  if (EVP_PKEY_is_a(key, "EC") != 1) {
    const char* type = EVP_PKEY_get0_type_name(key);
    ERR_clear_error();
    throw CryptoError(what + " is not an EC key (key type " + (type ? type : "unknown") +
                      "); Sentry signs with ECDSA keys on P-256, P-384 or P-521");
  }
  char encoding[32] = {0};
  std::size_t len = 0;
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_EC_ENCODING, encoding, sizeof encoding,
                                     &len) == 1 &&
      std::strcmp(encoding, OSSL_PKEY_EC_ENCODING_EXPLICIT) == 0) {
    ERR_clear_error();
    throw CryptoError(what + " has explicit EC curve parameters; only named curves (P-256, "
                             "P-384, P-521) are supported");
  }
  char group[80] = {0};
  if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                     &len) != 1) {
    ERR_clear_error();
    throw CryptoError(what + " is an EC key without a named curve; only P-256, P-384 and "
                             "P-521 are supported");
  }
  try {
    return curve_from_name(group);
  } catch (const CryptoError&) {
    throw CryptoError(what + " is an EC key on curve " + group +
                      "; only P-256, P-384 and P-521 are supported");
  }
}

// Writes public points uncompressed from now on (pem() then matches what Python cryptography
// writes for the same key, so the hints agree).
void set_uncompressed(EVP_PKEY* key) {
  if (EVP_PKEY_set_utf8_string_param(key, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                     OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_UNCOMPRESSED) != 1) {
    fail("cannot set the EC point format");
  }
}

// A fresh key object holding only the public half of `key` (SubjectPublicKeyInfo round trip).
PkeyPtr public_copy(EVP_PKEY* key, const std::string& what) {
  unsigned char* der = nullptr;
  int n = i2d_PUBKEY(key, &der);
  if (n <= 0) fail("cannot encode the " + what);
  OsslBuf<unsigned char> owned(der);
  const unsigned char* p = der;
  PkeyPtr pub(d2i_PUBKEY(nullptr, &p, n));
  if (!pub) fail("cannot decode the " + what);
  return pub;
}

int no_password_cb(char*, int, int, void*) { return -1; }

// Fixed-length big-endian bytes of a BIGNUM parameter of key.
std::string bn_param(EVP_PKEY* key, const char* name, std::size_t size) {
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &raw) != 1) fail(std::string("cannot read ") + name);
  BnPtr bn(raw);
  std::string out(size, '\0');
  if (BN_bn2binpad(bn.get(), reinterpret_cast<unsigned char*>(out.data()),
                   static_cast<int>(size)) != static_cast<int>(size)) {
    fail(std::string("cannot encode ") + name);
  }
  return out;
}

// Strict DER parse of an ECDSA-Sig-Value: it must parse with nothing left over and re-encode to
// the same bytes; null otherwise. OpenSSL 3's ECDSA verification does this too; checking here as
// well keeps the rule whatever provider does the verification.
EcdsaSigPtr parse_strict_der_signature(std::string_view sig) {
  if (sig.empty() || sig.size() > 256) return nullptr;  // P-521's longest is 139 bytes
  const auto* begin = reinterpret_cast<const unsigned char*>(sig.data());
  const unsigned char* p = begin;
  EcdsaSigPtr parsed(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size())));
  if (!parsed || p != begin + sig.size()) return nullptr;
  unsigned char* der = nullptr;
  int n = i2d_ECDSA_SIG(parsed.get(), &der);
  if (n <= 0) return nullptr;
  OsslBuf<unsigned char> owned(der);
  if (static_cast<std::size_t>(n) != sig.size() || std::memcmp(der, begin, sig.size()) != 0) {
    return nullptr;
  }
  return parsed;
}

bool is_strict_der_signature(std::string_view sig) {
  return parse_strict_der_signature(sig) != nullptr;
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {  // H. Hinnant's
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

std::int64_t asn1_time_to_unix(const ASN1_TIME* t, const std::string& what) {
  std::tm tm{};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) fail("cannot read " + what);
  return days_from_civil(tm.tm_year + 1900, static_cast<unsigned>(tm.tm_mon + 1),
                         static_cast<unsigned>(tm.tm_mday)) *
             86400 +
         tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec;
}

std::string unix_time_text(std::int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  if (gmtime_r(&tt, &tm) == nullptr) return std::to_string(t);
  char buf[32];
  if (std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) return std::to_string(t);
  return buf;
}

std::string subject_text(X509* cert) {
  if (cert == nullptr) return "";
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) return "";
  if (X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0) {
    return "";
  }
  try {
    return bio_string(bio.get());
  } catch (const CryptoError&) {
    return "";
  }
}

X509Ptr parse_der_certificate(const std::string& der, const std::string& what) {
  if (der.empty()) throw CryptoError(what + " is empty");
  if (der.size() > static_cast<std::size_t>(LONG_MAX)) throw CryptoError(what + " is too large");
  const auto* begin = reinterpret_cast<const unsigned char*>(der.data());
  const unsigned char* p = begin;
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert) fail(what + " is not a DER X.509 certificate");
  if (p != begin + der.size()) {
    throw CryptoError(what + " has " + std::to_string(begin + der.size() - p) +
                      " bytes after the DER certificate");
  }
  return cert;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Curves
// ---------------------------------------------------------------------------------------------
const char* curve_name(Curve curve) {
  switch (curve) {
    case Curve::kP256: return "P-256";
    case Curve::kP384: return "P-384";
    case Curve::kP521: return "P-521";
  }
  return "unknown";
}

Curve curve_from_name(std::string_view name) {
  if (name == "P-256" || name == "prime256v1" || name == "secp256r1") return Curve::kP256;
  if (name == "P-384" || name == "secp384r1") return Curve::kP384;
  if (name == "P-521" || name == "secp521r1") return Curve::kP521;
  throw CryptoError("unsupported curve '" + std::string(name) +
                    "': use P-256, P-384 or P-521");
}

const char* curve_hash_name(Curve curve) {
  switch (curve) {
    case Curve::kP256: return "SHA-256";
    case Curve::kP384: return "SHA-384";
    case Curve::kP521: return "SHA-512";
  }
  return "unknown";
}

std::size_t curve_coordinate_size(Curve curve) {
  switch (curve) {
    case Curve::kP256: return 32;
    case Curve::kP384: return 48;
    case Curve::kP521: return 66;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// PublicKey
// ---------------------------------------------------------------------------------------------
PublicKey PublicKey::from_evp(EVP_PKEY* key) {
  ClearErrorsOnExit clear;
  if (key == nullptr) throw CryptoError("public key is null");
  PkeyPtr pub = public_copy(key, "public key");
  Curve curve = supported_curve(pub.get(), "public key");
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pub.get(), nullptr));
  if (!ctx) fail("out of memory");
  if (EVP_PKEY_public_check(ctx.get()) != 1) fail("public key is not a valid point on its curve");
  set_uncompressed(pub.get());
  return PublicKey(share(std::move(pub)), curve);
}

PublicKey PublicKey::from_pem(std::string_view pem) {
  ClearErrorsOnExit clear;
  BioPtr bio = read_bio(pem, "public key PEM");
  PkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, no_password_cb, nullptr));
  if (!key) {
    std::string reason = openssl_reason();
    throw CryptoError("not a PEM public key (SubjectPublicKeyInfo, \"-----BEGIN PUBLIC "
                      "KEY-----\")" +
                      pem_problem(pem, true, reason));
  }
  return from_evp(key.get());
}

std::string PublicKey::pem() const {
  ClearErrorsOnExit clear;
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio) fail("out of memory");
  if (PEM_write_bio_PUBKEY(bio.get(), key_.get()) != 1) fail("cannot write the public key PEM");
  return bio_string(bio.get());
}

std::string PublicKey::hint() const { return sha256_hex(pem()); }

namespace {
const EVP_MD* hash_md(std::string_view name) {
  if (name == "SHA-256") return EVP_sha256();
  if (name == "SHA-384") return EVP_sha384();
  if (name == "SHA-512") return EVP_sha512();
  throw CryptoError("unknown hash '" + std::string(name) + "'; use SHA-256, SHA-384 or SHA-512");
}

bool verify_with(EVP_PKEY* key, const EVP_MD* md, std::string_view data,
                 std::string_view der_signature) {
  ClearErrorsOnExit clear;
  // The longest DER signature on P-521 is 139 bytes; anything far longer is not one.
  if (!is_strict_der_signature(der_signature)) return false;
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx) return false;
  if (EVP_DigestVerifyInit(ctx.get(), nullptr, md, nullptr, key) != 1) {
    return false;
  }
  int rc = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(der_signature.data()),
                            der_signature.size(),
                            reinterpret_cast<const unsigned char*>(data.data()), data.size());
  return rc == 1;
}
}  // namespace

bool PublicKey::verify(std::string_view data, std::string_view der_signature) const {
  return verify_with(key_.get(), curve_md(curve_), data, der_signature);
}

bool PublicKey::verify(std::string_view data, std::string_view der_signature,
                       std::string_view hash_name) const {
  return verify_with(key_.get(), hash_md(hash_name), data, der_signature);
}

std::string PublicKey::raw_xy() const {
  ClearErrorsOnExit clear;
  std::size_t size = curve_coordinate_size(curve_);
  return bn_param(key_.get(), OSSL_PKEY_PARAM_EC_PUB_X, size) +
         bn_param(key_.get(), OSSL_PKEY_PARAM_EC_PUB_Y, size);
}

std::optional<std::string> der_signature_to_raw(std::string_view der_signature, Curve curve) {
  ClearErrorsOnExit clear;
  const EcdsaSigPtr sig = parse_strict_der_signature(der_signature);
  if (!sig) return std::nullopt;
  const BIGNUM *r = nullptr, *s = nullptr;
  ECDSA_SIG_get0(sig.get(), &r, &s);
  // BN_bn2binpad writes a negative number's magnitude: refuse those rather than flip a sign.
  if (BN_is_negative(r) || BN_is_negative(s)) return std::nullopt;
  const int size = static_cast<int>(curve_coordinate_size(curve));
  std::string out(2 * static_cast<std::size_t>(size), '\0');
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  if (BN_bn2binpad(r, p, size) != size || BN_bn2binpad(s, p + size, size) != size) {
    return std::nullopt;  // longer than the curve's coordinates
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// PrivateKey
// ---------------------------------------------------------------------------------------------
namespace {
struct PasswordState {
  const std::optional<std::string>* password;
  bool asked = false;
  bool too_long = false;
};

int password_cb(char* buf, int size, int /*rwflag*/, void* u) {
  auto* state = static_cast<PasswordState*>(u);
  state->asked = true;
  if (!state->password->has_value()) return -1;
  const std::string& pw = **state->password;
  if (size < 0 || pw.size() > static_cast<std::size_t>(size)) {
    state->too_long = true;
    return -1;
  }
  std::memcpy(buf, pw.data(), pw.size());
  return static_cast<int>(pw.size());
}
}  // namespace

PrivateKey PrivateKey::from_pem(std::string_view pem, const std::optional<std::string>& password) {
  ClearErrorsOnExit clear;
  BioPtr bio = read_bio(pem, "private key PEM");
  PasswordState state{&password};
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, password_cb, &state));
  if (!key) {
    std::string reason = openssl_reason();
    if (state.asked && !password) {
      throw CryptoError("the private key is encrypted: a password is needed");
    }
    if (state.too_long) throw CryptoError("the password is too long");
    if (state.asked) {
      throw CryptoError("wrong password for the encrypted private key (or the key is corrupt)" +
                        reason);
    }
    throw CryptoError("not a PEM private key (PKCS#8 \"PRIVATE KEY\", \"ENCRYPTED PRIVATE KEY\" "
                      "or \"EC PRIVATE KEY\")" +
                      pem_problem(pem, false, reason));
  }
  if (password && !state.asked) {
    throw CryptoError("a password was given but the private key is not encrypted");
  }
  Curve curve = supported_curve(key.get(), "private key");
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
  if (!ctx) fail("out of memory");
  // Full check: the private scalar is in range and matches the public point.
  if (EVP_PKEY_check(ctx.get()) != 1) fail("the private key is not a consistent EC key pair");
  set_uncompressed(key.get());
  return PrivateKey(share(std::move(key)), curve);
}

PrivateKey PrivateKey::generate(Curve curve) {
  ClearErrorsOnExit clear;
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", curve_name(curve)));
  if (!key) fail(std::string("cannot generate a ") + curve_name(curve) + " key");
  set_uncompressed(key.get());
  return PrivateKey(share(std::move(key)), curve);
}

std::string PrivateKey::to_pem(const std::optional<std::string>& password) const {
  ClearErrorsOnExit clear;
  BioPtr bio(BIO_new(BIO_s_secmem()));
  if (!bio) fail("out of memory");
  int ok;
  if (password) {
    if (password->empty()) throw CryptoError("the password is empty");
    if (password->size() > static_cast<std::size_t>(INT_MAX)) {
      throw CryptoError("the password is too long");
    }
    ok = PEM_write_bio_PrivateKey(bio.get(), key_.get(), EVP_aes_256_cbc(),
                                  reinterpret_cast<const unsigned char*>(password->data()),
                                  static_cast<int>(password->size()), nullptr, nullptr);
  } else {
    ok = PEM_write_bio_PrivateKey(bio.get(), key_.get(), nullptr, nullptr, 0, nullptr, nullptr);
  }
  if (ok != 1) fail("cannot write the private key PEM");
  return bio_string(bio.get());
}

PublicKey PrivateKey::public_key() const { return PublicKey::from_evp(key_.get()); }

std::string PrivateKey::sign(std::string_view data) const {
  ClearErrorsOnExit clear;
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx) fail("out of memory");
  if (EVP_DigestSignInit(ctx.get(), nullptr, curve_md(curve_), nullptr, key_.get()) != 1) {
    fail("cannot start signing");
  }
  int max = EVP_PKEY_get_size(key_.get());
  if (max <= 0) fail("cannot size the signature");
  std::string sig(static_cast<std::size_t>(max), '\0');
  std::size_t len = sig.size();
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1) {
    fail("signing failed");
  }
  sig.resize(len);
  return sig;
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------
std::string dsse_pae(std::string_view payload_type, std::string_view payload) {
  std::string out = "DSSEv1 ";
  out += std::to_string(payload_type.size());
  out += ' ';
  out += payload_type;
  out += ' ';
  out += std::to_string(payload.size());
  out += ' ';
  out += payload;
  return out;
}

std::string sha256_hex(std::string_view data) {
  ClearErrorsOnExit clear;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) {
    fail("SHA-256 failed");
  }
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(2 * len);
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

std::vector<std::string> certificates_from_pem(std::string_view pem) {
  ClearErrorsOnExit clear;
  BioPtr bio = read_bio(pem, "certificate PEM");
  std::vector<std::string> out;
  for (std::size_t block = 0;; ++block) {
    char* name_raw = nullptr;
    char* header_raw = nullptr;
    unsigned char* data_raw = nullptr;
    long len = 0;
    if (PEM_read_bio(bio.get(), &name_raw, &header_raw, &data_raw, &len) != 1) {
      unsigned long err = ERR_peek_last_error();
      if (ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE) break;
      fail("PEM block " + std::to_string(block + 1) + " is malformed");
    }
    OsslBuf<char> name(name_raw), header(header_raw);
    OsslBuf<unsigned char> data(data_raw);
    // Other blocks (keys, parameters) are skipped, as OpenSSL's own certificate readers do.
    if (std::strcmp(name.get(), PEM_STRING_X509) != 0 &&
        std::strcmp(name.get(), PEM_STRING_X509_OLD) != 0) {
      continue;
    }
    std::string der(reinterpret_cast<const char*>(data.get()), static_cast<std::size_t>(len));
    parse_der_certificate(der, "certificate " + std::to_string(out.size() + 1) + " of the PEM");
    out.push_back(std::move(der));
  }
  if (out.empty()) throw CryptoError("no PEM certificate (\"-----BEGIN CERTIFICATE-----\") found");
  return out;
}

// ---------------------------------------------------------------------------------------------
// Certificate chains
//
// What the reference OpenSSF Model Signing tool (model_signing 1.x,
// _signing/sign_certificate.py, Verifier._verify_certificates) does, and what this matches:
//  - trust anchors: every certificate it was given (its X509Store), and nothing else (it falls
//    back to certifi's bundle when given none; we refuse an empty root list instead);
//  - chain: bundle certificates[0] is the signing certificate, certificates[1:] are untrusted
//    intermediates (X509StoreContext(store, leaf, chain)), verified by OpenSSL's
//    X509_verify_cert with the store's default parameters: no purpose, no policy, no extra
//    flags (no X509_V_FLAG_PARTIAL_CHAIN: the chain must end at a self-signed trusted root;
//    no X509_STRICT);
//  - time: the store's time is set to the signing certificate's notBefore (X509_VERIFY_PARAM
//    set_time(timegm(not_valid_before_utc))), so every certificate of the chain must be valid
//    at the moment the leaf was issued, and a leaf that has expired since still verifies. We do
//    the same when no time is given; at_unix_time overrides it;
//  - key usage, after the chain verifies: keyUsage with digitalSignature, or else
//    extendedKeyUsage containing codeSigning (a keyUsage without digitalSignature is accepted
//    when codeSigning is present; extendedKeyUsage without codeSigning is accepted when
//    digitalSignature is present), else "cannot be used for signing";
//  - the leaf's public key is returned and used with the hash its curve size implies. We also
//    require the curve to be P-256/384/521 (the reference would take any EC curve of those
//    sizes, e.g. secp256k1 or brainpool, here).
// ---------------------------------------------------------------------------------------------
namespace {

PublicKey certificate_key(X509* cert) {
  EVP_PKEY* key = X509_get0_pubkey(cert);
  if (key == nullptr) fail("cannot read the signing certificate's public key");
  try {
    return PublicKey::from_evp(key);
  } catch (const CryptoError& e) {
    throw CryptoError(std::string("the signing certificate's ") + e.what());
  }
}

}  // namespace

PublicKey verify_certificate_chain(const std::vector<std::string>& chain_der,
                                   const std::vector<std::string>& roots_der,
                                   std::optional<std::int64_t> at_unix_time) {
  ClearErrorsOnExit clear;
  if (chain_der.empty()) throw CryptoError("the certificate chain is empty");
  X509Ptr leaf = parse_der_certificate(chain_der[0], "certificate 0 of the chain (the signing "
                                                     "certificate)");
  X509StackPtr untrusted(sk_X509_new_null());
  if (!untrusted) fail("out of memory");
  for (std::size_t i = 1; i < chain_der.size(); ++i) {
    X509Ptr cert = parse_der_certificate(chain_der[i], "certificate " + std::to_string(i) +
                                                           " of the chain");
    if (!sk_X509_push(untrusted.get(), cert.get())) fail("out of memory");
    cert.release();  // owned by the stack now
  }
  StorePtr store(X509_STORE_new());
  if (!store) fail("out of memory");
  for (std::size_t i = 0; i < roots_der.size(); ++i) {
    X509Ptr root = parse_der_certificate(roots_der[i], "trusted root certificate " +
                                                           std::to_string(i));
    if (X509_STORE_add_cert(store.get(), root.get()) != 1) {  // takes its own reference
      unsigned long err = ERR_peek_last_error();
      if (ERR_GET_REASON(err) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
        fail("cannot add trusted root certificate " + std::to_string(i));
      }
      ERR_clear_error();
    }
  }
  if (roots_der.empty()) {
    throw ChainError("certificate chain not verified: no trusted root certificates were given");
  }

  const bool default_time = !at_unix_time.has_value();
  const std::int64_t when =
      default_time ? asn1_time_to_unix(X509_get0_notBefore(leaf.get()),
                                       "the signing certificate's notBefore")
                   : *at_unix_time;

  StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!ctx) fail("out of memory");
  if (X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), untrusted.get()) != 1) {
    fail("cannot set up certificate verification");
  }
  X509_STORE_CTX_set_time(ctx.get(), 0, static_cast<time_t>(when));
  if (X509_verify_cert(ctx.get()) != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    int depth = X509_STORE_CTX_get_error_depth(ctx.get());
    std::string subject = subject_text(X509_STORE_CTX_get_current_cert(ctx.get()));
    ERR_clear_error();
    std::string msg = "certificate chain not verified: ";
    msg += X509_verify_cert_error_string(err);
    msg += " (certificate at depth " + std::to_string(depth);
    if (!subject.empty()) msg += ", subject " + subject;
    msg += "; checked at " + unix_time_text(when);
    if (default_time) msg += ", the signing certificate's notBefore";
    msg += ")";
    throw ChainError(msg);
  }

  // Key usage, as the reference tool checks it (see above).
  const uint32_t flags = X509_get_extension_flags(leaf.get());
  bool can_sign = false;
  if ((flags & EXFLAG_KUSAGE) && (X509_get_key_usage(leaf.get()) & KU_DIGITAL_SIGNATURE)) {
    can_sign = true;
  }
  if (!can_sign && (flags & EXFLAG_XKUSAGE) &&
      (X509_get_extended_key_usage(leaf.get()) & XKU_CODE_SIGN)) {
    can_sign = true;
  }
  if (!can_sign) {
    throw ChainError("the signing certificate (" + subject_text(leaf.get()) +
                     ") cannot be used for signing: it has neither keyUsage digitalSignature nor "
                     "extendedKeyUsage codeSigning");
  }

  return certificate_key(leaf.get());
}

PublicKey certificate_public_key(const std::string& der) {
  const X509Ptr cert = parse_der_certificate(der, "certificate");
  return certificate_key(cert.get());
}

}  // namespace sentry::crypto
