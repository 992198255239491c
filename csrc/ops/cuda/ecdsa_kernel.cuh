// The ecdsa_p256_verify CUDA kernel itself, free of torch: ecdsa_cuda.cu launches it for the op
// and tests/cpp/test_p256_cuda.cu launches it on Wycheproof and OpenSSL cases, so the GPU test
// checks the very kernel the op runs. One thread per signature, running core/p256.h.
//
// Code size: a verification inlined whole is ~40k instructions, far beyond the instruction
// cache. The field multiplications and squarings are therefore real calls (SENTRY_P256_MUL
// below; arguments and results in registers), which brings the kernel to ~8k instructions
// (about 1.1k of them the multiplications) and the hot loop into the cache. Build with
// -DSENTRY_P256_MUL=__forceinline__ to compare.
//
// Memory: the Q table (8 Jacobian points) and the exponent window table of s^-1 are indexed by
// data, so they live in local memory (L1); the G table is global, read through __ldg; all other
// values stay in registers (ptxas: no spills).
#pragma once
#ifndef SENTRY_P256_MUL
#define SENTRY_P256_MUL inline __noinline__
#endif

#include <cstdint>

#include "../../core/p256.h"

// Blocks per SM that ptxas must fit (register cap 65536 / (kEcdsaThreads * this)). 1 leaves it
// the 150 registers it wants (3 blocks fit); 4 caps it at 128, with a few spills. For measuring.
#ifndef SENTRY_ECDSA_MIN_BLOCKS
#define SENTRY_ECDSA_MIN_BLOCKS 1
#endif

namespace sentry {
namespace cuda {
// Unnamed: each binary that includes this gets its own copy of the kernel (one per program).
namespace {

constexpr int kEcdsaThreads = 128;
// Row sizes (the op's kEcdsa*Bytes; ecdsa_cuda.cu asserts they agree).
constexpr int64_t kKeyRowBytes = 64, kDigestRowBytes = 32, kSignatureRowBytes = 64;

__device__ SENTRY_INLINE uint32_t bswap(uint32_t x) { return __byte_perm(x, 0, 0x0123); }

// 32 big-endian bytes as a number: two 16-byte loads when aligned, else bytewise.
__device__ SENTRY_INLINE p256::U256 load_be(const uint8_t* p, bool aligned) {
  if (!aligned) {
    uint8_t b[32];
    SENTRY_UNROLL
    for (int i = 0; i < 32; ++i) b[i] = __ldg(p + i);
    return p256::from_be_bytes(b);
  }
  const uint4* v = reinterpret_cast<const uint4*>(p);
  const uint4 lo = __ldg(v), hi = __ldg(v + 1);
  const uint32_t m[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};  // memory order
  p256::U256 r;
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) r.w[7 - i] = bswap(m[i]);
  return r;
}

// rows keys [rows, 64], digests [rows, 32], signatures [rows, 64] -> out[rows]. `aligned`: every
// base is 16-byte aligned (then so is every row).
__global__ void __launch_bounds__(kEcdsaThreads, SENTRY_ECDSA_MIN_BLOCKS) ecdsa_verify_kernel(
    const uint8_t* __restrict__ pub, const uint8_t* __restrict__ digest,
    const uint8_t* __restrict__ sig, bool* __restrict__ out, int64_t rows, bool aligned) {
  const int64_t i = int64_t(blockIdx.x) * kEcdsaThreads + threadIdx.x;
  if (i >= rows) return;
  const uint8_t* k = pub + kKeyRowBytes * i;
  const uint8_t* s = sig + kSignatureRowBytes * i;
  const p256::VerifyInput in{load_be(k, aligned), load_be(k + 32, aligned),
                             load_be(digest + kDigestRowBytes * i, aligned),
                             load_be(s, aligned), load_be(s + 32, aligned)};
  out[i] = p256::verify(in);
}

}  // namespace
}  // namespace cuda
}  // namespace sentry
