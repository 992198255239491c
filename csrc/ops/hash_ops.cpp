// Schemas of the hashing operators and the C++ API over them (include/sentry/sentry.h).
// Kernels: cpu/hash_cpu.cpp, cuda/hash_cuda.cu; fake kernels: sentry_ops/_meta.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "../include/sentry/sentry.h"

TORCH_LIBRARY(sentry, m) {
  m.def("hash_tensors(Tensor[] tensors, str algorithm=\"blake3\") -> Tensor");
  m.def("hash_rows(Tensor x, str algorithm=\"blake3\") -> Tensor");
}

namespace sentry {

at::Tensor hash_tensors(at::TensorList tensors, const std::string& algorithm) {
  // With no tensor there is no device to dispatch on; the answer is empty anyway.
  if (tensors.empty()) return at::empty({0, 32}, at::kByte);
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
                    digests.scalar_type(), " ", digests.sizes());
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
