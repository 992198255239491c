// The Python extension module sentry_ops._C: importing it registers the torch.ops.sentry
// operators (by static initialisers in the op sources) and exposes what the build was made for.
#include <torch/extension.h>

#include "bundle/bindings.h"
#include "crypto/bindings.h"
#include "io/bindings.h"
#include "io/loader_bindings.h"
#include "ops/run_plan.h"

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
  // sentry_ops._C.bundle: the bundle and statement reader, verify_model (csrc/bundle/).
  sentry_register_bundle(m);
  // sentry_ops._C.io: reading untrusted files with positional reads, hashing as they pass.
  sentry_register_io(m);
  // sentry_ops._C.loader: verified loading of signed safetensors files (csrc/io/loader.h).
  sentry_register_loader(m);
  // The host planners of the run-based sharded hash (ops/run_plan.h), for sentry.syncplan.
  m.def("plan_runs", &sentry::plan_runs, "run plan (header, body) of one rank's byte runs",
        pybind11::arg("runs"), pybind11::arg("algorithm"), pybind11::arg("with_edges") = true);
  m.def("plan_finish", &sentry::plan_finish,
        "finish plan (header, body, segments) of the trees to finish from gathered messages",
        pybind11::arg("trees"), pybind11::arg("items"), pybind11::arg("leaves"),
        pybind11::arg("fragments"), pybind11::arg("algorithm"));
}
