// A tensor split into byte ranges (shards) hashed piece by piece, then finished into the digest
// of the whole: the arithmetic of docs/DISTRIBUTED.md, torch-free, shared by the CPU and CUDA
// kernels of hash_subtrees and by finish_subtrees.
//
// Both trees are left-complete (tree.h), so any aligned run of 2^k leaves that ends inside the
// input is a node of the tree. A shard [start, start + nbytes) of an input of `total` bytes
// covers a run of whole leaves [first, end); that run splits into maximal aligned runs (the
// "pieces"), each one subtree value. Every piece is kept strictly smaller than the whole tree,
// so the root is always a combination made by the finish step: BLAKE3's ROOT flag goes there.
// A tree of a single leaf has no such piece; its root needs the leaf's bytes (the caller
// gathers them; they are at most one leaf).
#pragma once
#include <stdint.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "tree.h"

namespace sentry {

// Whole leaves [first, end) of the full input inside one shard, and the largest piece allowed
// (2^max_level leaves: the largest power of two below the leaf count).
struct ShardLeaves {
  uint64_t first = 0, end = 0;
  int max_level = 0;
};

inline int floor_log2(uint64_t x) { return 63 - __builtin_clzll(x); }

template <class Tree>
ShardLeaves shard_leaves(uint64_t start, uint64_t nbytes, uint64_t total) {
  if (start > total || nbytes > total - start)
    throw std::invalid_argument("shard [" + std::to_string(start) + ", " +
                                std::to_string(start + nbytes) + ") lies outside an input of " +
                                std::to_string(total) + " bytes");
  ShardLeaves s;
  const uint64_t n = leaf_count<Tree>(total);
  if (n == 1) return s;  // the only leaf is the root: no piece
  s.max_level = floor_log2(n - 1);
  s.first = ceil_div(start, Tree::kLeafBytes);
  const uint64_t stop = start + nbytes;
  s.end = stop == total ? n : stop / Tree::kLeafBytes;  // the input's last leaf may be short
  if (s.end < s.first) s.end = s.first;
  return s;
}

struct Piece {
  uint64_t first_leaf;
  int level;  // the piece is leaves [first_leaf, first_leaf + 2^level)
};

// The maximal aligned runs of [first, end), left to right: at most 2 * 64 of them.
inline std::vector<Piece> pieces_of(const ShardLeaves& s) {
  std::vector<Piece> out;
  for (uint64_t pos = s.first; pos < s.end;) {
    int k = pos == 0 ? s.max_level : __builtin_ctzll(pos);
    if (k > s.max_level) k = s.max_level;
    while ((uint64_t(1) << k) > s.end - pos) --k;
    out.push_back({pos, k});
    pos += uint64_t(1) << k;
  }
  return out;
}

// Node value from its 32 serialised bytes: the inverse of Tree::digest.
SENTRY_HD SENTRY_INLINE void node_from_bytes(const Blake3Tree*, const uint8_t in[32], uint32_t out[8]) {
  for (int i = 0; i < 8; ++i)
    out[i] = uint32_t(in[4 * i]) | (uint32_t(in[4 * i + 1]) << 8) |
             (uint32_t(in[4 * i + 2]) << 16) | (uint32_t(in[4 * i + 3]) << 24);
}
SENTRY_HD SENTRY_INLINE void node_from_bytes(const Sha256Tree*, const uint8_t in[32], uint32_t out[8]) {
  for (int i = 0; i < 8; ++i) out[i] = sha256::load_be32(in + 4 * i);
}

// Walks the left-complete tree of `leaves` leaves down to pieces that tile them in order
// (piece i covers [first_leaf[i], first_leaf[i + 1]), the last up to `leaves`), each a proper
// subtree of the tree, and builds the root bottom-up through a visitor:
//   Handle piece(uint64_t i);                                  // the value of piece i
//   Handle combine(const Handle& l, const Handle& r, bool root);
//   void node(uint64_t lo, uint64_t hi, const Handle& h);      // every node made or used
// SubtreeFinisher computes values with it; the distributed planner (ops/run_plan.cpp) records
// the same combinations as a schedule for the devices. Throws std::invalid_argument, saying
// why, when the pieces do not tile the leaves or one of them is not a node of the tree.
template <class Visitor>
class TreeWalk {
 public:
  using Handle = typename Visitor::Handle;

  TreeWalk(const uint64_t* first_leaf, uint64_t count, uint64_t leaves, Visitor& visitor)
      : first_(first_leaf), count_(count), n_(leaves), visitor_(visitor) {}

  Handle root() {
    if (n_ == 1)
      throw std::invalid_argument(
          "an input of one leaf has no proper subtree: its root is the leaf itself, hash its "
          "bytes");
    Handle h = value(0, n_, true);
    if (cursor_ != count_)
      throw std::invalid_argument("piece " + std::to_string(cursor_) + " (leaf " +
                                  std::to_string(first_[cursor_]) + ") lies past the last of " +
                                  std::to_string(n_) + " leaves");
    return h;
  }

 private:
  uint64_t piece_end(uint64_t i) const { return i + 1 < count_ ? first_[i + 1] : n_; }

  // Node [lo, hi) of the left-complete tree; its left child holds the largest power of two of
  // leaves that leaves at least one for the right (tree.h).
  Handle value(uint64_t lo, uint64_t hi, bool is_root) {
    if (cursor_ >= count_)
      throw std::invalid_argument("no piece covers leaf " + std::to_string(lo));
    const uint64_t start = first_[cursor_], stop = piece_end(cursor_);
    if (start != lo)
      throw std::invalid_argument("piece " + std::to_string(cursor_) + " starts at leaf " +
                                  std::to_string(start) + ", expected leaf " + std::to_string(lo));
    if (stop <= start || stop > hi)
      throw std::invalid_argument("piece " + std::to_string(cursor_) + " (leaves " +
                                  std::to_string(start) + ".." + std::to_string(stop) +
                                  ") is not a subtree of the tree");
    if (stop == hi) {
      if (is_root)
        throw std::invalid_argument("a piece spans the whole tree; pieces must be proper subtrees");
      Handle h = visitor_.piece(cursor_++);
      visitor_.node(lo, hi, h);
      return h;
    }
    const uint64_t split = uint64_t(1) << floor_log2(hi - lo - 1);
    const Handle left = value(lo, lo + split, false);
    const Handle right = value(lo + split, hi, false);
    Handle h = visitor_.combine(left, right, is_root);
    visitor_.node(lo, hi, h);
    return h;
  }

  const uint64_t* first_;
  uint64_t count_, n_;
  Visitor& visitor_;
  uint64_t cursor_ = 0;
};

// Finishes the root of an input of `total` bytes from the values of pieces that tile its
// leaves in order (TreeWalk says which lists are refused, and why).
template <class Tree>
class SubtreeFinisher {
 public:
  SubtreeFinisher(const uint64_t* first_leaf, const uint8_t (*values)[32], uint64_t count,
                  uint64_t total)
      : first_(first_leaf), values_(values), count_(count), n_(leaf_count<Tree>(total)) {}

  void root(uint8_t out[32]) {
    Values visitor{values_};
    const Node node = TreeWalk<Values>(first_, count_, n_, visitor).root();
    Tree::digest(node.w, out);
  }

 private:
  struct Node {
    uint32_t w[8];
  };
  struct Values {
    using Handle = Node;
    const uint8_t (*values)[32];
    Node piece(uint64_t i) {
      Node n;
      node_from_bytes(static_cast<const Tree*>(nullptr), values[i], n.w);
      return n;
    }
    Node combine(const Node& l, const Node& r, bool root) {
      Node n;
      Tree::combine(l.w, r.w, root, n.w);
      return n;
    }
    void node(uint64_t, uint64_t, const Node&) {}
  };

  const uint64_t* first_;
  const uint8_t (*values_)[32];
  uint64_t count_, n_;
};

}  // namespace sentry
