// CUDA kernel of sentry::check_digests (see ../check_ops.cpp): one block checks the whole batch
// (a batch is at most a few thousand rows: no grid-wide reduction needed), so the failure
// state is updated by one thread with no atomics on global memory and no host sync.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <climits>

#include "../check_common.h"

namespace sentry {
namespace cuda {
namespace {

constexpr int kThreads = 512;

__global__ void __launch_bounds__(kThreads) check_kernel(
    const uint8_t* digests, const int64_t* labels, const int64_t* indices, int64_t batch,
    const uint8_t* expected, const int64_t* expected_labels, const bool* known, bool* seen,
    int64_t table_rows, int64_t* state) {
  __shared__ long long first;
  __shared__ unsigned long long bad;
  __shared__ int first_code;
  if (threadIdx.x == 0) {
    first = LLONG_MAX;
    bad = 0;
    first_code = 0;
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < batch; i += kThreads) {
    int64_t row = 0;
    const int64_t code = check_row(digests + 32 * i, labels[i], indices[i], expected,
                                   expected_labels, known, table_rows, &row);
    seen[row] = true;
    if (code) {
      atomicAdd(&bad, 1ull);
      atomicMin(&first, static_cast<long long>(indices[i]));
    }
  }
  __syncthreads();
  if (bad == 0) {
    if (threadIdx.x == 0) state[kBatchNo] += 1;
    return;
  }
  // Second pass, only when something failed: the verdict(s) of the first bad index.
  for (int64_t i = threadIdx.x; i < batch; i += kThreads) {
    if (indices[i] != first) continue;
    int64_t row = 0;
    atomicOr(&first_code, static_cast<int>(check_row(digests + 32 * i, labels[i], indices[i],
                                                     expected, expected_labels, known,
                                                     table_rows, &row)));
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    if (!state[kFailed]) {
      state[kFailed] = 1;
      state[kFirstIndex] = first;
      state[kFirstCode] = first_code;
      state[kFirstBatch] = state[kBatchNo];
    }
    state[kBadCount] += static_cast<int64_t>(bad);
    state[kBatchNo] += 1;
  }
}

void check_digests_cuda(const at::Tensor& digests, const at::Tensor& labels,
                        const at::Tensor& indices, const at::Tensor& expected,
                        const at::Tensor& expected_labels, const at::Tensor& known,
                        const at::Tensor& seen, const at::Tensor& state) {
  const CheckInputs in = prepare_check_inputs(digests, labels, indices, expected,
                                              expected_labels, known, seen, state);
  const c10::cuda::CUDAGuard guard(digests.device());
  check_kernel<<<1, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      in.digests.const_data_ptr<uint8_t>(), in.labels.const_data_ptr<int64_t>(),
      in.indices.const_data_ptr<int64_t>(), in.batch, expected.const_data_ptr<uint8_t>(),
      expected_labels.const_data_ptr<int64_t>(), known.const_data_ptr<bool>(),
      seen.data_ptr<bool>(), in.table_rows, state.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(sentry, CUDA, m) { m.impl("check_digests", &check_digests_cuda); }

}  // namespace cuda
}  // namespace sentry
