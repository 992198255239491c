// The leaves and aligned subtrees of the two tree hashes on the CPU, torch-free: BLAKE3 chunks
// go through the SIMD lanes (blake3_simd.h), sha256-tree leaves through OpenSSL's SHA-256
// (sha256_openssl.h). Shared by the hashing kernels (hash_cpu.cpp, subtree_cpu.cpp) and the
// reader of untrusted files (csrc/io).
#pragma once
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../../core/tree.h"
#include "blake3_simd.h"
#include "host_loader.h"
#include "sha256_openssl.h"

namespace sentry {
namespace cpu {

using Node = uint32_t[8];

// The CPU's implementation of a core tree (core/tree.h): the same values, faster leaves.
template <class Tree>
struct Fast {
  using type = Tree;
};
template <>
struct Fast<Sha256Tree> {
  using type = Sha256TreeOpenSSL;
};

// Values of leaves [first, first + count) of an input of `total` bytes. `data` points at the
// first byte of leaf `first`; only those leaves' bytes are read. Tree: Blake3Tree or
// Sha256TreeOpenSSL.
template <class Tree>
void hash_leaves(const uint8_t* data, uint64_t total, uint64_t first, uint64_t count,
                 Node* out) {
  constexpr uint64_t L = Tree::kLeafBytes;
  const bool root = leaf_count<Tree>(total) == 1;
  uint64_t k = 0;
  if constexpr (std::is_same_v<Tree, Blake3Tree>) {
    // Whole 1024-byte chunks through the SIMD lanes, unless the only chunk is the root.
    const uint64_t full_end = total / L;  // leaves below this one are full
    if (!root && first < full_end)
      k = blake3_full_chunks(data, first, std::min(count, full_end - first), out);
  }
  const HostLoader ld{data};
  for (; k < count; ++k) {
    const uint64_t g = first + k;
    const uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(total - g * L, L));
    Tree::leaf(ld, k * L, len, g, root, out[k]);
  }
}

// Value of the aligned run of 2^level leaves starting at leaf `first` (a node of the tree
// other than its root; its leaves all exist). `data` points at leaf `first`. Leaves are hashed
// and reduced 64 at a time, while they are in cache.
template <class Tree>
void hash_subtree(const uint8_t* data, uint64_t total, uint64_t first, int level,
                  uint32_t out[8]) {
  constexpr uint64_t kRun = 64;
  const uint64_t count = uint64_t(1) << level;
  Node leaves[kRun];
  if (count <= kRun) {
    hash_leaves<Tree>(data, total, first, count, leaves);
    reduce_nodes<Tree>(leaves, count, /*is_root=*/false);
    memcpy(out, leaves[0], sizeof(Node));
    return;
  }
  std::vector<uint32_t> runs(count / kRun * 8);
  Node* run = reinterpret_cast<Node*>(runs.data());
  for (uint64_t r = 0; r < count / kRun; ++r) {
    hash_leaves<Tree>(data + r * kRun * Tree::kLeafBytes, total, first + r * kRun, kRun, leaves);
    reduce_nodes<Tree>(leaves, kRun, /*is_root=*/false);
    memcpy(run[r], leaves[0], sizeof(Node));
  }
  reduce_nodes<Tree>(run, count / kRun, /*is_root=*/false);
  memcpy(out, run[0], sizeof(Node));
}

}  // namespace cpu
}  // namespace sentry
