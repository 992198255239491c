// CPU kernel of sentry::check_digests (see ../check_ops.cpp): one pass over the batch, in the
// order the CUDA kernel's result does not depend on.
#include <torch/library.h>

#include <limits>

#include "../check_common.h"

namespace sentry {
namespace cpu {
namespace {

void check_digests_cpu(const at::Tensor& digests, const at::Tensor& labels,
                       const at::Tensor& indices, const at::Tensor& expected,
                       const at::Tensor& expected_labels, const at::Tensor& known,
                       const at::Tensor& seen, const at::Tensor& state) {
  const CheckInputs in = prepare_check_inputs(digests, labels, indices, expected,
                                              expected_labels, known, seen, state);
  const uint8_t* d = in.digests.const_data_ptr<uint8_t>();
  const int64_t* y = in.labels.const_data_ptr<int64_t>();
  const int64_t* idx = in.indices.const_data_ptr<int64_t>();
  const uint8_t* want = expected.const_data_ptr<uint8_t>();
  const int64_t* want_labels = expected_labels.const_data_ptr<int64_t>();
  const bool* is_known = known.const_data_ptr<bool>();
  bool* is_seen = seen.data_ptr<bool>();
  int64_t* s = state.data_ptr<int64_t>();

  int64_t first = std::numeric_limits<int64_t>::max(), first_code = 0, bad = 0;
  for (int64_t i = 0; i < in.batch; ++i) {
    int64_t row = 0;
    const int64_t code = check_row(d + 32 * i, y[i], idx[i], want, want_labels, is_known,
                                   in.table_rows, &row);
    is_seen[row] = true;
    if (code == 0) continue;
    ++bad;
    if (idx[i] < first) {
      first = idx[i];
      first_code = code;
    } else if (idx[i] == first) {
      first_code |= code;  // the same index twice in a batch: both verdicts
    }
  }
  if (bad && !s[kFailed]) {
    s[kFailed] = 1;
    s[kFirstIndex] = first;
    s[kFirstCode] = first_code;
    s[kFirstBatch] = s[kBatchNo];
  }
  s[kBadCount] += bad;
  s[kBatchNo] += 1;
}

}  // namespace

TORCH_LIBRARY_IMPL(sentry, CPU, m) { m.impl("check_digests", &check_digests_cpu); }

}  // namespace cpu
}  // namespace sentry
