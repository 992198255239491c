// ECDSA P-256 verification cases for the GoogleTest suites of the P-256 core, on the CPU
// (test_p256.cpp) and through the CUDA kernel (test_p256_cuda.cu): OpenSSL-signed ones, one-bit
// flips of them, and the Wycheproof P-256/SHA-256 vectors (the JSON files of ../shared/vectors,
// read without a JSON library: their layout is fixed and the case count is checked).
#pragma once
#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/obj_mac.h>
#include <openssl/sha.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../../csrc/crypto/openssl_ptr.h"

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

// $SENTRY_VECTORS_DIR, else ../shared/vectors beside the source tree (a binary built on one
// machine and run on another, the GPU one, is pointed at its copy).
inline std::string vectors_dir() {
  const char* env = std::getenv("SENTRY_VECTORS_DIR");
  if (env != nullptr && *env != 0) return env;
  return std::string(SENTRY_SOURCE_DIR) + "/../shared/vectors";
}

inline std::string read_file(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << "cannot open " << path;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline std::vector<uint8_t> unhex(const std::string& h) {
  std::vector<uint8_t> out(h.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = uint8_t(std::stoi(h.substr(2 * i, 2), nullptr, 16));
  }
  return out;
}

struct WycheproofCase {
  int id;
  std::string key;  // uncompressed point, hex
  std::vector<uint8_t> msg, sig;
  std::string result;
};

// The string value after `"name" : "` at or after pos (the files' layout), or "" at the end.
inline std::string string_field(const std::string& json, const std::string& name, size_t* pos) {
  const std::string tag = "\"" + name + "\": \"";
  const size_t at = json.find(tag, *pos);
  if (at == std::string::npos) return "";
  const size_t start = at + tag.size();
  const size_t end = json.find('"', start);
  *pos = end;
  return json.substr(start, end - start);
}

// Walks the file in order: a group's "uncompressed" key applies to the tests after it; each
// test is "tcId", then "msg", "sig" and "result". The count is checked against numberOfTests.
inline std::vector<WycheproofCase> load_wycheproof(const std::string& name) {
  const std::string json = read_file(vectors_dir() + "/" + name);
  std::vector<WycheproofCase> cases;
  std::string key;
  size_t pos = 0;
  for (;;) {
    const size_t next_key = json.find("\"uncompressed\": \"", pos);
    const size_t next_test = json.find("\"tcId\": ", pos);
    if (next_test == std::string::npos) break;
    if (next_key != std::string::npos && next_key < next_test) {
      key = string_field(json, "uncompressed", &pos);
      continue;
    }
    WycheproofCase c;
    c.id = std::stoi(json.substr(next_test + 8));
    pos = next_test + 8;
    c.key = key;
    c.msg = unhex(string_field(json, "msg", &pos));
    c.sig = unhex(string_field(json, "sig", &pos));
    c.result = string_field(json, "result", &pos);
    cases.push_back(std::move(c));
  }
  const size_t n_at = json.find("\"numberOfTests\": ");
  EXPECT_NE(n_at, std::string::npos);
  EXPECT_EQ(cases.size(), size_t(std::stoi(json.substr(n_at + 17)))) << name;
  return cases;
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
  const auto key = unhex(c.key);
  if (key.size() != 65 || key[0] != 4) {
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
