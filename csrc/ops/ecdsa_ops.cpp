// Schema of the batched ECDSA P-256 verification and its C++ API (include/sentry/sentry.h).
// Kernels: cpu/ecdsa_cpu.cpp (OpenSSL), cuda/ecdsa_cuda.cu (core/p256.h); fake kernel:
// sentry_ops/_meta.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "../include/sentry/sentry.h"
#include "ecdsa_common.h"

TORCH_LIBRARY_FRAGMENT(sentry, m) {
  m.def("ecdsa_p256_verify(Tensor public_keys, Tensor digests, Tensor signatures) -> Tensor");
}

namespace sentry {
namespace {

// Calls no CPU or CUDA kernel takes (sparse, nested, other devices): the shared validation
// raises the error that names the argument.
at::Tensor ecdsa_p256_verify_unsupported(const at::Tensor& public_keys, const at::Tensor& digests,
                                         const at::Tensor& signatures) {
  const char* op = "sentry.ecdsa_p256_verify";
  prepare_ecdsa_inputs(public_keys, digests, signatures, op);
  TORCH_CHECK(false, op, ": no kernel for tensors on ", public_keys.device());
}

}  // namespace

TORCH_LIBRARY_IMPL(sentry, CompositeExplicitAutograd, m) {
  m.impl("ecdsa_p256_verify", &ecdsa_p256_verify_unsupported);
}

TORCH_LIBRARY_IMPL(sentry, AutogradNestedTensor, m) {
  m.impl("ecdsa_p256_verify", &ecdsa_p256_verify_unsupported);
}

at::Tensor ecdsa_p256_verify(const at::Tensor& public_keys, const at::Tensor& digests,
                             const at::Tensor& signatures) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("sentry::ecdsa_p256_verify", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op.call(public_keys, digests, signatures);
}

}  // namespace sentry
