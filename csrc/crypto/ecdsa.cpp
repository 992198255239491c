// ECDSA through OpenSSL 3: signing with a PrivateKey, verifying with a PublicKey (strict DER
// signatures only), and DER to raw r||s (see sentry/crypto.h).
#include "openssl_util.h"

namespace sentry::crypto {
using namespace detail;

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

}  // namespace sentry::crypto
