// CUDA kernels of hash_runs, finish_runs and hash_subtrees (schemas in ../subtree_ops.cpp,
// plans in ../run_plan.h), the scheme of cpu/subtree_cpu.cpp on the device:
//
//   hash_runs: one launch hashes every whole leaf of every run (a block of kBlockLeaves
//     threads a block of slots, one leaf a thread) and combines the nodes of levels 1..7 in
//     shared memory (the plan aligns each run's slots so that such a node never straddles
//     blocks); one launch per higher level combines that level's nodes in place (one thread a
//     node; a node lives in the slot of its first leaf); one launch writes each piece's value
//     into the message, one copies the edge fragments after them.
//   finish_runs: one launch loads the gathered pieces, one hashes the boundary leaves (a block
//     a leaf, assembled in shared memory from its fragments), one per dependency depth
//     performs that depth's combinations, one writes the outputs.
//   hash_subtrees: hash_runs over a plan made on the host for the call (one run per tensor),
//     uploaded through upload.cuh.
//
// All on the current stream, no host sync. The plans come from the host planners, but the
// kernels check every index they read against the call's counts and tensor sizes: an entry
// out of bounds is skipped and sets the status flag the ops return.
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
constexpr int kNodeStride = 9;  // shared-memory words per node: 8, padded against bank conflicts
static_assert(kBlockLeaves == kThreads, "a thread per leaf of a block");

// Loads at any byte offset: a leaf of a run starts anywhere in its tensor, so its alignment
// is only known per load.
struct LeafLoader {
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

// Device pointers and byte sizes of the call's tensors (uploaded per call).
struct Sources {
  const uint64_t* ptr;
  const uint64_t* bytes;
  int64_t n;

  // The address of bytes [at, at + len) of tensor i, or nullptr when they are not all in it.
  __device__ SENTRY_INLINE const uint8_t* range(int64_t i, int64_t at, int64_t len) const {
    if (i < 0 || i >= n || at < 0 || len < 0 || static_cast<uint64_t>(at) > bytes[i] ||
        static_cast<uint64_t>(len) > bytes[i] - at)
      return nullptr;
    return reinterpret_cast<const uint8_t*>(ptr[i]) + at;
  }
};

struct RunTables {
  const int64_t* runs;
  const int64_t* leaf_runs;
  const int64_t* blocks;
  const int64_t* pieces;
  const int64_t* frags;
  const int64_t* levels;
  int64_t R, LR, K, F, S;
};

__device__ SENTRY_INLINE void fail(int* status) { atomicOr(status, 1); }

template <class Tree>
__global__ void __launch_bounds__(kThreads) leaf_block_kernel(RunTables t, Sources src,
                                                              uint32_t* nodes, int* status) {
  __shared__ uint32_t sh[kThreads * kNodeStride];
  const int tid = threadIdx.x;
  const int64_t s = int64_t(blockIdx.x) * kThreads + tid;
  bool valid = false;
  int64_t g = 0, first = 0, end = 0, top = 0;
  int64_t k = t.blocks[blockIdx.x];
  if (k >= 0 && k < t.LR) {
    while (k + 1 < t.LR) {  // the last run of the block's list starting at or before slot s
      const int64_t next = t.leaf_runs[k + 1];
      if (next < 0 || next >= t.R || t.runs[next * kRunCols + kRunSlotBase] > s) break;
      ++k;
    }
    const int64_t r = t.leaf_runs[k];
    if (r >= 0 && r < t.R) {
      const int64_t* run = t.runs + r * kRunCols;
      const int64_t base = run[kRunSlotBase], count = run[kRunCount];
      first = run[kRunFirst];
      end = first + count;
      top = run[kRunTop];
      if (s >= base && s - base < count && s < t.S) {
        g = first + (s - base);
        const int64_t lo = g * int64_t(Tree::kLeafBytes), total = run[kRunTotal];
        const int64_t len = total - lo < int64_t(Tree::kLeafBytes) ? total - lo : int64_t(Tree::kLeafBytes);
        const uint8_t* at = len > 0 && lo >= run[kRunStart]
                                ? src.range(run[kRunSource], run[kRunSourceOffset] + lo - run[kRunStart], len)
                                : nullptr;
        if (at == nullptr) {
          fail(status);
        } else {
          valid = true;
          uint32_t value[8];
          Tree::leaf(LeafLoader{at}, 0, static_cast<uint32_t>(len), g, /*root=*/false, value);
          SENTRY_UNROLL
          for (int i = 0; i < 8; ++i) sh[tid * kNodeStride + i] = value[i];
        }
      }
    } else {
      fail(status);
    }
  } else {
    fail(status);
  }
  __syncthreads();
  for (int l = 1; l <= kBlockLevels; ++l) {
    const int half = 1 << (l - 1);
    uint32_t parent[8];
    const bool node = valid && l <= top && (g & ((int64_t(1) << l) - 1)) == 0 &&
                      g + (int64_t(1) << l) <= end;
    const bool inside = tid + 2 * half <= kThreads;
    if (node && inside) {
      uint32_t a[8], b[8];
      SENTRY_UNROLL
      for (int i = 0; i < 8; ++i) {
        a[i] = sh[tid * kNodeStride + i];
        b[i] = sh[(tid + half) * kNodeStride + i];
      }
      Tree::combine(a, b, /*root=*/false, parent);
    } else if (node) {
      fail(status);  // a node across blocks: the plan's slots are not aligned
    }
    __syncthreads();
    if (node && inside) {
      SENTRY_UNROLL
      for (int i = 0; i < 8; ++i) sh[tid * kNodeStride + i] = parent[i];
    }
    __syncthreads();
  }
  if (valid) {
    SENTRY_UNROLL
    for (int i = 0; i < 8; ++i) nodes[8 * s + i] = sh[tid * kNodeStride + i];
  }
}

// Nodes of one level above the blocks: thread k is node k of the level's entries (run, first
// node, prefix).
template <class Tree>
__global__ void __launch_bounds__(kThreads) level_kernel(RunTables t, const int64_t* entries,
                                                         int64_t count, int64_t nodes_total,
                                                         int level, uint32_t* nodes,
                                                         int* status) {
  const int64_t k = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (k >= nodes_total) return;
  int64_t lo = 0, hi = count;  // last entry whose prefix <= k
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (entries[mid * kLevelCols + kLevelPrefix] <= k) lo = mid; else hi = mid;
  }
  const int64_t* e = entries + lo * kLevelCols;
  const int64_t r = e[kLevelRun];
  if (count == 0 || r < 0 || r >= t.R || e[kLevelPrefix] > k) return fail(status);
  const int64_t* run = t.runs + r * kRunCols;
  const int64_t size = int64_t(1) << level;
  const int64_t j = e[kLevelFirstNode] + (k - e[kLevelPrefix]);
  const int64_t first = run[kRunFirst], count_r = run[kRunCount];
  const int64_t left = run[kRunSlotBase] + j * size - first, right = left + size / 2;
  if (j * size < first || j * size + size > first + count_r || left < 0 ||
      left + size > t.S || level > run[kRunTop])
    return fail(status);
  uint32_t a[8], b[8], parent[8];
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) {
    a[i] = nodes[8 * left + i];
    b[i] = nodes[8 * right + i];
  }
  Tree::combine(a, b, /*root=*/false, parent);
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) nodes[8 * left + i] = parent[i];
}

template <class Tree>
__global__ void __launch_bounds__(kThreads) pieces_kernel(RunTables t, const uint32_t* nodes,
                                                          uint8_t* message, int* status) {
  const int64_t k = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (k >= t.K) return;
  const int64_t slot = t.pieces[k * kPieceCols + kPieceSlot];
  if (slot < 0 || slot >= t.S) return fail(status);
  uint32_t v[8];
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) v[i] = nodes[8 * slot + i];
  uint8_t bytes[32];
  Tree::digest(v, bytes);
  SENTRY_UNROLL
  for (int i = 0; i < 32; ++i) message[32 * k + i] = bytes[i];
}

// One block a fragment: bytes [at, at + len) of a tensor to message[dst ..].
__global__ void __launch_bounds__(kThreads) frags_kernel(RunTables t, Sources src,
                                                         uint8_t* message, int64_t message_bytes,
                                                         int* status) {
  const int64_t* f = t.frags + int64_t(blockIdx.x) * kFragCols;
  const int64_t len = f[kFragLength], dst = f[kFragDst];
  const uint8_t* from = src.range(f[kFragSource], f[kFragSourceOffset], len);
  if (from == nullptr || dst < 32 * t.K || dst > message_bytes || len > message_bytes - dst) {
    if (threadIdx.x == 0) fail(status);
    return;
  }
  for (int64_t i = threadIdx.x; i < len; i += kThreads) message[dst + i] = __ldg(from + i);
}

unsigned int blocks_for(int64_t threads) {
  const int64_t blocks = (threads + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks < (int64_t(1) << 31), "sentry: input too large for one launch");
  return static_cast<unsigned int>(blocks);
}

// The call's tensors as a device table: pointers, then byte sizes.
Sources upload_sources(const std::vector<at::Tensor>& sources, const at::Device& device,
                       cudaStream_t stream, at::Tensor* keep) {
  const size_t n = sources.size();
  std::vector<uint64_t> host(2 * n + 1, 0);  // never empty
  for (size_t i = 0; i < n; ++i) {
    host[i] = reinterpret_cast<uint64_t>(sources[i].const_data_ptr());
    host[n + i] = byte_size(sources[i]);
  }
  *keep = cuda_upload::upload(host, device, stream);
  const uint64_t* d = reinterpret_cast<const uint64_t*>(keep->const_data_ptr<int64_t>());
  return Sources{d, d + n, static_cast<int64_t>(n)};
}

template <class Tree>
void hash_runs_impl(const RunPlanView& v, const std::vector<at::Tensor>& sources,
                    const at::Device& device, uint8_t* message, int64_t message_bytes,
                    int* status) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor keep;
  const Sources src = upload_sources(sources, device, stream, &keep);
  const RunTables t{v.runs, v.leaf_runs, v.blocks, v.pieces, v.frags, v.levels,
                    v.R, v.LR, v.K, v.F, v.S};
  at::Tensor scratch = at::empty({std::max<int64_t>(v.S, 1) * 8},
                                 at::TensorOptions().dtype(at::kInt).device(device));
  uint32_t* nodes = reinterpret_cast<uint32_t*>(scratch.data_ptr<int32_t>());
  if (v.B > 0) {
    leaf_block_kernel<Tree><<<blocks_for(v.B * kThreads), kThreads, 0, stream>>>(t, src, nodes,
                                                                                 status);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  for (size_t i = 0; i < v.level_nodes.size(); ++i) {
    if (v.level_nodes[i] == 0) continue;
    level_kernel<Tree><<<blocks_for(v.level_nodes[i]), kThreads, 0, stream>>>(
        t, v.runs + v.level_offset[i], v.level_entries[i], v.level_nodes[i],
        kBlockLevels + 1 + static_cast<int>(i), nodes, status);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (v.K > 0) {
    pieces_kernel<Tree><<<blocks_for(v.K), kThreads, 0, stream>>>(t, nodes, message, status);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (v.F > 0) {
    TORCH_CHECK(v.F < (int64_t(1) << 31), "sentry.hash_runs: too many edge fragments");
    frags_kernel<<<static_cast<unsigned int>(v.F), kThreads, 0, stream>>>(t, src, message,
                                                                         message_bytes, status);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

std::tuple<at::Tensor, at::Tensor> hash_runs_cuda(at::TensorList tensors, const at::Tensor& plan,
                                                  at::IntArrayRef header, int64_t message_bytes,
                                                  c10::string_view algorithm) {
  const char* op = "sentry.hash_runs";
  RunCall call = prepare_run_call(tensors, plan, header, message_bytes, algorithm, op);
  const at::Device device = call.plan.device();
  const c10::cuda::CUDAGuard guard(device);
  const auto opts = at::TensorOptions().device(device);
  at::Tensor message = at::zeros({message_bytes}, opts.dtype(at::kByte));
  at::Tensor status = at::zeros({1}, opts.dtype(at::kInt));
  if (call.algorithm == Algorithm::kBlake3)
    hash_runs_impl<Blake3Tree>(call.view, call.sources, device, message.data_ptr<uint8_t>(),
                               message_bytes, status.data_ptr<int>());
  else
    hash_runs_impl<Sha256Tree>(call.view, call.sources, device, message.data_ptr<uint8_t>(),
                               message_bytes, status.data_ptr<int>());
  return {message, status};
}

at::Tensor hash_subtrees_cuda(at::TensorList tensors, at::IntArrayRef start_bytes,
                              at::IntArrayRef total_bytes, c10::string_view algorithm) {
  const char* op = "sentry.hash_subtrees";
  const Algorithm algo = parse_algorithm(algorithm, op);
  const std::vector<at::Tensor> inputs =
      prepare_subtree_inputs(tensors, start_bytes, total_bytes, op);
  const at::Device device = inputs.at(0).device();
  const c10::cuda::CUDAGuard guard(device);
  const auto [header, body] = plan_runs(subtree_runs(inputs, start_bytes, total_bytes),
                                        std::string(algorithm), /*with_edges=*/false);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const std::vector<uint64_t> words(body.const_data_ptr<int64_t>(),
                                    body.const_data_ptr<int64_t>() + body.numel());
  // upload() needs at least one word; the views below only read inside the body.
  const at::Tensor device_body = cuda_upload::upload(
      words.empty() ? std::vector<uint64_t>{0} : words, device, stream);
  const RunPlanView v = run_plan_view(header, device_body.const_data_ptr<int64_t>(),
                                      body.numel(), op);
  const auto opts = at::TensorOptions().device(device);
  at::Tensor out = at::empty({v.K, 32}, opts.dtype(at::kByte));
  at::Tensor status = at::zeros({1}, opts.dtype(at::kInt));  // the host-made plan is sound
  if (algo == Algorithm::kBlake3)
    hash_runs_impl<Blake3Tree>(v, inputs, device, out.data_ptr<uint8_t>(), 32 * v.K,
                               status.data_ptr<int>());
  else
    hash_runs_impl<Sha256Tree>(v, inputs, device, out.data_ptr<uint8_t>(), 32 * v.K,
                               status.data_ptr<int>());
  return out;
}

// ---------------------------------------------------------------------------------------------
// finish_runs

struct FinishTables {
  const int64_t* pieces;
  const int64_t* leaves;
  const int64_t* frags;
  const int64_t* ops;
  const int64_t* outputs;
  int64_t items, P, BL, FR, Q;
  const uint8_t* gathered;
  int64_t gathered_bytes;
};

template <class Tree>
__global__ void __launch_bounds__(kThreads) load_pieces_kernel(FinishTables t, uint32_t* items,
                                                               int* status) {
  const int64_t p = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (p >= t.P) return;
  const int64_t id = t.pieces[p * kFPCols + kFPItem], at = t.pieces[p * kFPCols + kFPGathered];
  if (id < 0 || id >= t.items || at < 0 || at > t.gathered_bytes - 32) return fail(status);
  uint8_t bytes[32];
  SENTRY_UNROLL
  for (int i = 0; i < 32; ++i) bytes[i] = t.gathered[at + i];
  node_from_bytes(static_cast<const Tree*>(nullptr), bytes, items + 8 * id);
}

// One block a boundary leaf: its fragments into shared memory, then one thread hashes it.
template <class Tree>
__global__ void __launch_bounds__(kThreads) leaves_kernel(FinishTables t, uint32_t* items,
                                                          int* status) {
  __shared__ uint4 staged[Tree::kLeafBytes / 16];
  uint8_t* leaf = reinterpret_cast<uint8_t*>(staged);
  const int64_t* row = t.leaves + int64_t(blockIdx.x) * kFLCols;
  const int64_t id = row[kFLItem], len = row[kFLLength];
  const int64_t fb = row[kFLFragBegin], fe = row[kFLFragEnd];
  if (id < 0 || id >= t.items || len < 0 || len > int64_t(Tree::kLeafBytes) || fb < 0 ||
      fe < fb || fe > t.FR || row[kFLIndex] < 0) {
    if (threadIdx.x == 0) fail(status);
    return;
  }
  for (int i = threadIdx.x; i < Tree::kLeafBytes; i += kThreads) leaf[i] = 0;
  __syncthreads();
  for (int64_t f = fb; f < fe; ++f) {
    const int64_t* fr = t.frags + f * kFInCols;
    const int64_t at = fr[kFInGathered], off = fr[kFInOffset], n = fr[kFInLength];
    if (at < 0 || off < 0 || n < 0 || off + n > len || at > t.gathered_bytes - n) {
      if (threadIdx.x == 0) fail(status);
      continue;
    }
    for (int64_t i = threadIdx.x; i < n; i += kThreads) leaf[off + i] = t.gathered[at + i];
  }
  __syncthreads();
  if (threadIdx.x == 0)
    Tree::leaf(BytewiseLoader{leaf}, 0, static_cast<uint32_t>(len), row[kFLIndex],
               row[kFLRoot] != 0, items + 8 * id);
}

template <class Tree>
__global__ void __launch_bounds__(kThreads) ops_kernel(FinishTables t, int64_t lo, int64_t hi,
                                                       uint32_t* items, int* status) {
  const int64_t o = lo + int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (o >= hi) return;
  const int64_t* row = t.ops + o * kOpCols;
  const int64_t d = row[kOpDst], l = row[kOpLeft], r = row[kOpRight];
  if (d < 0 || d >= t.items || l < 0 || l >= t.items || r < 0 || r >= t.items)
    return fail(status);
  uint32_t a[8], b[8], parent[8];
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) {
    a[i] = items[8 * l + i];
    b[i] = items[8 * r + i];
  }
  Tree::combine(a, b, row[kOpRoot] != 0, parent);
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) items[8 * d + i] = parent[i];
}

template <class Tree>
__global__ void __launch_bounds__(kThreads) outputs_kernel(FinishTables t, const uint32_t* items,
                                                           uint8_t* out, int* status) {
  const int64_t q = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (q >= t.Q) return;
  const int64_t id = t.outputs[q];
  if (id < 0 || id >= t.items) return fail(status);
  uint32_t v[8];
  SENTRY_UNROLL
  for (int i = 0; i < 8; ++i) v[i] = items[8 * id + i];
  uint8_t bytes[32];
  Tree::digest(v, bytes);
  SENTRY_UNROLL
  for (int i = 0; i < 32; ++i) out[32 * q + i] = bytes[i];
}

template <class Tree>
void finish_runs_impl(const FinishPlanView& v, const at::Tensor& gathered, uint8_t* out,
                      int* status) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const FinishTables t{v.pieces, v.leaves, v.frags, v.ops, v.outputs, v.items, v.P, v.BL,
                       v.FR, v.Q, gathered.const_data_ptr<uint8_t>(), gathered.numel()};
  // Zeroed: an item a bad plan never writes reads as zeros, never as stale memory.
  at::Tensor scratch = at::zeros({std::max<int64_t>(v.items, 1) * 8},
                                 gathered.options().dtype(at::kInt));
  uint32_t* items = reinterpret_cast<uint32_t*>(scratch.data_ptr<int32_t>());
  if (v.P > 0) {
    load_pieces_kernel<Tree><<<blocks_for(v.P), kThreads, 0, stream>>>(t, items, status);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (v.BL > 0) {
    TORCH_CHECK(v.BL < (int64_t(1) << 31), "sentry.finish_runs: too many boundary leaves");
    leaves_kernel<Tree><<<static_cast<unsigned int>(v.BL), kThreads, 0, stream>>>(t, items,
                                                                                 status);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  for (size_t d = 0; d < v.depth_ops.size(); ++d) {
    if (v.depth_ops[d] == 0) continue;
    const int64_t lo = v.depth_offset[d];
    ops_kernel<Tree><<<blocks_for(v.depth_ops[d]), kThreads, 0, stream>>>(
        t, lo, lo + v.depth_ops[d], items, status);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (v.Q > 0) {
    outputs_kernel<Tree><<<blocks_for(v.Q), kThreads, 0, stream>>>(t, items, out, status);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

std::tuple<at::Tensor, at::Tensor> finish_runs_cuda(const at::Tensor& gathered,
                                                    const at::Tensor& plan,
                                                    at::IntArrayRef header,
                                                    c10::string_view algorithm) {
  const char* op = "sentry.finish_runs";
  FinishCall call = prepare_finish_call(gathered, plan, header, algorithm, op);
  const c10::cuda::CUDAGuard guard(call.gathered.device());
  const auto opts = call.gathered.options();
  at::Tensor out = at::empty({call.view.Q, 32}, opts.dtype(at::kByte));
  at::Tensor status = at::zeros({1}, opts.dtype(at::kInt));
  if (call.algorithm == Algorithm::kBlake3)
    finish_runs_impl<Blake3Tree>(call.view, call.gathered, out.data_ptr<uint8_t>(),
                                 status.data_ptr<int>());
  else
    finish_runs_impl<Sha256Tree>(call.view, call.gathered, out.data_ptr<uint8_t>(),
                                 status.data_ptr<int>());
  return {out, status};
}

}  // namespace

TORCH_LIBRARY_IMPL(sentry, CUDA, m) {
  m.impl("hash_subtrees", &hash_subtrees_cuda);
  m.impl("hash_runs", &hash_runs_cuda);
  m.impl("finish_runs", &finish_runs_cuda);
}

}  // namespace cuda_subtree
}  // namespace sentry
