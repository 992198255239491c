// sha256-tree's leaf and node hashes with OpenSSL doing the SHA-256 (its SHA extensions where
// the CPU has them): the same definitions as core/tree.h's Sha256Tree, which the GPU runs and
// the tests compare with. For loaders with a plain `base` pointer. Used by the CPU kernels of
// hash_tensors/hash_rows and of hash_subtrees.
#pragma once
#include <openssl/sha.h>

#include "../../core/tree.h"

namespace sentry {
namespace cpu {

struct Sha256TreeOpenSSL {
  static constexpr uint64_t kLeafBytes = Sha256Tree::kLeafBytes;

  static void to_node(const uint8_t digest[32], uint32_t out[8]) {
    for (int i = 0; i < 8; ++i) out[i] = sha256::load_be32(digest + 4 * i);
  }

  template <class Loader>
  static void leaf(const Loader& ld, uint64_t offset, uint32_t len, uint64_t, bool,
                   uint32_t out[8]) {
    uint8_t digest[32];
    // Not the one-shot SHA256(): in OpenSSL 3 it goes through EVP, whose per-call cost is a
    // fifth of a 4 KiB leaf's.
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    if (len > 0) {  // the empty input's only leaf is SHA-256 of nothing, without the prefix
      const uint8_t prefix = 0x00;
      SHA256_Update(&ctx, &prefix, 1);
      SHA256_Update(&ctx, ld.base + offset, len);
    }
    SHA256_Final(digest, &ctx);
    to_node(digest, out);
  }

  static void combine(const uint32_t l[8], const uint32_t r[8], bool, uint32_t out[8]) {
    uint8_t msg[65], digest[32];
    msg[0] = 0x01;
    sha256::digest_bytes(l, msg + 1);
    sha256::digest_bytes(r, msg + 33);
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, msg, sizeof msg);
    SHA256_Final(digest, &ctx);
    to_node(digest, out);
  }

  static void digest(const uint32_t node[8], uint8_t out[32]) { sha256::digest_bytes(node, out); }
};

}  // namespace cpu
}  // namespace sentry
