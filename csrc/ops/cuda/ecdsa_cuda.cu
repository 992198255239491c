// CUDA kernel of ecdsa_p256_verify: one thread per signature running core/p256.h, the code
// GoogleTest checks on the CPU against OpenSSL and Wycheproof (tests/cpp/test_p256.cpp).
//
// Code size: a verification inlined whole is ~40k instructions, far beyond the instruction
// cache. The field multiplications and squarings are therefore real calls (SENTRY_P256_MUL
// below; arguments and results in registers), which brings the kernel to ~8k instructions
// (about 1.1k of them the multiplications) and the hot loop into the cache. Build with
// -DSENTRY_P256_MUL=__forceinline__ to compare.
//
// Memory: the Q table (8 Jacobian points) and the exponent window table of s^-1 are indexed by
// data, so they live in local memory (L1); the G table is global, read through __ldg; all other
// values stay in registers (ptxas: no spills). Launch: current stream, no host sync, no
// allocation but the output, so it is CUDA-graph capturable.
// Only the stream and launch-check headers (see hash_cuda.cu for why).
#ifndef SENTRY_P256_MUL
#define SENTRY_P256_MUL inline __noinline__
#endif

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../../core/p256.h"
#include "../ecdsa_common.h"

#include <string>

namespace sentry {
namespace cuda {
namespace {

constexpr int kThreads = 128;
// Blocks per SM that ptxas must fit (register cap 65536 / (kThreads * this)). 1 leaves it the
// 150 registers it wants (3 blocks fit); 4 caps it at 128, with a few spills. For measuring.
#ifndef SENTRY_ECDSA_MIN_BLOCKS
#define SENTRY_ECDSA_MIN_BLOCKS 1
#endif

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

__global__ void __launch_bounds__(kThreads, SENTRY_ECDSA_MIN_BLOCKS) ecdsa_verify_kernel(
    const uint8_t* __restrict__ pub, const uint8_t* __restrict__ digest,
    const uint8_t* __restrict__ sig, bool* __restrict__ out, int64_t rows, bool aligned) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= rows) return;
  const uint8_t* k = pub + kEcdsaKeyBytes * i;
  const uint8_t* s = sig + kEcdsaSignatureBytes * i;
  const p256::VerifyInput in{load_be(k, aligned), load_be(k + 32, aligned),
                             load_be(digest + kEcdsaDigestBytes * i, aligned), load_be(s, aligned),
                             load_be(s + 32, aligned)};
  out[i] = p256::verify(in);
}

bool aligned16(const at::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 == 0;
}

at::Tensor ecdsa_p256_verify_cuda(const at::Tensor& public_keys, const at::Tensor& digests,
                                  const at::Tensor& signatures) {
  const EcdsaInputs in =
      prepare_ecdsa_inputs(public_keys, digests, signatures, "sentry.ecdsa_p256_verify");
  const c10::cuda::CUDAGuard guard(in.public_keys.device());
  at::Tensor out =
      at::empty({in.rows}, at::TensorOptions().dtype(at::kBool).device(in.public_keys.device()));
  if (in.rows == 0) return out;
  const int64_t blocks = (in.rows + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks < (int64_t(1) << 31), "sentry.ecdsa_p256_verify: ", std::to_string(in.rows),
              " rows are too many for one launch; verify them in parts");
  // Rows are 64 and 32 bytes, so 16-byte alignment of each base aligns every row.
  const bool aligned =
      aligned16(in.public_keys) && aligned16(in.digests) && aligned16(in.signatures);
  ecdsa_verify_kernel<<<static_cast<unsigned>(blocks), kThreads, 0,
                        c10::cuda::getCurrentCUDAStream()>>>(
      in.public_keys.const_data_ptr<uint8_t>(), in.digests.const_data_ptr<uint8_t>(),
      in.signatures.const_data_ptr<uint8_t>(), out.data_ptr<bool>(), in.rows, aligned);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sentry, CUDA, m) { m.impl("ecdsa_p256_verify", &ecdsa_p256_verify_cuda); }

}  // namespace cuda
}  // namespace sentry
