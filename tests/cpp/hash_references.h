// Independent references the C++ hash tests compare with: the official BLAKE3 vectors, OpenSSL's
// SHA-256, and a recursive RFC 9162 Merkle Tree Hash (sha256-tree) written over it.
#pragma once
#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "vector_files.h"

namespace sentry_test {

inline std::string hex(const uint8_t* p, size_t n) {
  static const char* kHex = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += kHex[p[i] >> 4];
    s += kHex[p[i] & 15];
  }
  return s;
}

inline std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(gen());
  return v;
}

// (input_len, hash-mode digest) pairs of the official vectors: each "input_len" and the "hash"
// after it (extended output; the 32-byte digest is its first 64 hex characters). Every step is
// checked, so a missing or malformed file is a failure naming it, never a crash.
inline ::testing::AssertionResult load_blake3_vectors(
    std::vector<std::pair<size_t, std::string>>* cases) {
  const std::string path = sentry::test::vector_path("blake3_test_vectors.json");
  std::string json;
  const auto read = sentry::test::read_vector_file(path, &json);
  if (!read) return read;
  size_t pos = 0, len = 0;
  while (json.find("\"input_len\":", pos) != std::string::npos) {
    std::string hash;
    if (!sentry::test::next_number(json, "input_len", &pos, &len) ||
        !sentry::test::next_field(json, "hash", &pos, &hash) || hash.size() < 64) {
      return ::testing::AssertionFailure()
             << path << " is not the BLAKE3 test vector file as expected (at byte " << pos << ")";
    }
    cases->emplace_back(len, hash.substr(0, 64));
  }
  return ::testing::AssertionSuccess();
}

// Input byte i of each case is i % 251.
inline std::vector<uint8_t> blake3_vector_input(size_t len) {
  std::vector<uint8_t> input(len);
  for (size_t i = 0; i < len; ++i) input[i] = static_cast<uint8_t>(i % 251);
  return input;
}

inline std::string openssl_sha256(const uint8_t* p, size_t n) {
  uint8_t out[32];
  SHA256(p, n, out);
  return hex(out, 32);
}

// RFC 9162 §2.1.1 MTH over the leaves [first, first + count) of `data` (4096-byte pieces).
inline std::vector<uint8_t> mth(const uint8_t* data, size_t size, size_t first, size_t count) {
  constexpr size_t kLeaf = 4096;
  std::vector<uint8_t> msg;
  if (count == 1) {  // leaf: SHA-256(0x00 || piece)
    const size_t begin = first * kLeaf;
    const size_t end = std::min(size, begin + kLeaf);
    msg.push_back(0x00);
    msg.insert(msg.end(), data + begin, data + end);
  } else {  // node: SHA-256(0x01 || MTH(left k) || MTH(rest)), k largest power of two < count
    size_t k = 1;
    while (2 * k < count) k *= 2;
    const auto left = mth(data, size, first, k), right = mth(data, size, first + k, count - k);
    msg.push_back(0x01);
    msg.insert(msg.end(), left.begin(), left.end());
    msg.insert(msg.end(), right.begin(), right.end());
  }
  std::vector<uint8_t> out(32);
  SHA256(msg.data(), msg.size(), out.data());
  return out;
}

inline std::string reference_sha256_tree(const uint8_t* data, size_t size) {
  if (size == 0) return openssl_sha256(nullptr, 0);  // the spec: SHA-256 of ""
  const auto root = mth(data, size, 0, (size + 4095) / 4096);
  return hex(root.data(), 32);
}

inline std::string reference_sha256_tree(const std::vector<uint8_t>& data) {
  return reference_sha256_tree(data.data(), data.size());
}

}  // namespace sentry_test
