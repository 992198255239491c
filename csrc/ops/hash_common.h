// Glue shared by the CPU and CUDA hashing kernels: algorithm names, input validation and the
// byte segments a call hashes. Every check names the offending tensor by its index.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace sentry {

enum class Algorithm { kBlake3, kSha256Tree };

Algorithm parse_algorithm(c10::string_view name, const char* op);

// One byte string to hash: a tensor's logical bytes, or one row of a batch.
struct Segment {
  const uint8_t* data;
  uint64_t nbytes;
};

// Validates the inputs of hash_tensors and returns them with a contiguous layout (only
// non-contiguous tensors are copied, one at a time) on the common device.
std::vector<at::Tensor> prepare_hash_inputs(at::TensorList tensors, const char* op);

// Validates the input of hash_rows; returns a tensor whose rows are each contiguous (x itself
// when they are already) and the row stride in bytes through `row_stride`.
at::Tensor prepare_rows_input(const at::Tensor& x, const char* op, int64_t* row_stride);

// "[4, 31]", for error messages. Under torch 2.11 (the H200 machine) a TORCH_CHECK message
// given integers or sizes() crashed the process when it failed, while strings are fine: so
// messages take std::to_string(n) and shape_of(t), never the numbers themselves.
inline std::string shape_of(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

inline uint64_t byte_size(const at::Tensor& t) {
  return static_cast<uint64_t>(t.numel()) * t.element_size();
}

}  // namespace sentry
