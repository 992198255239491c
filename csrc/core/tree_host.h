// Whole-input tree hashing on the host, serially: the plain reference the tests compare the
// parallel CPU and CUDA kernels with, and a convenience for small inputs.
#pragma once
#include <stdint.h>

#include <vector>

#include "tree.h"

namespace sentry {

template <class Tree, class Loader>
void tree_hash(const Loader& ld, uint64_t nbytes, uint8_t out[32]) {
  const uint64_t leaves = leaf_count<Tree>(nbytes);
  std::vector<uint32_t> nodes(leaves * 8);
  auto* node = reinterpret_cast<uint32_t(*)[8]>(nodes.data());
  for (uint64_t i = 0; i < leaves; ++i) hash_leaf<Tree>(ld, nbytes, i, node[i]);
  reduce_nodes<Tree>(node, leaves, /*is_root=*/true);
  Tree::digest(node[0], out);
}

template <class Tree>
void tree_hash(const uint8_t* data, uint64_t nbytes, uint8_t out[32]) {
  tree_hash<Tree>(BytewiseLoader{data}, nbytes, out);
}

}  // namespace sentry
