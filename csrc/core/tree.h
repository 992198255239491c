// The two tree hashes over a byte string, written once for the CPU and the GPU.
//
// Both algorithms cut the input into fixed-size leaves (BLAKE3: 1024-byte chunks; sha256-tree:
// 4096-byte pieces), hash every leaf independently, and combine the leaf values into a
// left-complete binary tree. That tree is what you get by pairing nodes level by level, an odd
// last node moving up unchanged. Two consequences every kernel relies on:
//  * any aligned run of 2^k leaves is a complete subtree, and the trailing run of a tensor is a
//    node of the tree too, so a tensor can be reduced in aligned groups of G = 2^k nodes, level
//    after level, and the group results form the same kind of tree one level up;
//  * only the last combination (the root) differs: BLAKE3 sets its ROOT flag there.
//
// Leaves read their bytes through a Loader so that each backend supplies its own fast loads:
//   void load_le(uint64_t offset, uint32_t w[16]) const;  // 64 bytes as little-endian words
//   uint8_t byte(uint64_t offset) const;
#pragma once
#include <stdint.h>
#include <string.h>

#include "blake3.h"
#include "hd.h"
#include "sha256.h"

namespace sentry {

SENTRY_HD SENTRY_INLINE uint32_t bswap32(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(x, 0, 0x0123);
#else
  return __builtin_bswap32(x);
#endif
}

SENTRY_HD SENTRY_INLINE constexpr uint64_t ceil_div(uint64_t a, uint64_t b) {
  return (a + b - 1) / b;
}

// Loader over a plain host (or device) pointer: byte loads only, any alignment. Used by the
// reference paths and for the unaligned or partial blocks of the fast paths.
struct BytewiseLoader {
  const uint8_t* base;
  SENTRY_HD SENTRY_INLINE uint8_t byte(uint64_t offset) const { return base[offset]; }
  SENTRY_HD SENTRY_INLINE void load_le(uint64_t offset, uint32_t w[16]) const {
    SENTRY_UNROLL
    for (int i = 0; i < 16; ++i) {
      const uint8_t* p = base + offset + 4 * i;
      w[i] = uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) |
             (uint32_t(p[3]) << 24);
    }
  }
};

// Little-endian words of a block of `len` (< 64) bytes at `offset`, zero padded.
template <class Loader>
SENTRY_HD SENTRY_INLINE void load_partial_le(const Loader& ld, uint64_t offset, uint32_t len,
                                             uint32_t w[16]) {
  SENTRY_UNROLL
  for (int i = 0; i < 16; ++i) {
    uint32_t word = 0;
    SENTRY_UNROLL
    for (int b = 0; b < 4; ++b) {
      const uint32_t at = 4 * i + b;
      if (at < len) word |= uint32_t(ld.byte(offset + at)) << (8 * b);
    }
    w[i] = word;
  }
}

struct Blake3Tree {
  static constexpr uint64_t kLeafBytes = blake3::kChunkLen;

  // Chaining value of chunk `index` (len bytes at offset); `root`: the chunk is the whole input.
  template <class Loader>
  SENTRY_HD static void leaf(const Loader& ld, uint64_t offset, uint32_t len, uint64_t index,
                             bool root, uint32_t out[8]) {
    blake3::set_iv(out);
    const uint32_t blocks = blake3::chunk_block_count(len);
    for (uint32_t b = 0; b < blocks; ++b) {
      uint32_t m[16];
      const uint32_t block_len = len - b * blake3::kBlockLen < blake3::kBlockLen
                                     ? len - b * blake3::kBlockLen
                                     : blake3::kBlockLen;
      if (block_len == blake3::kBlockLen) {
        ld.load_le(offset + b * blake3::kBlockLen, m);
      } else {
        load_partial_le(ld, offset + b * blake3::kBlockLen, block_len, m);
      }
      blake3::compress<uint32_t>(out, m, static_cast<uint32_t>(index),
                                 static_cast<uint32_t>(index >> 32), block_len,
                                 blake3::chunk_block_flags(b, blocks, root));
    }
  }

  SENTRY_HD SENTRY_INLINE static void combine(const uint32_t l[8], const uint32_t r[8], bool root,
                                              uint32_t out[8]) {
    blake3::parent(l, r, root, out);
  }

  SENTRY_HD SENTRY_INLINE static void digest(const uint32_t node[8], uint8_t out[32]) {
    blake3::digest_bytes(node, out);
  }
};

struct Sha256Tree {
  static constexpr uint64_t kLeafBytes = 4096;

  // RFC 9162 leaf hash SHA-256(0x00 || piece). The 0x00 prefix shifts the piece by one byte
  // against SHA-256's block grid, so each message word takes the last byte of the previous
  // data word (`carry`) and the first three of its own. An empty input (the only empty leaf)
  // hashes to SHA-256 of the empty string, without the prefix.
  template <class Loader>
  SENTRY_HD static void leaf(const Loader& ld, uint64_t offset, uint32_t len, uint64_t /*index*/,
                             bool /*root*/, uint32_t out[8]) {
    if (len == 0) {
      const uint8_t none = 0;
      sha256::hash(&none, 0, out);
      return;
    }
    sha256::set_iv(out);
    uint32_t carry = 0x00;  // the leaf prefix byte
    const uint32_t full_blocks = len / sha256::kBlockLen;
    for (uint32_t k = 0; k < full_blocks; ++k) {
      uint32_t w[16];
      ld.load_le(offset + k * sha256::kBlockLen, w);
      SENTRY_UNROLL
      for (int j = 0; j < 16; ++j) {
        const uint32_t d = bswap32(w[j]);
        w[j] = (carry << 24) | (d >> 8);
        carry = d & 0xffu;
      }
      sha256::compress(out, w);
    }
    const uint32_t rest = len - full_blocks * sha256::kBlockLen;
    const uint64_t rest_at = offset + full_blocks * sha256::kBlockLen;
    // Tail message bytes: carry, `rest` data bytes, 0x80, zeros, 64-bit bit length.
    const uint32_t tail_blocks = 1 + rest + 1 + 8 <= sha256::kBlockLen ? 1 : 2;
    const uint64_t bit_len = (uint64_t(len) + 1) * 8;
    for (uint32_t blk = 0; blk < tail_blocks; ++blk) {
      uint32_t w[16];
      SENTRY_UNROLL
      for (int j = 0; j < 16; ++j) {
        uint32_t word = 0;
        SENTRY_UNROLL
        for (int b = 0; b < 4; ++b) {
          const uint32_t at = blk * sha256::kBlockLen + 4 * j + b;
          const uint32_t from_end = tail_blocks * sha256::kBlockLen - 1 - at;
          uint32_t v = 0;
          if (at == 0) v = carry;
          else if (at <= rest) v = ld.byte(rest_at + at - 1);
          else if (at == rest + 1) v = 0x80;
          else if (from_end < 8) v = static_cast<uint32_t>(bit_len >> (8 * from_end)) & 0xffu;
          word = (word << 8) | v;
        }
        w[j] = word;
      }
      sha256::compress(out, w);
    }
  }

  // RFC 9162 node hash SHA-256(0x01 || left || right), 65 bytes: two blocks.
  SENTRY_HD SENTRY_INLINE static void combine(const uint32_t l[8], const uint32_t r[8],
                                              bool /*root*/, uint32_t out[8]) {
    uint32_t w[16];
    uint32_t carry = 0x01;
    SENTRY_UNROLL
    for (int j = 0; j < 16; ++j) {
      const uint32_t d = j < 8 ? l[j] : r[j - 8];
      w[j] = (carry << 24) | (d >> 8);
      carry = d & 0xffu;
    }
    sha256::set_iv(out);
    sha256::compress(out, w);
    w[0] = (carry << 24) | 0x00800000u;
    SENTRY_UNROLL
    for (int j = 1; j < 15; ++j) w[j] = 0;
    w[15] = 65 * 8;
    sha256::compress(out, w);
  }

  SENTRY_HD SENTRY_INLINE static void digest(const uint32_t node[8], uint8_t out[32]) {
    sha256::digest_bytes(node, out);
  }
};

// Number of leaves of an input of `nbytes` (an empty input is one empty leaf).
template <class Tree>
SENTRY_HD SENTRY_INLINE uint64_t leaf_count(uint64_t nbytes) {
  return nbytes == 0 ? 1 : ceil_div(nbytes, Tree::kLeafBytes);
}

// Leaf `index` of an input of `nbytes` at `base` (relative to the loader): value into out.
template <class Tree, class Loader>
SENTRY_HD SENTRY_INLINE void hash_leaf(const Loader& ld, uint64_t nbytes, uint64_t index,
                                       uint32_t out[8]) {
  const uint64_t offset = index * Tree::kLeafBytes;
  const uint64_t left = nbytes - offset;
  const uint32_t len = static_cast<uint32_t>(left < Tree::kLeafBytes ? left : Tree::kLeafBytes);
  Tree::leaf(ld, offset, len, index, leaf_count<Tree>(nbytes) == 1, out);
}

// Reduces `count` >= 1 consecutive nodes in place, level by level, to nodes[0].
// `is_root`: these nodes are a whole level of the tree, so the last combination is the root.
template <class Tree>
SENTRY_HD inline void reduce_nodes(uint32_t (*nodes)[8], uint64_t count, bool is_root) {
  while (count > 1) {
    const uint64_t pairs = count / 2;
    for (uint64_t k = 0; k < pairs; ++k) {
      uint32_t parent[8];
      Tree::combine(nodes[2 * k], nodes[2 * k + 1], is_root && count == 2, parent);
      for (int i = 0; i < 8; ++i) nodes[k][i] = parent[i];
    }
    if (count & 1) {
      for (int i = 0; i < 8; ++i) nodes[pairs][i] = nodes[count - 1][i];
    }
    count = pairs + (count & 1);
  }
}

}  // namespace sentry
