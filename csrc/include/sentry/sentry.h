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

// Lower-case hex of each 32-byte row of a digest tensor (copied to the host).
std::vector<std::string> to_hex(const at::Tensor& digests);

}  // namespace sentry
