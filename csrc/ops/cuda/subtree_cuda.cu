// CUDA kernel of hash_subtrees (schema in ../subtree_ops.cpp), the level scheme of
// cpu/subtree_cpu.cpp: one launch hashes every whole leaf of every shard (one thread a leaf)
// into a flat array of slots; one launch per level then combines, in place, every aligned node
// of that level of every shard (one thread a node; a node lives in the slot of its first leaf);
// a last launch writes each piece's value. All on the current stream, no host sync.
//
// The per-shard table is built on the host from metadata and reaches the device through
// upload.cuh, as hash_cuda.cu's per-tensor table does.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../subtree_common.h"
#include "upload.cuh"

namespace sentry {
namespace cuda_subtree {
namespace {

constexpr int kThreads = 128;

// Loads at any byte offset of a shard: a shard starts anywhere in its full input, so a leaf's
// alignment is only known per load.
struct ShardLoader {
  const uint8_t* base;

  __device__ SENTRY_INLINE uint8_t byte(uint64_t offset) const { return __ldg(base + offset); }

  __device__ SENTRY_INLINE void load_le(uint64_t offset, uint32_t w[16]) const {
    const uint8_t* at = base + offset;
    const uintptr_t a = reinterpret_cast<uintptr_t>(at);
    if (a % 16 == 0) {
      const uint4* p = reinterpret_cast<const uint4*>(at);
      SENTRY_UNROLL
      for (int i = 0; i < 4; ++i) {
        const uint4 v = __ldg(p + i);
        w[4 * i] = v.x; w[4 * i + 1] = v.y; w[4 * i + 2] = v.z; w[4 * i + 3] = v.w;
      }
    } else if (a % 4 == 0) {
      const uint32_t* p = reinterpret_cast<const uint32_t*>(at);
      SENTRY_UNROLL
      for (int i = 0; i < 16; ++i) w[i] = __ldg(p + i);
    } else {
      BytewiseLoader{base}.load_le(offset, w);
    }
  }
};

// The device table: for shard i, data[i], start[i], total[i], first[i] (its first whole leaf),
// then slot_prefix (n + 1: shard i's leaves are slots slot_prefix[i] ..), then one node prefix
// (n + 1) per level 1..depth, then the slot of each piece.
struct Table {
  const uint64_t* data;
  const uint64_t* start;
  const uint64_t* total;
  const uint64_t* first;
  const uint64_t* slot_prefix;
  const uint64_t* level_prefix;  // level l's prefix at level_prefix + (l - 1) * (n + 1)
  const uint64_t* piece_slot;
  uint64_t n;
};

__device__ SENTRY_INLINE uint64_t find_shard(const uint64_t* prefix, uint64_t n, uint64_t i) {
  uint64_t lo = 0, hi = n;  // last s with prefix[s] <= i
  while (hi - lo > 1) {
    const uint64_t mid = (lo + hi) / 2;
    if (prefix[mid] <= i) lo = mid; else hi = mid;
  }
  return lo;
}

template <class Tree>
__global__ void __launch_bounds__(kThreads) leaf_kernel(Table t, uint64_t slots, uint32_t* nodes) {
  const uint64_t slot = uint64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (slot >= slots) return;
  const uint64_t s = find_shard(t.slot_prefix, t.n, slot);
  const uint64_t g = t.first[s] + (slot - t.slot_prefix[s]);
  const uint64_t left = t.total[s] - g * Tree::kLeafBytes;
  const uint32_t len = static_cast<uint32_t>(left < Tree::kLeafBytes ? left : Tree::kLeafBytes);
  const ShardLoader ld{reinterpret_cast<const uint8_t*>(t.data[s])};
  uint32_t value[8];
  Tree::leaf(ld, g * Tree::kLeafBytes - t.start[s], len, g, /*root=*/false, value);
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) nodes[8 * slot + i] = value[i];
}

template <class Tree>
__global__ void __launch_bounds__(kThreads) level_kernel(Table t, int level, uint64_t count,
                                                         uint32_t* nodes) {
  const uint64_t k = uint64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (k >= count) return;
  const uint64_t* prefix = t.level_prefix + (level - 1) * (t.n + 1);
  const uint64_t s = find_shard(prefix, t.n, k);
  const uint64_t size = uint64_t(1) << level;
  const uint64_t j = (t.first[s] + size - 1) / size + (k - prefix[s]);
  const uint64_t left = t.slot_prefix[s] + j * size - t.first[s];
  const uint64_t right = left + size / 2;
  uint32_t l[8], r[8], parent[8];
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) {
    l[i] = nodes[8 * left + i];
    r[i] = nodes[8 * right + i];
  }
  Tree::combine(l, r, /*root=*/false, parent);
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) nodes[8 * left + i] = parent[i];
}

template <class Tree>
__global__ void __launch_bounds__(kThreads) pieces_kernel(Table t, uint64_t count,
                                                          const uint32_t* nodes, uint8_t* out) {
  const uint64_t p = uint64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (p >= count) return;
  uint32_t v[8];
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) v[i] = nodes[8 * t.piece_slot[p] + i];
  uint8_t bytes[32];
  Tree::digest(v, bytes);
  SENTRY_UNROLL
  for (int i = 0; i < 32; ++i) out[32 * p + i] = bytes[i];
}

unsigned int blocks_for(uint64_t threads) {
  const uint64_t blocks = ceil_div(threads, kThreads);
  TORCH_CHECK(blocks < (1ull << 31), "sentry.hash_subtrees: input too large for one launch");
  return static_cast<unsigned int>(blocks);
}

template <class Tree>
at::Tensor hash_subtrees_impl(const std::vector<at::Tensor>& inputs, at::IntArrayRef start_bytes,
                              at::IntArrayRef total_bytes, const at::Device& device) {
  uint64_t slots = 0, pieces = 0;
  const std::vector<ShardPlan> plans =
      plan_shards<Tree>(inputs, start_bytes, total_bytes, &slots, &pieces);
  at::Tensor out = at::empty({static_cast<int64_t>(pieces), 32},
                             at::TensorOptions().dtype(at::kByte).device(device));
  if (pieces == 0) return out;
  const uint64_t n = plans.size();
  int depth = 0;
  for (const ShardPlan& p : plans) depth = std::max(depth, p.leaves.max_level);

  std::vector<uint64_t> host(5 * n + 1 + depth * (n + 1) + pieces);
  std::vector<uint64_t> level_count(depth + 1, 0);
  uint64_t* slot_prefix = host.data() + 4 * n;
  for (uint64_t s = 0; s < n; ++s) {
    host[s] = reinterpret_cast<uint64_t>(plans[s].data);
    host[n + s] = plans[s].start;
    host[2 * n + s] = plans[s].total;
    host[3 * n + s] = plans[s].leaves.first;
    slot_prefix[s] = plans[s].slot_base;
  }
  slot_prefix[n] = slots;
  for (int l = 1; l <= depth; ++l) {
    uint64_t* prefix = host.data() + 5 * n + 1 + (l - 1) * (n + 1);
    prefix[0] = 0;
    for (uint64_t s = 0; s < n; ++s)
      prefix[s + 1] = prefix[s] + level_end(plans[s].leaves, l) - level_first(plans[s].leaves, l);
    level_count[l] = prefix[n];
  }
  uint64_t* piece_slot = host.data() + 5 * n + 1 + depth * (n + 1);
  for (const ShardPlan& p : plans)
    for (const Piece& piece : p.pieces) *piece_slot++ = p.slot_base + piece.first_leaf - p.leaves.first;

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor device_table = cuda_upload::upload(host, device, stream);
  const uint64_t* d = reinterpret_cast<const uint64_t*>(device_table.const_data_ptr<int64_t>());
  const Table t{d, d + n, d + 2 * n, d + 3 * n, d + 4 * n, d + 5 * n + 1,
                d + 5 * n + 1 + depth * (n + 1), n};
  at::Tensor scratch = at::empty({static_cast<int64_t>(slots * 8)},
                                 at::TensorOptions().dtype(at::kInt).device(device));
  uint32_t* nodes = reinterpret_cast<uint32_t*>(scratch.data_ptr<int32_t>());

  leaf_kernel<Tree><<<blocks_for(slots), kThreads, 0, stream>>>(t, slots, nodes);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  for (int l = 1; l <= depth; ++l) {
    if (level_count[l] == 0) break;  // no shard has a node this high, nor any above
    level_kernel<Tree><<<blocks_for(level_count[l]), kThreads, 0, stream>>>(t, l, level_count[l],
                                                                           nodes);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  pieces_kernel<Tree><<<blocks_for(pieces), kThreads, 0, stream>>>(t, pieces, nodes,
                                                                   out.data_ptr<uint8_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor hash_subtrees_cuda(at::TensorList tensors, at::IntArrayRef start_bytes,
                              at::IntArrayRef total_bytes, c10::string_view algorithm) {
  const char* op = "sentry.hash_subtrees";
  const Algorithm algo = parse_algorithm(algorithm, op);
  const std::vector<at::Tensor> inputs =
      prepare_subtree_inputs(tensors, start_bytes, total_bytes, op);
  const at::Device device = inputs.at(0).device();
  const c10::cuda::CUDAGuard guard(device);
  return algo == Algorithm::kBlake3
             ? hash_subtrees_impl<Blake3Tree>(inputs, start_bytes, total_bytes, device)
             : hash_subtrees_impl<Sha256Tree>(inputs, start_bytes, total_bytes, device);
}

}  // namespace

TORCH_LIBRARY_IMPL(sentry, CUDA, m) { m.impl("hash_subtrees", &hash_subtrees_cuda); }

}  // namespace cuda_subtree
}  // namespace sentry
