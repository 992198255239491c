// The torch-free hash cores (csrc/core) against independent references:
//  * BLAKE3: every hash-mode case of the official test vectors;
//  * SHA-256: the NIST FIPS 180-2 examples and OpenSSL;
//  * sha256-tree: a recursive RFC 9162 Merkle Tree Hash written here over OpenSSL's SHA-256
//    (recursive on purpose: the core reduces level by level, so the two shapes must agree).
#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "hash_references.h"
#include "sha256.h"
#include "tree_host.h"
#include "vector_files.h"

namespace {

using namespace sentry_test;

template <class Tree>
std::string tree_hex(const std::vector<uint8_t>& data) {
  uint8_t out[32];
  sentry::tree_hash<Tree>(data.data(), data.size(), out);
  return hex(out, 32);
}

// ---- BLAKE3 ---------------------------------------------------------------------------------

TEST(Blake3, OfficialVectorsHashMode) {
  std::vector<std::pair<size_t, std::string>> cases;
  ASSERT_TRUE(load_blake3_vectors(&cases));
  ASSERT_GE(cases.size(), 30u) << "too few vectors parsed";
  for (const auto& [len, expected] : cases) {
    EXPECT_EQ(tree_hex<sentry::Blake3Tree>(blake3_vector_input(len)), expected)
        << "input_len " << len;
  }
}

// ---- SHA-256 --------------------------------------------------------------------------------

std::string core_sha256(const std::vector<uint8_t>& data) {
  uint32_t state[8];
  uint8_t out[32];
  sentry::sha256::hash(data.data(), data.size(), state);
  sentry::sha256::digest_bytes(state, out);
  return hex(out, 32);
}

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

TEST(Sha256, NistExamples) {
  EXPECT_EQ(core_sha256(bytes_of("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(core_sha256(bytes_of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(core_sha256(std::vector<uint8_t>(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_EQ(core_sha256({}), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256, MatchesOpenSSL) {
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 300; ++n) lengths.push_back(n);  // every padding case
  for (size_t n = 4096 - 70; n <= 4096 + 70; ++n) lengths.push_back(n);
  for (size_t n : lengths) {
    const auto data = random_bytes(n, static_cast<uint32_t>(n));
    EXPECT_EQ(core_sha256(data), openssl_sha256(data.data(), n)) << "length " << n;
  }
}

// ---- sha256-tree ----------------------------------------------------------------------------

TEST(Sha256Tree, MatchesRecursiveRfc9162) {
  const size_t lengths[] = {0,        1,        63,       64,           4095,
                            4096,     4097,     8192,     2 * 4096 + 1, 3 * 4096,
                            12288 + 5, 5 * 4096, 7 * 4096 + 1, 9 * 4096, 17 * 4096 - 3,
                            100000};
  for (size_t n : lengths) {
    const auto data = random_bytes(n, static_cast<uint32_t>(n) + 7);
    EXPECT_EQ(tree_hex<sentry::Sha256Tree>(data), reference_sha256_tree(data)) << "length " << n;
  }
}

TEST(Sha256Tree, EmptyIsSha256OfEmpty) {
  EXPECT_EQ(tree_hex<sentry::Sha256Tree>({}),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256Tree, SingleLeafIsPrefixedSha256) {
  const auto data = random_bytes(4096, 1);
  std::vector<uint8_t> msg{0x00};
  msg.insert(msg.end(), data.begin(), data.end());
  EXPECT_EQ(tree_hex<sentry::Sha256Tree>(data), openssl_sha256(msg.data(), msg.size()));
}

}  // namespace
