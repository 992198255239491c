// CUDA kernel of ecdsa_p256_verify: the launch of ecdsa_kernel.cuh (one thread per signature
// running core/p256.h, the code GoogleTest checks on the CPU against OpenSSL and Wycheproof, and
// on the GPU in tests/cpp/test_p256_cuda.cu). Launch: current stream, no host sync, no
// allocation but the output, so it is CUDA-graph capturable.
// Only the stream and launch-check headers (see hash_cuda.cu for why).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../ecdsa_common.h"
#include "ecdsa_kernel.cuh"

#include <string>

namespace sentry {
namespace cuda {
namespace {

static_assert(kKeyRowBytes == kEcdsaKeyBytes && kDigestRowBytes == kEcdsaDigestBytes &&
                  kSignatureRowBytes == kEcdsaSignatureBytes,
              "ecdsa_kernel.cuh's row sizes are the op's");

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
  const int64_t blocks = (in.rows + kEcdsaThreads - 1) / kEcdsaThreads;
  TORCH_CHECK(blocks < (int64_t(1) << 31), "sentry.ecdsa_p256_verify: ", std::to_string(in.rows),
              " rows are too many for one launch; verify them in parts");
  // Rows are 64 and 32 bytes, so 16-byte alignment of each base aligns every row.
  const bool aligned =
      aligned16(in.public_keys) && aligned16(in.digests) && aligned16(in.signatures);
  ecdsa_verify_kernel<<<static_cast<unsigned>(blocks), kEcdsaThreads, 0,
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
