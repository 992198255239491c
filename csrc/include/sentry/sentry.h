// Sentry's C++ API for LibTorch programs.
//
// Link against the sentry_ops library (it registers the torch.ops.sentry operators) and call
// these; they dispatch to the CPU or CUDA kernel by the tensors' device, like any ATen op.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace sentry {

// One 32-byte digest per tensor (uint8 [N, 32], on the tensors' device) of each tensor's
// logical bytes in row-major order. algorithm: "blake3" or "sha256-tree".
at::Tensor hash_tensors(at::TensorList tensors, const std::string& algorithm = "blake3");

// One 32-byte digest per row (index along dim 0) of x: uint8 [x.size(0), 32].
at::Tensor hash_rows(const at::Tensor& x, const std::string& algorithm = "blake3");

// Batched ECDSA P-256 verification: bool [N], true where signature i (r || s, big-endian,
// uint8 [N, 64]) is valid for SHA-256 digest i (uint8 [N, 32]) under public key i (x || y,
// big-endian, uint8 [N, 64]). A bad row (key off the curve or not reduced, r or s outside
// [1, n-1], wrong signature) is false, never an exception; wrong shapes, dtypes or devices
// throw. All three on one device (CPU: OpenSSL over the thread pool; CUDA: one thread per row).
at::Tensor ecdsa_p256_verify(const at::Tensor& public_keys, const at::Tensor& digests,
                             const at::Tensor& signatures);

// Lower-case hex of each 32-byte row of a digest tensor (copied to the host).
std::vector<std::string> to_hex(const at::Tensor& digests);

}  // namespace sentry
