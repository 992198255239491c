// EC keys of Sentry's signature crypto through OpenSSL 3 (see sentry/crypto.h for the
// contract): curves, public keys (PEM in, PEM and raw point out, the hint), private keys
// (PEM with or without a password, generation). Signing and verifying are in ecdsa.cpp.
//
// Every OpenSSL object is owned by a unique_ptr (or a shared_ptr for keys, which the key
// classes share on copy). Errors become CryptoError messages that say what is wrong, with
// OpenSSL's reason string where it helps; the OpenSSL error queue is cleared on every path so
// that a stale error never shows up in a later message. Nothing here prints, logs, or puts key
// material (PEM, DER of private keys, passwords) in a message.
#include "openssl_util.h"

namespace sentry::crypto {
using namespace detail;

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

std::string PublicKey::raw_xy() const {
  ClearErrorsOnExit clear;
  std::size_t size = curve_coordinate_size(curve_);
  return bn_param(key_.get(), OSSL_PKEY_PARAM_EC_PUB_X, size) +
         bn_param(key_.get(), OSSL_PKEY_PARAM_EC_PUB_Y, size);
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

}  // namespace sentry::crypto
