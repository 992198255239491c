// The OpenSSL plumbing shared by the signature crypto's sources (keys.cpp, ecdsa.cpp,
// dsse.cpp, x509.cpp): owners of OpenSSL objects, error messages that carry OpenSSL's
// reason and never key material, and the key and signature checks more than one needs.
// Internal to csrc/crypto; the contract is in sentry/crypto.h.
#pragma once

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

namespace sentry::crypto::detail {

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

inline std::shared_ptr<EVP_PKEY> share(PkeyPtr key) {
  return std::shared_ptr<EVP_PKEY>(key.release(), EVP_PKEY_free);
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

// OpenSSL's reason for the most recent error, as ": reason" (empty when there is none), and
// clears the queue.
inline std::string openssl_reason() {
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

[[noreturn]] inline void fail(const std::string& what) { throw CryptoError(what + openssl_reason()); }

// Clears OpenSSL's error queue when a scope ends, whatever happened in it.
struct ClearErrorsOnExit {
  ClearErrorsOnExit() { ERR_clear_error(); }
  ~ClearErrorsOnExit() { ERR_clear_error(); }
};

inline BioPtr read_bio(std::string_view data, const char* what) {
  if (data.size() > static_cast<std::size_t>(INT_MAX)) {
    throw CryptoError(std::string(what) + " is too large (" + std::to_string(data.size()) +
                      " bytes)");
  }
  BioPtr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  if (!bio) fail("out of memory");
  return bio;
}

inline std::string bio_string(BIO* bio) {
  char* p = nullptr;
  long n = BIO_get_mem_data(bio, &p);
  if (n < 0 || (n > 0 && p == nullptr)) fail("cannot read OpenSSL's memory buffer");
  return std::string(p, static_cast<std::size_t>(n));
}

// Why a PEM text did not load as a public (want_public) or private key, in words, for the
// message: what it holds instead, or that its key block is malformed (then with OpenSSL's reason).
inline std::string pem_problem(std::string_view pem, bool want_public, const std::string& reason) {
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
inline const EVP_MD* curve_md(Curve c) {
  switch (c) {
    case Curve::kP256: return EVP_sha256();
    case Curve::kP384: return EVP_sha384();
    case Curve::kP521: return EVP_sha512();
  }
  throw CryptoError("unknown curve");
}

// The curve of an EC key on P-256/384/521 with named-curve parameters; CryptoError naming the
// key type or curve otherwise. `what` names the key in messages ("public key", ...).
inline Curve supported_curve(EVP_PKEY* key, const std::string& what) {
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
inline void set_uncompressed(EVP_PKEY* key) {
  if (EVP_PKEY_set_utf8_string_param(key, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                     OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_UNCOMPRESSED) != 1) {
    fail("cannot set the EC point format");
  }
}

// A fresh key object holding only the public half of `key` (SubjectPublicKeyInfo round trip).
inline PkeyPtr public_copy(EVP_PKEY* key, const std::string& what) {
  unsigned char* der = nullptr;
  int n = i2d_PUBKEY(key, &der);
  if (n <= 0) fail("cannot encode the " + what);
  OsslBuf<unsigned char> owned(der);
  const unsigned char* p = der;
  PkeyPtr pub(d2i_PUBKEY(nullptr, &p, n));
  if (!pub) fail("cannot decode the " + what);
  return pub;
}

inline int no_password_cb(char*, int, int, void*) { return -1; }

// Fixed-length big-endian bytes of a BIGNUM parameter of key.
inline std::string bn_param(EVP_PKEY* key, const char* name, std::size_t size) {
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
inline EcdsaSigPtr parse_strict_der_signature(std::string_view sig) {
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

inline bool is_strict_der_signature(std::string_view sig) {
  return parse_strict_der_signature(sig) != nullptr;
}

}  // namespace sentry::crypto::detail
