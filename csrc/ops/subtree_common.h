// Glue shared by the CPU and CUDA kernels of hash_subtrees: argument checks and the plan of
// which leaves and pieces (core/subtree.h) each shard covers.
#pragma once
#include <ATen/ATen.h>

#include <vector>

#include "../core/subtree.h"
#include "hash_common.h"

namespace sentry {

// One shard of a call: its bytes, where they sit in the full input, its whole leaves and
// pieces, and where its leaves start in the call's flat array of leaf slots.
struct ShardPlan {
  const uint8_t* data;
  uint64_t start, nbytes, total;
  ShardLeaves leaves;
  std::vector<Piece> pieces;
  uint64_t slot_base;  // leaf `first + k` of this shard is slot slot_base + k
};

// Validates hash_subtrees' arguments (each message names the tensor by index) and returns the
// tensors with a contiguous layout on their common device.
std::vector<at::Tensor> prepare_subtree_inputs(at::TensorList tensors, at::IntArrayRef start_bytes,
                                               at::IntArrayRef total_bytes, const char* op);

template <class Tree>
std::vector<ShardPlan> plan_shards(const std::vector<at::Tensor>& inputs,
                                   at::IntArrayRef start_bytes, at::IntArrayRef total_bytes,
                                   uint64_t* slots, uint64_t* pieces) {
  std::vector<ShardPlan> plans;
  *slots = 0;
  *pieces = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    ShardPlan p;
    p.data = static_cast<const uint8_t*>(inputs[i].const_data_ptr());
    p.start = static_cast<uint64_t>(start_bytes[i]);
    p.nbytes = byte_size(inputs[i]);
    p.total = static_cast<uint64_t>(total_bytes[i]);
    p.leaves = shard_leaves<Tree>(p.start, p.nbytes, p.total);  // checked before: no throw
    p.pieces = pieces_of(p.leaves);
    p.slot_base = *slots;
    *slots += p.leaves.end - p.leaves.first;
    *pieces += p.pieces.size();
    plans.push_back(std::move(p));
  }
  return plans;
}

// Nodes of level l (2^l leaves) inside a shard's whole leaves: [level_first, level_end).
inline uint64_t level_first(const ShardLeaves& s, int l) {
  return ceil_div(s.first, uint64_t(1) << l);
}
inline uint64_t level_end(const ShardLeaves& s, int l) {
  const uint64_t first = level_first(s, l), end = s.end >> l;
  return l > s.max_level || end < first ? first : end;
}

}  // namespace sentry
