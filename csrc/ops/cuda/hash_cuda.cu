// CUDA kernels of hash_tensors and hash_rows.
//
// One launch per tree level for the whole list, whatever its length:
//   level 0: a block of kGroup threads hashes kGroup consecutive leaves of one tensor (one leaf
//            per thread) and reduces them in shared memory to one subtree value;
//   level k: a block reduces kGroup consecutive level-(k-1) values of one tensor.
// A tensor whose level has a single group writes its digest and is done. core/tree.h shows why
// aligned groups give exactly the tree of the spec. Blocks find their tensor by binary search in
// a per-level prefix sum of group counts (or by division, for the equal rows of hash_rows).
//
// The per-tensor table (data pointers, sizes, prefix sums) is computed on the host from
// metadata alone and reaches the device as kernel parameters of small upload kernels
// (upload.cuh): no host sync, no pinned buffer to keep alive, and a captured CUDA graph holds
// its own copy.
// Only the stream and launch-check headers: ATen/cuda/CUDAContext.h would pull in the cuBLAS,
// cuSPARSE and cuSOLVER headers, which a bare nvcc install (the CPU CI's compile check) lacks.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <vector>

#include "../../core/tree.h"
#include "../hash_common.h"
#include "upload.cuh"

namespace sentry {
namespace cuda {
namespace {

constexpr int kGroup = 128;      // leaves (or nodes) per block, threads per block
constexpr int kNodeStride = 9;   // shared-memory words per node: 8, padded against bank conflicts

// Loads of one tensor's bytes: 16-byte vector loads when the pointer allows, through the
// read-only path (the kernels never write what they read).
struct DeviceLoader {
  const uint8_t* base;
  int align;  // 16, 4 or 1

  __device__ SENTRY_INLINE uint8_t byte(uint64_t offset) const { return __ldg(base + offset); }

  __device__ SENTRY_INLINE void load_le(uint64_t offset, uint32_t w[16]) const {
    if (align == 16) {
      const uint4* p = reinterpret_cast<const uint4*>(base + offset);
      const uint4 a = __ldg(p), b = __ldg(p + 1), c = __ldg(p + 2), d = __ldg(p + 3);
      w[0] = a.x; w[1] = a.y; w[2] = a.z; w[3] = a.w;
      w[4] = b.x; w[5] = b.y; w[6] = b.z; w[7] = b.w;
      w[8] = c.x; w[9] = c.y; w[10] = c.z; w[11] = c.w;
      w[12] = d.x; w[13] = d.y; w[14] = d.z; w[15] = d.w;
    } else if (align == 4) {
      const uint32_t* p = reinterpret_cast<const uint32_t*>(base + offset);
      SENTRY_UNROLL
      for (int i = 0; i < 16; ++i) w[i] = __ldg(p + i);
    } else {
      BytewiseLoader{base}.load_le(offset, w);
    }
  }
};

__device__ SENTRY_INLINE uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

__device__ SENTRY_INLINE int alignment_of(const uint8_t* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  return a % 16 == 0 ? 16 : a % 4 == 0 ? 4 : 1;
}

// The segments of one call: a list (hash_tensors) or equal rows at a stride (hash_rows).
struct Segments {
  const uint64_t* data;    // list: device pointers, as integers
  const uint64_t* nbytes;  // list: sizes
  const uint8_t* row_base; // rows
  uint64_t row_stride, row_bytes;
  bool rows;

  __device__ SENTRY_INLINE const uint8_t* ptr(uint64_t i) const {
    return rows ? row_base + i * row_stride : reinterpret_cast<const uint8_t*>(data[i]);
  }
  __device__ SENTRY_INLINE uint64_t size(uint64_t i) const { return rows ? row_bytes : nbytes[i]; }
};

// Groups of one level: group_prefix[i] .. group_prefix[i+1] are tensor i's blocks (list), or
// every segment has `equal_groups` blocks (rows).
struct Level {
  const uint64_t* group_prefix;
  uint64_t equal_groups;
  uint64_t count;  // number of segments

  __device__ SENTRY_INLINE void locate(uint64_t block, uint64_t* seg, uint64_t* group) const {
    if (group_prefix == nullptr) {
      *seg = block / equal_groups;
      *group = block % equal_groups;
      return;
    }
    uint64_t lo = 0, hi = count;  // last i with group_prefix[i] <= block
    while (hi - lo > 1) {
      const uint64_t mid = (lo + hi) / 2;
      if (group_prefix[mid] <= block) lo = mid; else hi = mid;
    }
    *seg = lo;
    *group = block - group_prefix[lo];
  }
  __device__ SENTRY_INLINE uint64_t groups(uint64_t seg) const {
    return group_prefix == nullptr ? equal_groups : group_prefix[seg + 1] - group_prefix[seg];
  }
  __device__ SENTRY_INLINE uint64_t first(uint64_t seg) const {
    return group_prefix == nullptr ? seg * equal_groups : group_prefix[seg];
  }
};

// Reduces count (<= kGroup) nodes in shared memory to nodes[0], level by level.
template <class Tree>
__device__ void block_reduce(uint32_t* nodes, uint32_t count, bool is_root) {
  const uint32_t t = threadIdx.x;
  while (count > 1) {
    const uint32_t pairs = count / 2;
    uint32_t parent[8];
    if (t < pairs) {
      uint32_t l[8], r[8];
      SENTRY_UNROLL
      for (int i = 0; i < 8; ++i) {
        l[i] = nodes[(2 * t) * kNodeStride + i];
        r[i] = nodes[(2 * t + 1) * kNodeStride + i];
      }
      Tree::combine(l, r, is_root && count == 2, parent);
    }
    __syncthreads();
    if (t < pairs) {
      SENTRY_UNROLL
      for (int i = 0; i < 8; ++i) nodes[t * kNodeStride + i] = parent[i];
    } else if (t == pairs && (count & 1)) {  // the odd last node moves up unchanged
      SENTRY_UNROLL
      for (int i = 0; i < 8; ++i) nodes[t * kNodeStride + i] = nodes[(count - 1) * kNodeStride + i];
    }
    __syncthreads();
    count = pairs + (count & 1);
  }
}

// Thread 0's result: the digest when this group is the tensor's whole level, else a node for
// the next level.
template <class Tree>
__device__ SENTRY_INLINE void write_group_result(const uint32_t* node, bool whole, uint8_t* digest,
                                                 uint32_t* next_level_node) {
  if (threadIdx.x != 0) return;
  if (whole) {
    uint32_t v[8];
    SENTRY_UNROLL
    for (int i = 0; i < 8; ++i) v[i] = node[i];
    uint8_t bytes[32];
    Tree::digest(v, bytes);
    SENTRY_UNROLL
    for (int i = 0; i < 32; ++i) digest[i] = bytes[i];
  } else {
    SENTRY_UNROLL
    for (int i = 0; i < 8; ++i) next_level_node[i] = node[i];
  }
}

template <class Tree>
__global__ void __launch_bounds__(kGroup) leaf_level_kernel(Segments segs, Level level,
                                                            uint32_t* out_nodes, uint8_t* digests) {
  __shared__ uint32_t nodes[kGroup * kNodeStride];
  uint64_t seg, group;
  level.locate(blockIdx.x, &seg, &group);
  const uint8_t* data = segs.ptr(seg);
  const uint64_t nbytes = segs.size(seg);
  const uint64_t leaves = leaf_count<Tree>(nbytes);
  const uint64_t first = group * kGroup;
  const uint32_t count = static_cast<uint32_t>(min_u64(kGroup, leaves - first));
  if (threadIdx.x < count) {
    uint32_t value[8];
    hash_leaf<Tree>(DeviceLoader{data, alignment_of(data)}, nbytes, first + threadIdx.x, value);
    SENTRY_UNROLL
    for (int i = 0; i < 8; ++i) nodes[threadIdx.x * kNodeStride + i] = value[i];
  }
  __syncthreads();
  const bool whole = level.groups(seg) == 1;
  block_reduce<Tree>(nodes, count, whole);
  write_group_result<Tree>(nodes, whole, digests + 32 * seg,
                           out_nodes + 8 * (level.first(seg) + group));
}

template <class Tree>
__global__ void __launch_bounds__(kGroup) node_level_kernel(Level below, Level level,
                                                            const uint32_t* in_nodes,
                                                            uint32_t* out_nodes, uint8_t* digests) {
  __shared__ uint32_t nodes[kGroup * kNodeStride];
  uint64_t seg, group;
  level.locate(blockIdx.x, &seg, &group);
  const uint64_t inputs = below.groups(seg);
  const uint64_t first = group * kGroup;
  const uint32_t count = static_cast<uint32_t>(min_u64(kGroup, inputs - first));
  if (threadIdx.x < count) {
    const uint32_t* in = in_nodes + 8 * (below.first(seg) + first + threadIdx.x);
    SENTRY_UNROLL
    for (int i = 0; i < 8; ++i) nodes[threadIdx.x * kNodeStride + i] = in[i];
  }
  __syncthreads();
  const bool whole = level.groups(seg) == 1;
  block_reduce<Tree>(nodes, count, whole);
  write_group_result<Tree>(nodes, whole, digests + 32 * seg,
                           out_nodes + 8 * (level.first(seg) + group));
}

// Rows of at most kStagedRowBytes (e.g. 3 KiB CIFAR images) have too few leaves to fill a block,
// and a thread hashing a leaf straight from global memory waits out one load latency per
// 64-byte block. So one warp stages its row in shared memory with coalesced loads issued all
// at once, then hashes the leaves from there (one leaf per thread) and reduces them.
constexpr uint64_t kStagedRowBytes = 16 * 1024;
constexpr int kStagedThreads = 32;
static_assert(kStagedRowBytes / Blake3Tree::kLeafBytes <= kStagedThreads, "a leaf per thread");

struct SharedLoader {
  const uint8_t* base;  // 16-byte aligned shared memory
  __device__ SENTRY_INLINE uint8_t byte(uint64_t offset) const { return base[offset]; }
  __device__ SENTRY_INLINE void load_le(uint64_t offset, uint32_t w[16]) const {
    const uint4* p = reinterpret_cast<const uint4*>(base + offset);  // offset: 64-byte multiple
    SENTRY_UNROLL
    for (int i = 0; i < 4; ++i) {
      const uint4 v = p[i];
      w[4 * i] = v.x; w[4 * i + 1] = v.y; w[4 * i + 2] = v.z; w[4 * i + 3] = v.w;
    }
  }
};

template <class Tree>
__global__ void __launch_bounds__(kStagedThreads) staged_rows_kernel(
    const uint8_t* base, uint64_t stride, uint64_t row_bytes, uint8_t* digests) {
  extern __shared__ uint4 staged[];
  __shared__ uint32_t nodes[kStagedThreads * kNodeStride];
  const uint8_t* row = base + blockIdx.x * stride;
  uint8_t* bytes = reinterpret_cast<uint8_t*>(staged);
  const uint32_t t = threadIdx.x;
  if (reinterpret_cast<uintptr_t>(row) % 16 == 0) {
    const uint4* src = reinterpret_cast<const uint4*>(row);
    const uint32_t vectors = static_cast<uint32_t>(row_bytes / 16);
#pragma unroll 4
    for (uint32_t i = t; i < vectors; i += kStagedThreads) staged[i] = __ldg(src + i);
    for (uint32_t i = vectors * 16 + t; i < row_bytes; i += kStagedThreads) {
      bytes[i] = __ldg(row + i);
    }
  } else {
#pragma unroll 4
    for (uint32_t i = t; i < row_bytes; i += kStagedThreads) bytes[i] = __ldg(row + i);
  }
  __syncthreads();
  const uint32_t leaves = static_cast<uint32_t>(leaf_count<Tree>(row_bytes));
  if (t < leaves) {
    uint32_t value[8];
    hash_leaf<Tree>(SharedLoader{bytes}, row_bytes, t, value);
    SENTRY_UNROLL
    for (int i = 0; i < 8; ++i) nodes[t * kNodeStride + i] = value[i];
  }
  __syncthreads();
  block_reduce<Tree>(nodes, leaves, true);
  write_group_result<Tree>(nodes, true, digests + 32ull * blockIdx.x, nullptr);
}

// Group counts per level for a segment of `nbytes`: level 0 groups its leaves, level k groups
// the results of level k-1; a level whose input is a single node has no group.
template <class Tree>
std::vector<uint64_t> groups_per_level(uint64_t nbytes) {
  std::vector<uint64_t> groups;
  uint64_t nodes = leaf_count<Tree>(nbytes);
  do {
    groups.push_back(ceil_div(nodes, kGroup));
    nodes = groups.back();
  } while (nodes > 1);
  return groups;
}

void check_grid(uint64_t blocks) {
  TORCH_CHECK(blocks < (1ull << 31), "sentry: input too large for one launch (",
              std::to_string(blocks),
              " blocks); hash it in parts");
}

template <class Tree>
void launch_levels(const Segments& segs, std::vector<Level> levels, const uint64_t* level_groups,
                   uint8_t* digests, const at::Device& device, cudaStream_t stream) {
  // Scratch for the nodes each level hands to the next (32 bytes per group).
  uint64_t scratch_nodes = 0;
  for (size_t l = 0; l + 1 < levels.size(); ++l) scratch_nodes += level_groups[l];
  at::Tensor scratch = at::empty({static_cast<int64_t>(std::max<uint64_t>(1, scratch_nodes) * 8)},
                                 at::TensorOptions().dtype(at::kInt).device(device));
  uint32_t* nodes = reinterpret_cast<uint32_t*>(scratch.data_ptr<int32_t>());
  uint32_t* in = nullptr;
  for (size_t l = 0; l < levels.size(); ++l) {
    check_grid(level_groups[l]);
    if (level_groups[l] == 0) break;
    uint32_t* out = nodes;
    if (l == 0) {
      leaf_level_kernel<Tree><<<level_groups[l], kGroup, 0, stream>>>(segs, levels[l], out,
                                                                       digests);
    } else {
      node_level_kernel<Tree><<<level_groups[l], kGroup, 0, stream>>>(levels[l - 1], levels[l], in,
                                                                       out, digests);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    in = out;
    nodes += 8 * level_groups[l];
  }
}

template <class Tree>
void hash_list(const std::vector<at::Tensor>& inputs, uint8_t* digests, const at::Device& device,
               cudaStream_t stream) {
  const uint64_t n = inputs.size();
  std::vector<std::vector<uint64_t>> per_seg(n);
  size_t depth = 0;
  for (uint64_t i = 0; i < n; ++i) {
    per_seg[i] = groups_per_level<Tree>(byte_size(inputs[i]));
    depth = std::max(depth, per_seg[i].size());
  }
  // Table: data[n], nbytes[n], then one prefix sum of group counts (n + 1) per level.
  std::vector<uint64_t> table(2 * n + depth * (n + 1));
  std::vector<uint64_t> level_groups(depth);
  for (uint64_t i = 0; i < n; ++i) {
    table[i] = reinterpret_cast<uint64_t>(inputs[i].const_data_ptr());
    table[n + i] = byte_size(inputs[i]);
  }
  for (size_t l = 0; l < depth; ++l) {
    uint64_t* prefix = table.data() + 2 * n + l * (n + 1);
    prefix[0] = 0;
    for (uint64_t i = 0; i < n; ++i)
      prefix[i + 1] = prefix[i] + (l < per_seg[i].size() ? per_seg[i][l] : 0);
    level_groups[l] = prefix[n];
  }
  const at::Tensor device_table = cuda_upload::upload(table, device, stream);
  const uint64_t* t = reinterpret_cast<const uint64_t*>(device_table.const_data_ptr<int64_t>());
  Segments segs{t, t + n, nullptr, 0, 0, false};
  std::vector<Level> levels;
  for (size_t l = 0; l < depth; ++l) levels.push_back({t + 2 * n + l * (n + 1), 0, n});
  launch_levels<Tree>(segs, levels, level_groups.data(), digests, device, stream);
}

template <class Tree>
void hash_equal_rows(const uint8_t* base, uint64_t rows, uint64_t stride, uint64_t row_bytes,
                     uint8_t* digests, const at::Device& device, cudaStream_t stream) {
  if (row_bytes <= kStagedRowBytes) {
    check_grid(rows);
    const size_t smem = ceil_div(row_bytes, 16) * 16;
    staged_rows_kernel<Tree><<<rows, kStagedThreads, smem, stream>>>(base, stride, row_bytes,
                                                                    digests);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const std::vector<uint64_t> groups = groups_per_level<Tree>(row_bytes);
  std::vector<Level> levels;
  std::vector<uint64_t> level_groups;
  for (uint64_t g : groups) {
    levels.push_back({nullptr, g, rows});
    level_groups.push_back(g * rows);
  }
  Segments segs{nullptr, nullptr, base, stride, row_bytes, true};
  launch_levels<Tree>(segs, levels, level_groups.data(), digests, device, stream);
}

at::Tensor hash_tensors_cuda(at::TensorList tensors, c10::string_view algorithm) {
  const char* op = "sentry.hash_tensors";
  const Algorithm algo = parse_algorithm(algorithm, op);
  const std::vector<at::Tensor> inputs = prepare_hash_inputs(tensors, op);
  const at::Device device = inputs.at(0).device();
  const c10::cuda::CUDAGuard guard(device);
  at::Tensor out = at::empty({static_cast<int64_t>(inputs.size()), 32},
                             at::TensorOptions().dtype(at::kByte).device(device));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (algo == Algorithm::kBlake3) hash_list<Blake3Tree>(inputs, out.data_ptr<uint8_t>(), device, stream);
  else hash_list<Sha256Tree>(inputs, out.data_ptr<uint8_t>(), device, stream);
  return out;
}

at::Tensor hash_rows_cuda(const at::Tensor& x, c10::string_view algorithm) {
  const char* op = "sentry.hash_rows";
  const Algorithm algo = parse_algorithm(algorithm, op);
  int64_t row_stride = 0;
  const at::Tensor rows = prepare_rows_input(x, op, &row_stride);
  const c10::cuda::CUDAGuard guard(rows.device());
  const int64_t n = rows.size(0);
  at::Tensor out = at::empty({n, 32}, at::TensorOptions().dtype(at::kByte).device(rows.device()));
  if (n == 0) return out;
  const uint64_t row_bytes = rows.numel() == 0 ? 0 : byte_size(rows.select(0, 0));
  const auto* base = static_cast<const uint8_t*>(rows.const_data_ptr());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (algo == Algorithm::kBlake3) {
    hash_equal_rows<Blake3Tree>(base, n, row_stride, row_bytes, out.data_ptr<uint8_t>(),
                                rows.device(), stream);
  } else {
    hash_equal_rows<Sha256Tree>(base, n, row_stride, row_bytes, out.data_ptr<uint8_t>(),
                                rows.device(), stream);
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sentry, CUDA, m) {
  m.impl("hash_tensors", &hash_tensors_cuda);
  m.impl("hash_rows", &hash_rows_cuda);
}

}  // namespace cuda
}  // namespace sentry
