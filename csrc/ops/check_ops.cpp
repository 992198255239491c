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

constexpr int64_t kAny = -1;    // any size in this dimension
constexpr int64_t kNoDim = -2;  // no second dimension: a 1-D tensor

// One message string built up front: composing TORCH_CHECK's variadic message out of sizes and
// dimension numbers inside this check crashed the process under torch 2.11 (seen on the H200
// machine), while plain strings are fine everywhere.
void check_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t rows,
                  int64_t cols, const at::Device& device, bool need_contiguous) {
  const std::string what = std::string(kOp) + ": " + name;
  TORCH_CHECK_VALUE(t.layout() == at::kStrided, what + " must be a strided tensor");
  TORCH_CHECK_VALUE(t.scalar_type() == dtype, what + " must be " + c10::toString(dtype) +
                                                  ", got " + c10::toString(t.scalar_type()));
  TORCH_CHECK_VALUE(t.device() == device, what + " is on " + t.device().str() +
                                              " but digests on " + device.str());
  const bool one_d = cols == kNoDim;
  const bool shape_ok = t.dim() == (one_d ? 1 : 2) && (rows == kAny || t.size(0) == rows) &&
                        (one_d || t.size(1) == cols);
  if (!shape_ok) {
    const std::string n = rows == kAny ? "N" : std::to_string(rows);
    const std::string want = one_d ? "[" + n + "]" : "[" + n + ", " + std::to_string(cols) + "]";
    TORCH_CHECK_VALUE(false, what + " has shape " + shape_of(t) + "; expected " + want);
  }
  TORCH_CHECK_VALUE(!need_contiguous || t.is_contiguous(), what + " must be contiguous");
}

}  // namespace

CheckInputs prepare_check_inputs(const at::Tensor& digests, const at::Tensor& labels,
                                 const at::Tensor& indices, const at::Tensor& expected,
                                 const at::Tensor& expected_labels, const at::Tensor& known,
                                 const at::Tensor& seen, const at::Tensor& state) {
  const at::Device device = digests.device();
  check_tensor(digests, "digests", at::kByte, kAny, 32, device, false);
  const int64_t batch = digests.size(0);
  check_tensor(labels, "labels", at::kLong, batch, kNoDim, device, false);
  check_tensor(indices, "indices", at::kLong, batch, kNoDim, device, false);
  check_tensor(expected, "expected", at::kByte, kAny, 32, device, true);
  const int64_t rows = expected.size(0);
  TORCH_CHECK_VALUE(rows >= 1, std::string(kOp) + ": expected needs at least its sentinel row");
  check_tensor(expected_labels, "expected_labels", at::kLong, rows, kNoDim, device, true);
  check_tensor(known, "known", at::kBool, rows, kNoDim, device, true);
  check_tensor(seen, "seen", at::kBool, rows, kNoDim, device, true);
  check_tensor(state, "state", at::kLong, kStateSlots, kNoDim, device, true);
  return {digests.contiguous(), labels.contiguous(), indices.contiguous(), batch, rows};
}

namespace {

void check_digests_unsupported(const at::Tensor& digests, const at::Tensor&, const at::Tensor&,
                               const at::Tensor&, const at::Tensor&, const at::Tensor&,
                               const at::Tensor&, const at::Tensor&) {
  TORCH_CHECK_VALUE(false, std::string(kOp) + ": no kernel for tensors on " +
                               digests.device().str());
}

}  // namespace

TORCH_LIBRARY_IMPL(sentry, CompositeExplicitAutograd, m) {
  m.impl("check_digests", &check_digests_unsupported);
}

}  // namespace sentry
