// CPU kernels of hash_tensors and hash_rows.
//
// Work is split into items of one aligned group of leaves (64 KiB of input) so that big and
// small tensors alike spread over the intra-op thread pool; each item reduces its group to one
// subtree value, then each tensor reduces its group values to the root (core/tree.h says why
// that is the same tree). BLAKE3 leaves run the shared core over SIMD lanes; sha256-tree leaves
// and nodes go through OpenSSL's SHA-256, which uses the CPU's SHA extensions where present.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../../core/tree.h"
#include "../hash_common.h"
#include "leaves.h"

namespace sentry {
namespace cpu {
namespace {

template <class Tree>
void hash_segments(const std::vector<Segment>& segs, uint8_t* digests) {
  constexpr uint64_t kGroupBytes = 64 * 1024;
  constexpr uint64_t kGroupLeaves = kGroupBytes / Tree::kLeafBytes;  // a power of two
  struct Item {
    size_t seg;
    uint64_t group;
  };
  std::vector<Item> items;
  std::vector<uint64_t> groups(segs.size()), group_base(segs.size());
  uint64_t total_groups = 0;
  for (size_t s = 0; s < segs.size(); ++s) {
    groups[s] = ceil_div(leaf_count<Tree>(segs[s].nbytes), kGroupLeaves);
    group_base[s] = total_groups;
    total_groups += groups[s];
    for (uint64_t g = 0; g < groups[s]; ++g) items.push_back({s, g});
  }
  std::vector<uint32_t> group_nodes(total_groups * 8);
  Node* group_node = reinterpret_cast<Node*>(group_nodes.data());

  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t begin, int64_t end) {
    Node nodes[kGroupLeaves];
    for (int64_t it = begin; it < end; ++it) {
      const Segment& seg = segs[items[it].seg];
      const uint64_t first = items[it].group * kGroupLeaves;
      const uint64_t count = std::min(kGroupLeaves, leaf_count<Tree>(seg.nbytes) - first);
      hash_leaves<Tree>(seg.data + first * Tree::kLeafBytes, seg.nbytes, first, count, nodes);
      const bool whole = groups[items[it].seg] == 1;
      reduce_nodes<Tree>(nodes, count, whole);
      if (whole) {
        Tree::digest(nodes[0], digests + 32 * items[it].seg);
      } else {
        memcpy(group_node[group_base[items[it].seg] + items[it].group], nodes[0], sizeof(Node));
      }
    }
  });
  at::parallel_for(0, static_cast<int64_t>(segs.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      if (groups[s] == 1) continue;
      Node* top = group_node + group_base[s];
      reduce_nodes<Tree>(top, groups[s], /*is_root=*/true);
      Tree::digest(top[0], digests + 32 * s);
    }
  });
}

at::Tensor hash_segments_cpu(const std::vector<Segment>& segs, Algorithm algo) {
  at::Tensor out = at::empty({static_cast<int64_t>(segs.size()), 32}, at::kByte);
  if (algo == Algorithm::kBlake3) {
    hash_segments<Blake3Tree>(segs, out.data_ptr<uint8_t>());
  } else {
    hash_segments<Sha256TreeOpenSSL>(segs, out.data_ptr<uint8_t>());
  }
  return out;
}

at::Tensor hash_tensors_cpu(at::TensorList tensors, c10::string_view algorithm) {
  const char* op = "sentry.hash_tensors";
  const Algorithm algo = parse_algorithm(algorithm, op);
  const std::vector<at::Tensor> inputs = prepare_hash_inputs(tensors, op);
  std::vector<Segment> segs;
  segs.reserve(inputs.size());
  for (const at::Tensor& t : inputs)
    segs.push_back({static_cast<const uint8_t*>(t.const_data_ptr()), byte_size(t)});
  return hash_segments_cpu(segs, algo);
}

at::Tensor hash_rows_cpu(const at::Tensor& x, c10::string_view algorithm) {
  const char* op = "sentry.hash_rows";
  const Algorithm algo = parse_algorithm(algorithm, op);
  int64_t row_stride = 0;
  const at::Tensor rows = prepare_rows_input(x, op, &row_stride);
  const int64_t n = rows.size(0);
  const uint64_t row_bytes = n == 0 || rows.numel() == 0 ? 0 : byte_size(rows.select(0, 0));
  std::vector<Segment> segs(n);
  const auto* base = static_cast<const uint8_t*>(rows.const_data_ptr());
  for (int64_t r = 0; r < n; ++r) segs[r] = {base + r * row_stride, row_bytes};
  return hash_segments_cpu(segs, algo);
}

}  // namespace

TORCH_LIBRARY_IMPL(sentry, CPU, m) {
  m.impl("hash_tensors", &hash_tensors_cpu);
  m.impl("hash_rows", &hash_rows_cpu);
}

}  // namespace cpu
}  // namespace sentry
