// ECDSA P-256 verification cases for the GoogleTest suites of the P-256 core, on the CPU
// (test_p256.cpp) and through the CUDA kernel (test_p256_cuda.cu): OpenSSL-signed ones, one-bit
// flips of them, and the Wycheproof P-256/SHA-256 vectors (JSON files of tests/vectors).
#pragma once
#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/obj_mac.h>
#include <openssl/sha.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../../csrc/crypto/openssl_ptr.h"
#include "vector_files.h"

namespace sentry {
namespace test {

// One row of the verify op: x || y, SHA-256 digest, r || s, all big-endian.
struct Case {
  uint8_t pub[64], digest[32], sig[64];
};

using Key = OpensslPtr<EC_KEY, EC_KEY_free>;

inline Key new_key() {
  Key k(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
  EXPECT_EQ(EC_KEY_generate_key(k.get()), 1);
  return k;
}

// `digest` signed by OpenSSL under `key`.
inline Case openssl_signed_case(EC_KEY* key, const uint8_t digest[32]) {
  Case c;
  std::memcpy(c.digest, digest, 32);
  ECDSA_SIG* sig = ECDSA_do_sign(c.digest, 32, key);
  EXPECT_NE(sig, nullptr);
  const BIGNUM *r, *s;
  ECDSA_SIG_get0(sig, &r, &s);
  EXPECT_EQ(BN_bn2binpad(r, c.sig, 32), 32);
  EXPECT_EQ(BN_bn2binpad(s, c.sig + 32, 32), 32);
  ECDSA_SIG_free(sig);
  uint8_t point[65];
  EXPECT_EQ(EC_POINT_point2oct(EC_KEY_get0_group(key), EC_KEY_get0_public_key(key),
                               POINT_CONVERSION_UNCOMPRESSED, point, sizeof point, nullptr),
            sizeof point);
  std::memcpy(c.pub, point + 1, 64);
  return c;
}

// A random digest signed by OpenSSL under `key`.
inline Case openssl_signed_case(EC_KEY* key, std::mt19937_64& rng) {
  uint8_t digest[32];
  for (auto& b : digest) b = uint8_t(rng());
  return openssl_signed_case(key, digest);
}

// Flips one random bit of part 0 (r), 1 (s), 2 (the digest) or 3 (the key); returns its index
// within the part.
inline int flip_random_bit(Case* c, int part, std::mt19937_64& rng) {
  uint8_t* const bases[4] = {c->sig, c->sig + 32, c->digest, c->pub};
  const int bits = part == 3 ? 512 : 256;
  const int bit = int(rng() % bits);
  bases[part][bit / 8] ^= uint8_t(1u << (bit % 8));
  return bit;
}

struct WycheproofCase {
  int id;
  std::string key;  // uncompressed point, hex
  std::vector<uint8_t> msg, sig;
  std::string result;
};

// Every test of the Wycheproof file at `path`, in order: a group's "uncompressed" key applies to
// the tests after it; each test is "tcId", then "msg", "sig" and "result". The count is checked
// against numberOfTests.
inline ::testing::AssertionResult load_wycheproof(const std::string& path,
                                                  std::vector<WycheproofCase>* cases) {
  std::string json;
  const auto read = read_vector_file(path, &json);
  if (!read) return read;
  auto malformed = [&](size_t at) {
    return ::testing::AssertionFailure()
           << path << " is not a Wycheproof ECDSA file as expected (at byte " << at << ")";
  };
  size_t pos = 0, expected = 0;
  if (!next_number(json, "numberOfTests", &pos, &expected)) return malformed(pos);
  cases->clear();
  std::string key;
  for (;;) {
    const size_t next_key = json.find("\"uncompressed\":", pos);
    const size_t next_test = json.find("\"tcId\":", pos);
    if (next_test == std::string::npos) break;
    if (next_key < next_test) {
      if (!next_field(json, "uncompressed", &pos, &key)) return malformed(pos);
      continue;
    }
    WycheproofCase c;
    size_t id = 0;
    std::string msg, sig;
    if (!next_number(json, "tcId", &pos, &id) || !next_field(json, "msg", &pos, &msg) ||
        !next_field(json, "sig", &pos, &sig) || !next_field(json, "result", &pos, &c.result) ||
        !unhex(msg, &c.msg) || !unhex(sig, &c.sig) || key.empty()) {
      return malformed(next_test);
    }
    c.id = int(id);
    c.key = key;
    cases->push_back(std::move(c));
  }
  if (cases->size() != expected) {
    return ::testing::AssertionFailure() << path << ": " << cases->size() << " tests read, "
                                         << "numberOfTests says " << expected;
  }
  return ::testing::AssertionSuccess();
}

// r || s from a DER signature under OpenSSL's strict rules (parse, nothing left over, and the
// re-encoding is identical), each at most 32 bytes; false when it is not one.
inline bool der_to_raw(const std::vector<uint8_t>& der, uint8_t out[64]) {
  const unsigned char* p = der.data();
  ECDSA_SIG* sig = d2i_ECDSA_SIG(nullptr, &p, long(der.size()));
  if (sig == nullptr) return false;
  bool ok = p == der.data() + der.size();
  unsigned char* again = nullptr;
  const int len = i2d_ECDSA_SIG(sig, &again);
  ok = ok && len == int(der.size()) && std::memcmp(again, der.data(), der.size()) == 0;
  OPENSSL_free(again);
  const BIGNUM *r, *s;
  ECDSA_SIG_get0(sig, &r, &s);
  ok = ok && BN_bn2binpad(r, out, 32) == 32 && BN_bn2binpad(s, out + 32, 32) == 32;
  ECDSA_SIG_free(sig);
  return ok;
}

// The row of a Wycheproof test (key, SHA-256 of its message, r || s). False when the signature
// does not parse (DER under OpenSSL's strict rules, or P1363 of another length than 64): such a
// row never reaches verify.
inline bool wycheproof_case(const WycheproofCase& c, bool der, Case* out) {
  std::vector<uint8_t> key;
  if (!unhex(c.key, &key) || key.size() != 65 || key[0] != 4) {
    ADD_FAILURE() << "tcId " << c.id << ": the key is not an uncompressed point";
    return false;
  }
  std::memcpy(out->pub, key.data() + 1, 64);
  SHA256(c.msg.data(), c.msg.size(), out->digest);
  if (der) return der_to_raw(c.sig, out->sig);
  if (c.sig.size() != 64) return false;
  std::memcpy(out->sig, c.sig.data(), 64);
  return true;
}

}  // namespace test
}  // namespace sentry
