// Sentry's signature crypto: ECDSA keys (P-256/P-384/P-521), DSSE PAE, X.509 chain checks.
//
// The public C++ API for LibTorch programs and the implementation behind the Python module
// sentry_ops._C.crypto. Torch-free: it needs only OpenSSL's libcrypto (link OpenSSL::Crypto,
// or the sentry_ops library, which contains it).
//
// Signatures are ECDSA over the data with the curve's hash (P-256: SHA-256, P-384: SHA-384,
// P-521: SHA-512), DER-encoded (the form Sigstore bundles and OpenSSF Model Signing use).
// Every failure is a sentry::crypto::CryptoError (a std::runtime_error) whose message says what
// is wrong; no message ever contains key material. Verifying a bad signature is not an error:
// PublicKey::verify returns false.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

// OpenSSL's key type, declared here so that this header does not pull in OpenSSL's headers.
typedef struct evp_pkey_st EVP_PKEY;

namespace sentry::crypto {

// Malformed or unsupported input (PEM, DER, key type, curve, password), or an OpenSSL failure.
class CryptoError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A certificate chain that does not verify: untrusted, expired, not valid yet, bad signature,
// or a leaf certificate that may not be used for signing. A CryptoError too.
class ChainError : public CryptoError {
 public:
  using CryptoError::CryptoError;
};

enum class Curve { kP256, kP384, kP521 };

// "P-256", "P-384", "P-521".
const char* curve_name(Curve curve);
// Inverse of curve_name; also accepts OpenSSL's names (prime256v1/secp256r1, secp384r1,
// secp521r1). Throws CryptoError for anything else.
Curve curve_from_name(std::string_view name);
// "SHA-256", "SHA-384", "SHA-512": the hash signatures on that curve are made over.
const char* curve_hash_name(Curve curve);
// Bytes of one coordinate: 32, 48, 66.
std::size_t curve_coordinate_size(Curve curve);

class PublicKey {
 public:
  // A SubjectPublicKeyInfo PEM ("-----BEGIN PUBLIC KEY-----") of an EC key on P-256/384/521.
  // Certificates are not accepted here (see verify_certificate_chain).
  static PublicKey from_pem(std::string_view pem);

  // The SubjectPublicKeyInfo PEM, exactly as OpenSSL's PEM_write_bio_PUBKEY writes it (named
  // curve, uncompressed point): the same bytes as Python cryptography's
  // public_bytes(PEM, SubjectPublicKeyInfo), whose SHA-256 is a Sigstore bundle's key hint.
  std::string pem() const;
  // Hex SHA-256 of pem(): verificationMaterial.publicKey.hint.
  std::string hint() const;
  Curve curve() const { return curve_; }

  // True when der_signature is a valid DER ECDSA signature of data under this key. False, never
  // an exception, for every bad signature: wrong, malformed, non-canonical DER, trailing bytes,
  // r or s outside [1, n-1], any length.
  bool verify(std::string_view data, std::string_view der_signature) const;
  // The same with another hash than the curve's ("SHA-256", "SHA-384" or "SHA-512"; anything
  // else throws CryptoError): model_signing v0.2 signed with SHA-256 on every curve.
  bool verify(std::string_view data, std::string_view der_signature,
              std::string_view hash_name) const;

  // x || y, big-endian, each padded to the coordinate size: 64, 96 or 132 bytes.
  std::string raw_xy() const;

  // The underlying OpenSSL key (owned by this object), for callers that need OpenSSL directly.
  EVP_PKEY* get() const { return key_.get(); }

  // Takes a reference to key (EVP_PKEY_up_ref); checks that it is an EC key on a supported curve.
  static PublicKey from_evp(EVP_PKEY* key);

 private:
  PublicKey(std::shared_ptr<EVP_PKEY> key, Curve curve) : key_(std::move(key)), curve_(curve) {}
  std::shared_ptr<EVP_PKEY> key_;
  Curve curve_;
};

class PrivateKey {
 public:
  // A PKCS#8 ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY") or traditional ("EC PRIVATE KEY", with or
  // without Proc-Type: 4,ENCRYPTED) PEM of an EC key on P-256/384/521. An encrypted key needs its
  // password; a password given for a key that is not encrypted is an error too (as in Python
  // cryptography). Never prompts on a terminal.
  static PrivateKey from_pem(std::string_view pem,
                             const std::optional<std::string>& password = std::nullopt);
  static PrivateKey generate(Curve curve = Curve::kP256);

  // PKCS#8 PEM; with a password, encrypted ("ENCRYPTED PRIVATE KEY": PBES2, PBKDF2 with
  // HMAC-SHA-256, AES-256-CBC). An empty password is refused.
  std::string to_pem(const std::optional<std::string>& password = std::nullopt) const;

  PublicKey public_key() const;
  Curve curve() const { return curve_; }

  // DER ECDSA signature of data with the curve's hash (random nonce, so it differs per call).
  std::string sign(std::string_view data) const;

  EVP_PKEY* get() const { return key_.get(); }

 private:
  PrivateKey(std::shared_ptr<EVP_PKEY> key, Curve curve) : key_(std::move(key)), curve_(curve) {}
  std::shared_ptr<EVP_PKEY> key_;
  Curve curve_;
};

// r || s (big-endian, each padded to the curve's coordinate size: 64, 96 or 132 bytes) of a DER
// ECDSA signature, for batched verification (sentry::ecdsa_p256_verify takes P-256's 64-byte
// form). nullopt when it is not strict DER (the rule PublicKey::verify applies: parses with
// nothing left over and re-encodes identically), or r or s is negative or longer than a
// coordinate. Ranges (0 < r, s < n) are left to the verifier.
std::optional<std::string> der_signature_to_raw(std::string_view der_signature,
                                                Curve curve = Curve::kP256);

// DSSE v1 pre-authentication encoding:
// "DSSEv1" SP len(type) SP type SP len(payload) SP payload, lengths in decimal bytes.
std::string dsse_pae(std::string_view payload_type, std::string_view payload);

// Lower-case hex SHA-256 of data.
std::string sha256_hex(std::string_view data);

// The DER of every CERTIFICATE block in a PEM text (a bundle), in order. Throws CryptoError when
// there is none or one is malformed.
std::vector<std::string> certificates_from_pem(std::string_view pem);

// Verifies a certificate chain as OpenSSF Model Signing's certificate verifier does and returns
// the leaf's public key.
//   chain_der: DER certificates, the signing (leaf) certificate first, then intermediates (not
//              trusted by themselves).
//   roots_der: the trust anchors (DER).
//   at_unix_time: the time the chain must be valid at; when absent, the leaf's notBefore (what
//              the reference tool does: a signature outlives its certificate).
// The leaf must have keyUsage digitalSignature, or else extendedKeyUsage codeSigning, and an EC
// key on P-256/384/521. Throws CryptoError for malformed DER or an unsupported leaf key, and
// ChainError (with OpenSSL's verification error) when the chain does not verify.
PublicKey verify_certificate_chain(const std::vector<std::string>& chain_der,
                                   const std::vector<std::string>& roots_der,
                                   std::optional<std::int64_t> at_unix_time = std::nullopt);

// The public key of a DER certificate, without any chain check (to match a signing key with
// its certificate). Throws CryptoError for malformed DER or an unsupported key.
PublicKey certificate_public_key(const std::string& der);

}  // namespace sentry::crypto
