// The sample check shared by the CPU and CUDA kernels of sentry::check_digests: input
// validation and the per-row verdict (a torch-free __host__ __device__ function).
#pragma once
#include <ATen/ATen.h>

#include <stdint.h>

#include "../core/hd.h"

namespace sentry {

// Bits of a row's verdict; sentry/dataset.py reads the same values.
constexpr int64_t kBadBytes = 1, kBadLabel = 2, kUnknownIndex = 4;

// State slots (int64 [kStateSlots]): sticky failure flag, then the first failure's sample
// index, verdict and batch number, the count of bad rows, and the number of batches checked.
enum StateSlot : int { kFailed, kFirstIndex, kFirstCode, kFirstBatch, kBadCount, kBatchNo,
                       kStateSlots };

// Row verdict: `table_rows` rows of signed values, the last one a never-known sentinel that
// out-of-range indices are sent to. `*row` gets the table row used (to mark it seen).
SENTRY_HD SENTRY_INLINE int64_t check_row(const uint8_t* digest, int64_t label, int64_t index,
                                          const uint8_t* expected, const int64_t* expected_labels,
                                          const bool* known, int64_t table_rows, int64_t* row) {
  const int64_t r = index >= 0 && index < table_rows - 1 ? index : table_rows - 1;
  *row = r;
  if (!known[r]) return kUnknownIndex;
  uint32_t diff = 0;
  const uint8_t* want = expected + 32 * r;
#if defined(__CUDA_ARCH__)
  if (((reinterpret_cast<uintptr_t>(digest) | reinterpret_cast<uintptr_t>(want)) & 15) == 0) {
    // Two 16-byte loads each instead of 32 byte loads: this compare is the kernel's latency.
    const uint4* a = reinterpret_cast<const uint4*>(digest);
    const uint4* b = reinterpret_cast<const uint4*>(want);
    for (int i = 0; i < 2; ++i) {
      const uint4 x = a[i], y = b[i];
      diff |= (x.x ^ y.x) | (x.y ^ y.y) | (x.z ^ y.z) | (x.w ^ y.w);
    }
  } else
#endif
  {
    for (int i = 0; i < 32; ++i) diff |= digest[i] ^ want[i];
  }
  return (diff ? kBadBytes : 0) | (label != expected_labels[r] ? kBadLabel : 0);
}

// The validated, contiguous inputs of one check_digests call.
struct CheckInputs {
  at::Tensor digests, labels, indices;  // [B, 32] uint8, [B] int64, [B] int64
  int64_t batch, table_rows;
};

// Validates every argument (names it in the error) and returns contiguous batch inputs. The
// tables and the state are written or gathered in place, so they must already be contiguous.
CheckInputs prepare_check_inputs(const at::Tensor& digests, const at::Tensor& labels,
                                 const at::Tensor& indices, const at::Tensor& expected,
                                 const at::Tensor& expected_labels, const at::Tensor& known,
                                 const at::Tensor& seen, const at::Tensor& state);

}  // namespace sentry
