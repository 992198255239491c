// Schemas of the hashing operators and the C++ API over them (include/sentry/sentry.h).
// Kernels: cpu/hash_cpu.cpp, cuda/hash_cuda.cu; fake kernels: sentry_ops/_meta.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "../include/sentry/sentry.h"
#include "hash_common.h"

TORCH_LIBRARY(sentry, m) {
  m.def("hash_tensors(Tensor[] tensors, str algorithm=\"blake3\") -> Tensor");
  m.def("hash_rows(Tensor x, str algorithm=\"blake3\") -> Tensor");
}

namespace sentry {
namespace {

// Calls that no CPU or CUDA kernel takes land here: an empty list (no device to dispatch on),
// and sparse, quantized or nested tensors, whose backends have no kernel of ours. The shared
// validation raises the error that names the tensor.
at::Tensor hash_tensors_unsupported(at::TensorList tensors, c10::string_view algorithm) {
  const char* op = "sentry.hash_tensors";
  parse_algorithm(algorithm, op);
  prepare_hash_inputs(tensors, op);
  TORCH_CHECK(tensors.empty(), op, ": no kernel for tensors on ", tensors[0].device());
  return at::empty({0, 32}, at::kByte);
}

at::Tensor hash_rows_unsupported(const at::Tensor& x, c10::string_view algorithm) {
  const char* op = "sentry.hash_rows";
  parse_algorithm(algorithm, op);
  int64_t row_stride = 0;
  prepare_rows_input(x, op, &row_stride);
  TORCH_CHECK(false, op, ": no kernel for a tensor on ", x.device());
}

}  // namespace

TORCH_LIBRARY_IMPL(sentry, CompositeExplicitAutograd, m) {
  m.impl("hash_tensors", &hash_tensors_unsupported);
  m.impl("hash_rows", &hash_rows_unsupported);
}

// Nested tensors stop at their autograd key before reaching any backend kernel.
TORCH_LIBRARY_IMPL(sentry, AutogradNestedTensor, m) {
  m.impl("hash_tensors", &hash_tensors_unsupported);
  m.impl("hash_rows", &hash_rows_unsupported);
}

at::Tensor hash_tensors(at::TensorList tensors, const std::string& algorithm) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sentry::hash_tensors", "")
                       .typed<at::Tensor(at::TensorList, c10::string_view)>();
  return op.call(tensors, algorithm);
}

at::Tensor hash_rows(const at::Tensor& x, const std::string& algorithm) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("sentry::hash_rows", "")
                       .typed<at::Tensor(const at::Tensor&, c10::string_view)>();
  return op.call(x, algorithm);
}

std::vector<std::string> to_hex(const at::Tensor& digests) {
  TORCH_CHECK_VALUE(digests.dim() == 2 && digests.size(1) == 32 &&
                        digests.scalar_type() == at::kByte,
                    "sentry::to_hex: expected a uint8 [N, 32] digest tensor, got ",
                    digests.scalar_type(), " ", shape_of(digests));
  const at::Tensor host = digests.to(at::kCPU).contiguous();
  static const char* kHex = "0123456789abcdef";
  std::vector<std::string> out;
  const uint8_t* p = host.const_data_ptr<uint8_t>();
  for (int64_t r = 0; r < host.size(0); ++r) {
    std::string s(64, '0');
    for (int i = 0; i < 32; ++i) {
      s[2 * i] = kHex[p[32 * r + i] >> 4];
      s[2 * i + 1] = kHex[p[32 * r + i] & 15];
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace sentry
