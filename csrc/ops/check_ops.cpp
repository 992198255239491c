// Schema and shared validation of sentry::check_digests, the on-device sample check of a
// DatasetChecker (sentry/dataset.py). Kernels: cpu/check_cpu.cpp, cuda/check_cuda.cu.
//
// check_digests(digests, labels, indices, expected, expected_labels, known, seen, state) checks
// a batch of B sample digests (from hash_rows) and labels against the signed tables, which are
// dense by sample index with one extra sentinel row, marks the rows seen, and folds the batch's
// verdict into `state` (see StateSlot): no output, nothing returned to the host.
#include <torch/library.h>

#include "check_common.h"
#include "hash_common.h"

TORCH_LIBRARY_FRAGMENT(sentry, m) {
  m.def("check_digests(Tensor digests, Tensor labels, Tensor indices, Tensor expected, "
        "Tensor expected_labels, Tensor known, Tensor(a!) seen, Tensor(b!) state) -> ()");
}

namespace sentry {
namespace {

constexpr const char* kOp = "sentry.check_digests";

void check_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype,
                  std::initializer_list<int64_t> shape, const at::Device& device,
                  bool need_contiguous) {
  TORCH_CHECK(t.layout() == at::kStrided, kOp, ": ", name, " must be a strided tensor");
  TORCH_CHECK(t.scalar_type() == dtype, kOp, ": ", name, " must be ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.device() == device, kOp, ": ", name, " is on ", t.device(), " but digests on ",
              device);
  TORCH_CHECK(t.dim() == static_cast<int64_t>(shape.size()), kOp, ": ", name, " must have ",
              shape.size(), " dimension(s), got shape ", shape_of(t));
  int d = 0;
  for (int64_t want : shape) {
    TORCH_CHECK(want < 0 || t.size(d) == want, kOp, ": ", name, " has shape ", shape_of(t),
                "; dimension ", d, " must be ", want);
    ++d;
  }
  TORCH_CHECK(!need_contiguous || t.is_contiguous(), kOp, ": ", name, " must be contiguous");
}

}  // namespace

CheckInputs prepare_check_inputs(const at::Tensor& digests, const at::Tensor& labels,
                                 const at::Tensor& indices, const at::Tensor& expected,
                                 const at::Tensor& expected_labels, const at::Tensor& known,
                                 const at::Tensor& seen, const at::Tensor& state) {
  const at::Device device = digests.device();
  check_tensor(digests, "digests", at::kByte, {-1, 32}, device, false);
  const int64_t batch = digests.size(0);
  check_tensor(labels, "labels", at::kLong, {batch}, device, false);
  check_tensor(indices, "indices", at::kLong, {batch}, device, false);
  check_tensor(expected, "expected", at::kByte, {-1, 32}, device, true);
  const int64_t rows = expected.size(0);
  TORCH_CHECK(rows >= 1, kOp, ": expected needs at least its sentinel row");
  check_tensor(expected_labels, "expected_labels", at::kLong, {rows}, device, true);
  check_tensor(known, "known", at::kBool, {rows}, device, true);
  check_tensor(seen, "seen", at::kBool, {rows}, device, true);
  check_tensor(state, "state", at::kLong, {kStateSlots}, device, true);
  return {digests.contiguous(), labels.contiguous(), indices.contiguous(), batch, rows};
}

namespace {

void check_digests_unsupported(const at::Tensor& digests, const at::Tensor&, const at::Tensor&,
                               const at::Tensor&, const at::Tensor&, const at::Tensor&,
                               const at::Tensor&, const at::Tensor&) {
  TORCH_CHECK(false, kOp, ": no kernel for tensors on ", digests.device(), " with layout ",
              digests.layout());
}

}  // namespace

TORCH_LIBRARY_IMPL(sentry, CompositeExplicitAutograd, m) {
  m.impl("check_digests", &check_digests_unsupported);
}

}  // namespace sentry
