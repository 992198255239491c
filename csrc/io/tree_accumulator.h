// An incremental BLAKE3 or sha256-tree hash of an input of known length whose bytes arrive as
// spans in any order, from any number of threads at once; torch-free.
//
// Each span contributes the values of the maximal aligned runs of whole leaves it holds (the
// "pieces" of core/subtree.h, hashed as the span arrives, on the caller's thread) and copies
// the bytes of at most two leaves it shares with neighbouring spans. finish() hashes those
// shared leaves and combines everything into the root with SubtreeFinisher, the same finish
// step as sharded hashing (docs/DISTRIBUTED.md): in-order streaming is the special case of
// spans that follow each other. An input of one leaf is hashed whole at finish(), since that
// leaf is the root (BLAKE3 flags it).
#pragma once
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <array>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../core/subtree.h"
#include "../ops/cpu/leaves.h"

namespace sentry {
namespace io {

template <class Tree>  // Blake3Tree or Sha256Tree (core/tree.h)
class TreeAccumulator {
 public:
  explicit TreeAccumulator(uint64_t total) : total_(total), leaves_(leaf_count<Tree>(total)) {}
  TreeAccumulator(const TreeAccumulator&) = delete;
  TreeAccumulator& operator=(const TreeAccumulator&) = delete;

  uint64_t size() const { return total_; }

  // Bytes [offset, offset + n) of the input. Spans must cover the input exactly once in all.
  void add(uint64_t offset, const uint8_t* data, uint64_t n) {
    if (offset > total_ || n > total_ - offset)
      throw std::out_of_range("span [" + std::to_string(offset) + ", " +
                              std::to_string(offset + n) + ") lies outside an input of " +
                              std::to_string(total_) + " bytes");
    if (n == 0) return;
    const ShardLeaves whole = leaves_ == 1 ? ShardLeaves{} : shard_leaves<Tree>(offset, n, total_);
    std::vector<std::pair<uint64_t, Digest>> values;
    for (const Piece& piece : pieces_of(whole)) {
      uint32_t node[8];
      cpu::hash_subtree<FastTree>(data + (piece.first_leaf * L - offset), total_,
                                  piece.first_leaf, piece.level, node);
      values.emplace_back(piece.first_leaf, Digest{});
      Tree::digest(node, values.back().second.data());
    }
    std::lock_guard<std::mutex> lock(mu_);
    pieces_.insert(pieces_.end(), values.begin(), values.end());
    // The leaves this span touches but does not hold whole: at most one at each end.
    const uint64_t last = (offset + n - 1) / L;
    for (uint64_t leaf = offset / L; leaf <= last; ++leaf) {
      if (leaf >= whole.first && leaf < whole.end) {
        leaf = whole.end - 1;
        continue;
      }
      const uint64_t begin = std::max(offset, leaf * L);
      const uint64_t end = std::min(offset + n, leaf_end(leaf));
      Shared& shared = shared_[leaf];
      if (shared.bytes.empty()) shared.bytes.resize(leaf_end(leaf) - leaf * L);
      memcpy(shared.bytes.data() + (begin - leaf * L), data + (begin - offset), end - begin);
      shared.filled += end - begin;
    }
  }

  // The digest of the whole input. Throws std::logic_error when the spans did not cover it
  // exactly once.
  void finish(uint8_t out[32]) {
    std::lock_guard<std::mutex> lock(mu_);
    if (leaves_ == 1) {
      const uint8_t none = 0;
      const Shared& only = shared_[0];
      check_filled(0, only);
      uint32_t node[8];
      FastTree::leaf(cpu::HostLoader{total_ ? only.bytes.data() : &none}, 0,
                     static_cast<uint32_t>(total_), 0, /*root=*/true, node);
      Tree::digest(node, out);
      return;
    }
    std::vector<std::pair<uint64_t, Digest>> all = pieces_;
    for (const auto& [leaf, shared] : shared_) {
      check_filled(leaf, shared);
      uint32_t node[8];
      FastTree::leaf(cpu::HostLoader{shared.bytes.data()}, 0,
                     static_cast<uint32_t>(shared.bytes.size()), leaf, /*root=*/false, node);
      all.emplace_back(leaf, Digest{});
      Tree::digest(node, all.back().second.data());
    }
    std::sort(all.begin(), all.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<uint64_t> first(all.size());
    std::vector<Digest> values(all.size());
    for (size_t i = 0; i < all.size(); ++i) std::tie(first[i], values[i]) = all[i];
    try {
      SubtreeFinisher<Tree>(first.data(), reinterpret_cast<const uint8_t(*)[32]>(values.data()),
                            first.size(), total_)
          .root(out);
    } catch (const std::invalid_argument& e) {
      throw std::logic_error(std::string("the spans added do not tile the input: ") + e.what());
    }
  }

 private:
  using FastTree = typename cpu::Fast<Tree>::type;
  using Digest = std::array<uint8_t, 32>;
  static_assert(sizeof(Digest) == 32, "digests are packed");
  static constexpr uint64_t L = Tree::kLeafBytes;

  struct Shared {  // a leaf whose bytes came in more than one span
    std::vector<uint8_t> bytes;
    uint64_t filled = 0;
  };

  uint64_t leaf_end(uint64_t leaf) const { return std::min(total_, (leaf + 1) * L); }

  void check_filled(uint64_t leaf, const Shared& shared) const {
    const uint64_t want = leaf_end(leaf) - std::min(total_, leaf * L);
    if (shared.filled != want)
      throw std::logic_error("leaf " + std::to_string(leaf) + " got " +
                             std::to_string(shared.filled) + " of its " + std::to_string(want) +
                             " bytes");
  }

  const uint64_t total_, leaves_;
  std::mutex mu_;
  std::vector<std::pair<uint64_t, Digest>> pieces_;  // (first leaf, value) of whole-leaf runs
  std::map<uint64_t, Shared> shared_;
};

}  // namespace io
}  // namespace sentry
