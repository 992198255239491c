// Input validation of ecdsa_p256_verify, shared by its CPU and CUDA kernels (and mirrored by
// the fake kernel in sentry_ops/_meta.py, with the same messages).
#pragma once
#include <ATen/ATen.h>

namespace sentry {

constexpr int64_t kEcdsaKeyBytes = 64;        // x || y, big-endian
constexpr int64_t kEcdsaDigestBytes = 32;     // SHA-256
constexpr int64_t kEcdsaSignatureBytes = 64;  // r || s, big-endian

struct EcdsaInputs {
  at::Tensor public_keys, digests, signatures;  // contiguous, one device
  int64_t rows;
};

// Checks dtype (uint8), layout, shapes [N, 64] / [N, 32] / [N, 64], the common N and device,
// and returns contiguous tensors (non-contiguous ones are copied). Every error names the
// argument.
EcdsaInputs prepare_ecdsa_inputs(const at::Tensor& public_keys, const at::Tensor& digests,
                                 const at::Tensor& signatures, const char* op);

}  // namespace sentry
