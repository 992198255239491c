// The Python extension module sentry_ops._C: importing it registers the torch.ops.sentry
// operators (by static initialisers in the op sources) and exposes what the build was made for.
#include <torch/extension.h>

#include "crypto/bindings.h"
#include "io/bindings.h"
#include "io/loader_bindings.h"

#ifndef SENTRY_BUILT_TORCH_VERSION
#define SENTRY_BUILT_TORCH_VERSION "unknown"
#endif
#ifndef SENTRY_BUILT_CUDA_VERSION
#define SENTRY_BUILT_CUDA_VERSION ""
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "Sentry's compiled operators (torch.ops.sentry)";
  m.attr("built_torch_version") = SENTRY_BUILT_TORCH_VERSION;
  // Empty for a CPU-only build.
  m.attr("built_cuda_version") = SENTRY_BUILT_CUDA_VERSION;
#ifdef SENTRY_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  // sentry_ops._C.crypto: ECDSA keys and signatures, DSSE PAE, X.509 chains (csrc/crypto/).
  sentry_register_crypto(m);
  // sentry_ops._C.io: reading untrusted files with positional reads, hashing as they pass.
  sentry_register_io(m);
  // sentry_ops._C.loader: verified loading of signed safetensors files (csrc/io/loader.h).
  sentry_register_loader(m);
}
