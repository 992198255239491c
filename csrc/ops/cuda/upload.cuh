// A host-built table of 64-bit words onto the device, through kernel parameters of small copy
// kernels (used by hash_cuda.cu and subtree_cuda.cu for their per-tensor / per-shard tables):
// no host sync, no pinned buffer to keep alive until the copy lands, and a captured CUDA graph
// holds its own copy of the words.
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace sentry {
namespace cuda_upload {
// Unnamed: each .cu file that includes this gets its own copy of the kernel.
namespace {

constexpr int kUploadWords = 3900;  // 31,200 bytes: inside the 32 KiB parameter limit
struct UploadChunk {
  uint64_t words[kUploadWords];
};
static_assert(sizeof(UploadChunk) + 16 < 32764, "kernel parameters over CUDA's limit");

__global__ void upload_kernel(const __grid_constant__ UploadChunk chunk, int count, uint64_t* dst) {
  for (int i = threadIdx.x; i < count; i += blockDim.x) dst[i] = chunk.words[i];
}

// A new int64 tensor on `device` holding `host`, filled on `stream`.
at::Tensor upload(const std::vector<uint64_t>& host, const at::Device& device,
                  cudaStream_t stream) {
  at::Tensor table = at::empty({static_cast<int64_t>(host.size())},
                               at::TensorOptions().dtype(at::kLong).device(device));
  uint64_t* dst = reinterpret_cast<uint64_t*>(table.data_ptr<int64_t>());
  for (size_t at = 0; at < host.size(); at += kUploadWords) {
    UploadChunk chunk;
    const int count = static_cast<int>(std::min<size_t>(kUploadWords, host.size() - at));
    memcpy(chunk.words, host.data() + at, count * sizeof(uint64_t));
    upload_kernel<<<1, 256, 0, stream>>>(chunk, count, dst + at);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return table;
}

}  // namespace
}  // namespace cuda_upload
}  // namespace sentry
