// CPU kernels of hash_subtrees and finish_subtrees (schemas in ../subtree_ops.cpp).
//
// hash_subtrees hashes every whole leaf of every shard into a flat array of slots, then
// combines level by level in place: the node of level l over leaves [j 2^l, (j + 1) 2^l) lives
// in the slot of its first leaf, so its children are the slots of leaves j 2^l and
// j 2^l + 2^(l-1). Every aligned node inside a shard (up to its largest piece) is computed, and
// each piece's value ends up in the slot of its first leaf. The lowest levels are combined per
// aligned run of 64 leaves, right after those leaves are hashed (in cache, in parallel).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#include "../subtree_common.h"
#include "leaves.h"

namespace sentry {
namespace cpu {
namespace {

// Whole leaves [first, first + count) of one shard into their slots. Leaf g's bytes start at
// g * L of the full input, g * L - start of the shard.
template <class Tree>
void hash_shard_leaves(const ShardPlan& p, uint64_t first, uint64_t count, Node* slots) {
  hash_leaves<Tree>(p.data + first * Tree::kLeafBytes - p.start, p.total, first, count,
                    slots + (first - p.leaves.first));
}

// Nodes [lo, hi) of level l of one shard, each from its two children, in place: the node over
// leaves [j 2^l, (j + 1) 2^l) lives in the slot of its first leaf.
template <class Tree>
void combine_level(const ShardPlan& p, int l, uint64_t lo, uint64_t hi, Node* base) {
  for (uint64_t j = lo; j < hi; ++j) {
    const uint64_t left = (j << l) - p.leaves.first;
    const uint64_t right = left + (uint64_t(1) << (l - 1));
    Node parent;
    Tree::combine(base[left], base[right], /*root=*/false, parent);
    std::memcpy(base[left], parent, sizeof(Node));
  }
}

template <class Tree>
at::Tensor hash_subtrees_impl(const std::vector<at::Tensor>& inputs, at::IntArrayRef start_bytes,
                              at::IntArrayRef total_bytes) {
  uint64_t total_slots = 0, total_pieces = 0;
  const std::vector<ShardPlan> plans =
      plan_shards<Tree>(inputs, start_bytes, total_bytes, &total_slots, &total_pieces);
  std::vector<uint32_t> storage(std::max<uint64_t>(total_slots, 1) * 8);
  Node* slots = reinterpret_cast<Node*>(storage.data());

  // Level 0 and the levels below kItemLevels: work items of one aligned run of 2^kItemLevels
  // leaves of one shard, reduced while they are in cache, spread over the thread pool.
  constexpr int kItemLevels = 6;
  constexpr uint64_t kItemLeaves = uint64_t(1) << kItemLevels;
  std::vector<std::pair<size_t, uint64_t>> items;  // (shard, first leaf)
  for (size_t s = 0; s < plans.size(); ++s)
    for (uint64_t g = plans[s].leaves.first; g < plans[s].leaves.end; g = (g / kItemLeaves + 1) * kItemLeaves)
      items.push_back({s, g});
  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      const ShardPlan& p = plans[items[it].first];
      const uint64_t g0 = items[it].second;
      const uint64_t g1 = std::min((g0 / kItemLeaves + 1) * kItemLeaves, p.leaves.end);
      Node* base = slots + p.slot_base;
      hash_shard_leaves<Tree>(p, g0, g1 - g0, base);
      for (int l = 1; l <= std::min(kItemLevels, p.leaves.max_level); ++l)
        combine_level<Tree>(p, l, std::max(level_first(p.leaves, l), ceil_div(g0, uint64_t(1) << l)),
                            std::min(level_end(p.leaves, l), g1 >> l), base);
    }
  });

  // Higher levels: each node combines its two children in place.
  int depth = 0;
  for (const ShardPlan& p : plans) depth = std::max(depth, p.leaves.max_level);
  for (int l = kItemLevels + 1; l <= depth; ++l) {
    for (const ShardPlan& p : plans) {
      const int64_t lo = level_first(p.leaves, l), hi = level_end(p.leaves, l);
      at::parallel_for(lo, hi, 256, [&](int64_t begin, int64_t end) {
        combine_level<Tree>(p, l, begin, end, slots + p.slot_base);
      });
    }
  }

  at::Tensor out = at::empty({static_cast<int64_t>(total_pieces), 32}, at::kByte);
  uint8_t* row = out.data_ptr<uint8_t>();
  for (const ShardPlan& p : plans) {
    for (const Piece& piece : p.pieces) {
      Tree::digest(slots[p.slot_base + piece.first_leaf - p.leaves.first], row);
      row += 32;
    }
  }
  return out;
}

at::Tensor hash_subtrees_cpu(at::TensorList tensors, at::IntArrayRef start_bytes,
                             at::IntArrayRef total_bytes, c10::string_view algorithm) {
  const char* op = "sentry.hash_subtrees";
  const Algorithm algo = parse_algorithm(algorithm, op);
  const std::vector<at::Tensor> inputs =
      prepare_subtree_inputs(tensors, start_bytes, total_bytes, op);
  return algo == Algorithm::kBlake3
             ? hash_subtrees_impl<Blake3Tree>(inputs, start_bytes, total_bytes)
             : hash_subtrees_impl<Sha256TreeOpenSSL>(inputs, start_bytes, total_bytes);
}

at::Tensor finish_subtrees_cpu(const at::Tensor& values, at::IntArrayRef first_leaves,
                               int64_t total_bytes, c10::string_view algorithm) {
  const char* op = "sentry.finish_subtrees";
  const Algorithm algo = parse_algorithm(algorithm, op);
  TORCH_CHECK_VALUE(values.dim() == 2 && values.size(1) == 32 &&
                        values.scalar_type() == at::kByte,
                    op, ": values must be a uint8 [K, 32] tensor, got ", values.scalar_type(),
                    " ", shape_of(values));
  TORCH_CHECK_VALUE(static_cast<size_t>(values.size(0)) == first_leaves.size(), op, ": ",
                    std::to_string(values.size(0)), " values but ",
                    std::to_string(first_leaves.size()), " first_leaves");
  TORCH_CHECK_VALUE(total_bytes >= 0, op, ": total_bytes is negative (",
                    std::to_string(total_bytes), ")");
  std::vector<uint64_t> firsts(first_leaves.size());
  for (size_t i = 0; i < firsts.size(); ++i) {
    TORCH_CHECK_VALUE(first_leaves[i] >= 0, op, ": first_leaves[", std::to_string(i),
                      "] is negative");
    firsts[i] = static_cast<uint64_t>(first_leaves[i]);
  }
  const at::Tensor host = values.contiguous();
  const auto* rows = reinterpret_cast<const uint8_t(*)[32]>(host.const_data_ptr<uint8_t>());
  at::Tensor out = at::empty({32}, at::kByte);
  try {
    if (algo == Algorithm::kBlake3) {
      SubtreeFinisher<Blake3Tree>(firsts.data(), rows, firsts.size(), total_bytes)
          .root(out.data_ptr<uint8_t>());
    } else {
      SubtreeFinisher<Sha256Tree>(firsts.data(), rows, firsts.size(), total_bytes)
          .root(out.data_ptr<uint8_t>());
    }
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, op, ": ", e.what());
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sentry, CPU, m) {
  m.impl("hash_subtrees", &hash_subtrees_cpu);
  m.impl("finish_subtrees", &finish_subtrees_cpu);
}

}  // namespace cpu
}  // namespace sentry
