// BLAKE3 compression, chunk and parent functions (hash mode, 32-byte output).
// Follows the BLAKE3 specification and the reference C code: a chunk is 1024 bytes hashed as
// up to 16 blocks of 64, chunks are combined by parent nodes into a left-complete binary tree,
// and the root node is compressed once more with the ROOT flag.
//
// The compression is a template over the word type W so that the same source runs with
// W = uint32_t (one message per thread on the GPU, the scalar CPU path) and with W = a SIMD
// vector of uint32 lanes (several chunks at once on the CPU).
#pragma once
#include <stdint.h>

#include "hd.h"

namespace sentry {
namespace blake3 {

constexpr uint32_t kChunkLen = 1024;
constexpr uint32_t kBlockLen = 64;

constexpr uint32_t kIV0 = 0x6A09E667u, kIV1 = 0xBB67AE85u, kIV2 = 0x3C6EF372u, kIV3 = 0xA54FF53Au;
constexpr uint32_t kIV4 = 0x510E527Fu, kIV5 = 0x9B05688Cu, kIV6 = 0x1F83D9ABu, kIV7 = 0x5BE0CD19u;

constexpr uint32_t kChunkStart = 1u << 0;
constexpr uint32_t kChunkEnd = 1u << 1;
constexpr uint32_t kParent = 1u << 2;
constexpr uint32_t kRoot = 1u << 3;

// Works for uint32_t and for GCC/clang vector types alike (scalar shift counts broadcast).
template <class W>
SENTRY_HD SENTRY_INLINE W rotr(W x, int n) {
  return (x >> n) | (x << (32 - n));
}

template <class W>
SENTRY_HD SENTRY_INLINE W splat(uint32_t x) {
  return W{} + x;
}

template <class W>
SENTRY_HD SENTRY_INLINE void g(W& a, W& b, W& c, W& d, W mx, W my) {
  a = a + b + mx;
  d = rotr(d ^ a, 16);
  c = c + d;
  b = rotr(b ^ c, 12);
  a = a + b + my;
  d = rotr(d ^ a, 8);
  c = c + d;
  b = rotr(b ^ c, 7);
}

template <class W>
SENTRY_HD SENTRY_INLINE void round_fn(W v[16], const W m[16]) {
  g(v[0], v[4], v[8], v[12], m[0], m[1]);
  g(v[1], v[5], v[9], v[13], m[2], m[3]);
  g(v[2], v[6], v[10], v[14], m[4], m[5]);
  g(v[3], v[7], v[11], v[15], m[6], m[7]);
  g(v[0], v[5], v[10], v[15], m[8], m[9]);
  g(v[1], v[6], v[11], v[12], m[10], m[11]);
  g(v[2], v[7], v[8], v[13], m[12], m[13]);
  g(v[3], v[4], v[9], v[14], m[14], m[15]);
}

// The spec's MSG_PERMUTATION {2,6,3,10,7,0,4,13,1,11,12,5,9,14,15,8}, written out so that no
// table lives in memory: with the rounds unrolled this is register renaming only.
template <class W>
SENTRY_HD SENTRY_INLINE void permute(W m[16]) {
  const W t0 = m[0], t1 = m[1], t2 = m[2], t3 = m[3], t4 = m[4], t5 = m[5], t6 = m[6], t7 = m[7];
  const W t8 = m[8], t9 = m[9], t10 = m[10], t11 = m[11], t12 = m[12], t13 = m[13], t14 = m[14],
          t15 = m[15];
  m[0] = t2;  m[1] = t6;  m[2] = t3;   m[3] = t10;  m[4] = t7;   m[5] = t0;   m[6] = t4;   m[7] = t13;
  m[8] = t1;  m[9] = t11; m[10] = t12; m[11] = t5;  m[12] = t9;  m[13] = t14; m[14] = t15; m[15] = t8;
}

// Compresses one block into the chaining value cv (the first 8 output words, which is all the
// hash mode with 32-byte output needs). m is used as scratch.
template <class W>
SENTRY_HD SENTRY_INLINE void compress(W cv[8], W m[16], W counter_lo, W counter_hi, W block_len,
                                      W flags) {
  W v[16] = {cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7],
             splat<W>(kIV0), splat<W>(kIV1), splat<W>(kIV2), splat<W>(kIV3),
             counter_lo, counter_hi, block_len, flags};
  SENTRY_UNROLL
  for (int r = 0; r < 7; ++r) {
    round_fn(v, m);
    if (r < 6) permute(m);
  }
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) cv[i] = v[i] ^ v[i + 8];
}

template <class W>
SENTRY_HD SENTRY_INLINE void set_iv(W cv[8]) {
  cv[0] = splat<W>(kIV0); cv[1] = splat<W>(kIV1); cv[2] = splat<W>(kIV2); cv[3] = splat<W>(kIV3);
  cv[4] = splat<W>(kIV4); cv[5] = splat<W>(kIV5); cv[6] = splat<W>(kIV6); cv[7] = splat<W>(kIV7);
}

// Flags of block `index` (0-based) of a chunk with `count` blocks; `root`: this chunk is the
// whole input, so its last block is also the root compression.
SENTRY_HD SENTRY_INLINE uint32_t chunk_block_flags(uint32_t index, uint32_t count, bool root) {
  uint32_t flags = index == 0 ? kChunkStart : 0u;
  if (index + 1 == count) flags |= kChunkEnd | (root ? kRoot : 0u);
  return flags;
}

// Number of 64-byte blocks a chunk of `len` bytes is hashed as (an empty chunk is one block).
SENTRY_HD SENTRY_INLINE uint32_t chunk_block_count(uint32_t len) {
  return len == 0 ? 1u : (len + kBlockLen - 1) / kBlockLen;
}

// Parent node (or the root, when `root`) of two child chaining values.
SENTRY_HD SENTRY_INLINE void parent(const uint32_t left[8], const uint32_t right[8], bool root,
                                    uint32_t out[8]) {
  uint32_t m[16];
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) {
    m[i] = left[i];
    m[i + 8] = right[i];
  }
  set_iv(out);
  compress<uint32_t>(out, m, 0u, 0u, kBlockLen, kParent | (root ? kRoot : 0u));
}

// The 32-byte digest is the root's chaining value in little-endian byte order.
SENTRY_HD SENTRY_INLINE void digest_bytes(const uint32_t root_cv[8], uint8_t out[32]) {
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) {
    out[4 * i + 0] = static_cast<uint8_t>(root_cv[i]);
    out[4 * i + 1] = static_cast<uint8_t>(root_cv[i] >> 8);
    out[4 * i + 2] = static_cast<uint8_t>(root_cv[i] >> 16);
    out[4 * i + 3] = static_cast<uint8_t>(root_cv[i] >> 24);
  }
}

}  // namespace blake3
}  // namespace sentry
