// The sharded-hashing core (csrc/core/subtree.h): for random splits of random inputs, the
// pieces of every shard, hashed straight from the core's leaf and combine functions and
// finished by SubtreeFinisher, give exactly the whole input's tree_hash (itself checked against
// the BLAKE3 vectors and RFC 9162 in test_core.cpp). Also: the pieces tile each shard's whole
// leaves with aligned proper subtrees, and malformed piece lists are refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "subtree.h"
#include "tree_host.h"

namespace {

using sentry::Blake3Tree;
using sentry::Piece;
using sentry::Sha256Tree;

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(gen());
  return v;
}

// Value of the piece from the full input: its 2^level leaves reduced as a subtree.
template <class Tree>
void piece_bytes(const std::vector<uint8_t>& data, const Piece& p, uint8_t out[32]) {
  const uint64_t count = uint64_t(1) << p.level;
  std::vector<uint32_t> nodes(count * 8);
  auto* node = reinterpret_cast<uint32_t(*)[8]>(nodes.data());
  const sentry::BytewiseLoader ld{data.data()};
  for (uint64_t k = 0; k < count; ++k)
    sentry::hash_leaf<Tree>(ld, data.size(), p.first_leaf + k, node[k]);
  sentry::reduce_nodes<Tree>(node, count, /*is_root=*/false);
  Tree::digest(node[0], out);
}

// Splits [0, n) at `cuts`, hashes each shard's pieces, adds each boundary leaf (the leaves no
// shard holds whole) as a piece of its own, and finishes.
template <class Tree>
std::vector<uint8_t> sharded_digest(const std::vector<uint8_t>& data, std::vector<uint64_t> cuts) {
  const uint64_t n = data.size();
  std::sort(cuts.begin(), cuts.end());
  cuts.insert(cuts.begin(), 0);
  cuts.push_back(n);
  std::vector<uint64_t> firsts;
  std::vector<std::array<uint8_t, 32>> values;
  std::vector<bool> covered(sentry::leaf_count<Tree>(n), false);
  std::vector<std::pair<uint64_t, std::array<uint8_t, 32>>> all;
  for (size_t s = 0; s + 1 < cuts.size(); ++s) {
    const auto leaves = sentry::shard_leaves<Tree>(cuts[s], cuts[s + 1] - cuts[s], n);
    uint64_t expect_at = leaves.first;
    for (const Piece& p : sentry::pieces_of(leaves)) {
      EXPECT_EQ(p.first_leaf, expect_at);
      EXPECT_EQ(p.first_leaf % (uint64_t(1) << p.level), 0u) << "piece not aligned";
      EXPECT_LE(p.level, leaves.max_level);
      std::array<uint8_t, 32> v;
      piece_bytes<Tree>(data, p, v.data());
      all.push_back({p.first_leaf, v});
      for (uint64_t k = 0; k < (uint64_t(1) << p.level); ++k) covered[p.first_leaf + k] = true;
      expect_at += uint64_t(1) << p.level;
    }
    EXPECT_EQ(expect_at, leaves.end);
  }
  for (uint64_t g = 0; g < covered.size(); ++g) {
    if (covered[g]) continue;
    std::array<uint8_t, 32> v;
    piece_bytes<Tree>(data, Piece{g, 0}, v.data());
    all.push_back({g, v});
  }
  std::sort(all.begin(), all.end());
  for (auto& [first, v] : all) {
    firsts.push_back(first);
    values.push_back(v);
  }
  std::vector<uint8_t> out(32);
  sentry::SubtreeFinisher<Tree>(firsts.data(),
                                reinterpret_cast<const uint8_t(*)[32]>(values.data()),
                                firsts.size(), n)
      .root(out.data());
  return out;
}

template <class Tree>
void check_random_splits(uint32_t seed) {
  std::mt19937_64 gen(seed);
  const uint64_t L = Tree::kLeafBytes;
  // Sizes at and around powers of two of leaves, and odd ones.
  const uint64_t sizes[] = {L + 1, 2 * L, 2 * L + 1, 3 * L - 1, 4 * L, 4 * L + 7, 5 * L,
                            8 * L - 1, 8 * L, 8 * L + 1, 13 * L + 100, 16 * L, 33 * L + 5};
  for (uint64_t n : sizes) {
    const auto data = random_bytes(n, static_cast<uint32_t>(n + seed));
    std::vector<uint8_t> whole(32);
    sentry::tree_hash<Tree>(data.data(), n, whole.data());
    for (int trial = 0; trial < 12; ++trial) {
      std::vector<uint64_t> cuts;
      const int shards = 1 + static_cast<int>(gen() % 6);
      for (int c = 1; c < shards; ++c) {
        // Mix cuts at leaf boundaries, inside leaves, and repeated cuts (empty shards).
        const uint64_t kind = gen() % 3;
        uint64_t at = gen() % (n + 1);
        if (kind == 0) at = at / L * L;
        cuts.push_back(at);
        if (kind == 2) cuts.push_back(at);
      }
      EXPECT_EQ(sharded_digest<Tree>(data, cuts), whole) << "n " << n << " trial " << trial;
    }
  }
}

TEST(Subtree, Blake3RandomSplitsEqualWholeDigest) { check_random_splits<Blake3Tree>(1); }
TEST(Subtree, Sha256TreeRandomSplitsEqualWholeDigest) { check_random_splits<Sha256Tree>(2); }

TEST(Subtree, WholeInputPiecesAreProperSubtrees) {
  // One shard holding all 8 leaves: two pieces of 4, never the root itself.
  const auto s = sentry::shard_leaves<Blake3Tree>(0, 8 * 1024, 8 * 1024);
  const auto pieces = sentry::pieces_of(s);
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[0].level, 2);
  EXPECT_EQ(pieces[1].first_leaf, 4u);
  // One leaf (or none): no piece at all; the caller hashes the bytes.
  EXPECT_TRUE(sentry::pieces_of(sentry::shard_leaves<Blake3Tree>(0, 1024, 1024)).empty());
  EXPECT_TRUE(sentry::pieces_of(sentry::shard_leaves<Sha256Tree>(0, 0, 0)).empty());
}

TEST(Subtree, ShardOutsideInputIsRefused) {
  EXPECT_THROW(sentry::shard_leaves<Blake3Tree>(10, 5, 12), std::invalid_argument);
}

TEST(Subtree, FinisherRefusesBadTilings) {
  const uint8_t values[4][32] = {};
  const auto rows = reinterpret_cast<const uint8_t(*)[32]>(values);
  uint8_t out[32];
  const uint64_t total = 4 * 1024;  // four leaves
  const uint64_t halves[] = {0, 2};  // [0,2) [2,4): fine
  EXPECT_NO_THROW(sentry::SubtreeFinisher<Blake3Tree>(halves, rows, 2, total).root(out));
  const uint64_t not_node[] = {0, 1, 3};  // [1,3) is not a node of the tree
  EXPECT_THROW(sentry::SubtreeFinisher<Blake3Tree>(not_node, rows, 3, total).root(out),
               std::invalid_argument);
  const uint64_t whole[] = {0};  // the root itself has no ROOT flag: refused
  EXPECT_THROW(sentry::SubtreeFinisher<Blake3Tree>(whole, rows, 1, total).root(out),
               std::invalid_argument);
  const uint64_t straddles[] = {0, 3};  // [0,3) crosses the root's split at leaf 2
  EXPECT_THROW(sentry::SubtreeFinisher<Blake3Tree>(straddles, rows, 2, total).root(out),
               std::invalid_argument);
  const uint64_t past[] = {0, 2, 4};  // a piece past the last leaf
  EXPECT_THROW(sentry::SubtreeFinisher<Blake3Tree>(past, rows, 3, total).root(out),
               std::invalid_argument);
  const uint64_t one_leaf[] = {0};
  EXPECT_THROW(sentry::SubtreeFinisher<Sha256Tree>(one_leaf, rows, 1, 100).root(out),
               std::invalid_argument);
}

}  // namespace
