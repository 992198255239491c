// SHA-256 (FIPS 180-4): the compression function and a plain one-shot hash.
// The tree leaves and nodes (tree.h) feed this compression function; both the CPU and the
// CUDA kernels run this source.
#pragma once
#include <stdint.h>
#include <stddef.h>

#include "hd.h"

namespace sentry {
namespace sha256 {

constexpr uint32_t kBlockLen = 64;

SENTRY_HD SENTRY_INLINE uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

SENTRY_HD SENTRY_INLINE void set_iv(uint32_t s[8]) {
  s[0] = 0x6a09e667u; s[1] = 0xbb67ae85u; s[2] = 0x3c6ef372u; s[3] = 0xa54ff53au;
  s[4] = 0x510e527fu; s[5] = 0x9b05688cu; s[6] = 0x1f83d9abu; s[7] = 0x5be0cd19u;
}

// Round constant t. Called with compile-time t inside fully unrolled loops, so it folds to an
// immediate on both host and device (no table in memory).
SENTRY_HD SENTRY_INLINE constexpr uint32_t k(int t) {
  constexpr uint32_t K[64] = {
      0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u,
      0xab1c5ed5u, 0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu,
      0x9bdc06a7u, 0xc19bf174u, 0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu,
      0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau, 0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u,
      0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u, 0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu,
      0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u, 0xa2bfe8a1u, 0xa81a664bu,
      0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u, 0x19a4c116u,
      0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
      0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u,
      0xc67178f2u};
  return K[t];
}

// One compression of a 64-byte block given as 16 big-endian words. w is used as scratch.
SENTRY_HD SENTRY_INLINE void compress(uint32_t s[8], uint32_t w[16]) {
  uint32_t a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
  SENTRY_UNROLL
  for (int t = 0; t < 64; ++t) {
    if (t >= 16) {
      const uint32_t w15 = w[(t - 15) & 15], w2 = w[(t - 2) & 15];
      const uint32_t s0 = rotr(w15, 7) ^ rotr(w15, 18) ^ (w15 >> 3);
      const uint32_t s1 = rotr(w2, 17) ^ rotr(w2, 19) ^ (w2 >> 10);
      w[t & 15] += s0 + w[(t - 7) & 15] + s1;
    }
    const uint32_t big_s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
    const uint32_t ch = (e & f) ^ (~e & g);
    const uint32_t t1 = h + big_s1 + ch + k(t) + w[t & 15];
    const uint32_t big_s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
    const uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
    h = g; g = f; f = e; e = d + t1;
    d = c; c = b; b = a; a = t1 + big_s0 + maj;
  }
  s[0] += a; s[1] += b; s[2] += c; s[3] += d; s[4] += e; s[5] += f; s[6] += g; s[7] += h;
}

SENTRY_HD SENTRY_INLINE uint32_t load_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

SENTRY_HD SENTRY_INLINE void digest_bytes(const uint32_t s[8], uint8_t out[32]) {
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) {
    out[4 * i + 0] = static_cast<uint8_t>(s[i] >> 24);
    out[4 * i + 1] = static_cast<uint8_t>(s[i] >> 16);
    out[4 * i + 2] = static_cast<uint8_t>(s[i] >> 8);
    out[4 * i + 3] = static_cast<uint8_t>(s[i]);
  }
}

// Plain SHA-256 of a byte string in memory, byte by byte: the reference path (tests, the empty
// sha256-tree input), not the fast one.
SENTRY_HD inline void hash(const uint8_t* data, uint64_t len, uint32_t s[8]) {
  set_iv(s);
  uint32_t w[16];
  uint64_t done = 0;
  for (; done + kBlockLen <= len; done += kBlockLen) {
    for (int i = 0; i < 16; ++i) w[i] = load_be32(data + done + 4 * i);
    compress(s, w);
  }
  uint8_t tail[128];
  const uint32_t rest = static_cast<uint32_t>(len - done);
  for (uint32_t i = 0; i < rest; ++i) tail[i] = data[done + i];
  tail[rest] = 0x80;
  const uint32_t tail_len = rest + 9 <= 64 ? 64 : 128;
  for (uint32_t i = rest + 1; i < tail_len - 8; ++i) tail[i] = 0;
  const uint64_t bits = len * 8;
  for (int i = 0; i < 8; ++i) tail[tail_len - 1 - i] = static_cast<uint8_t>(bits >> (8 * i));
  for (uint32_t b = 0; b < tail_len; b += kBlockLen) {
    for (int i = 0; i < 16; ++i) w[i] = load_be32(tail + b + 4 * i);
    compress(s, w);
  }
}

}  // namespace sha256
}  // namespace sentry
