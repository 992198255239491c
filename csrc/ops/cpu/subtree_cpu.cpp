// CPU kernels of hash_subtrees, hash_runs, finish_runs and finish_subtrees (schemas in
// ../subtree_ops.cpp; plans in ../run_plan.h).
//
// hash_runs hashes every whole leaf of every run into the plan's slots, then combines level by
// level in place: the node of level l over leaves [j 2^l, (j + 1) 2^l) lives in the slot of
// its first leaf, so its children are the slots of leaves j 2^l and j 2^l + 2^(l-1). Every
// aligned node inside a run (up to its top level) is computed, and each piece's value ends up
// in the slot of its first leaf. The lowest levels are combined per aligned run of 64 leaves,
// right after those leaves are hashed (in cache, in parallel). hash_subtrees is hash_runs with
// one run per tensor and no edge bytes.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#include "../run_plan.h"
#include "../subtree_common.h"
#include "leaves.h"

namespace sentry {
namespace cpu {
namespace {

// One run's whole leaves: leaf g's bytes are at data + g * L - start.
struct Span {
  const uint8_t* data;
  uint64_t start, total, first, count, slot_base;
  int top;
};

// Whole leaves [first, first + count) of one run into their slots (never the root: the tree has
// more than one leaf, or there would be no whole leaf to hash).
template <class Tree>
void hash_span_leaves(const Span& p, uint64_t first, uint64_t count, Node* slots) {
  hash_leaves<Tree>(p.data + first * Tree::kLeafBytes - p.start, p.total, first, count,
                    slots + (first - p.first));
}

// Nodes [lo, hi) of level l of one run, each from its two children, in place.
template <class Tree>
void combine_level(const Span& p, int l, uint64_t lo, uint64_t hi, Node* base) {
  for (uint64_t j = lo; j < hi; ++j) {
    const uint64_t left = (j << l) - p.first;
    const uint64_t right = left + (uint64_t(1) << (l - 1));
    Node parent;
    Tree::combine(base[left], base[right], /*root=*/false, parent);
    std::memcpy(base[left], parent, sizeof(Node));
  }
}

uint64_t level_first(const Span& p, int l) { return ceil_div(p.first, uint64_t(1) << l); }
uint64_t level_end(const Span& p, int l) {
  const uint64_t first = level_first(p, l), end = (p.first + p.count) >> l;
  return l > p.top || end < first ? first : end;
}

// Every aligned node of every span, up to its top level, into `slots`.
template <class Tree>
void reduce_spans(const std::vector<Span>& spans, Node* slots) {
  constexpr int kItemLevels = 6;
  constexpr uint64_t kItemLeaves = uint64_t(1) << kItemLevels;
  std::vector<std::pair<size_t, uint64_t>> items;  // (span, first leaf)
  for (size_t s = 0; s < spans.size(); ++s) {
    const Span& p = spans[s];
    for (uint64_t g = p.first; g < p.first + p.count; g = (g / kItemLeaves + 1) * kItemLeaves)
      items.push_back({s, g});
  }
  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      const Span& p = spans[items[it].first];
      const uint64_t g0 = items[it].second;
      const uint64_t g1 = std::min((g0 / kItemLeaves + 1) * kItemLeaves, p.first + p.count);
      Node* base = slots + p.slot_base;
      hash_span_leaves<Tree>(p, g0, g1 - g0, base);
      for (int l = 1; l <= std::min(kItemLevels, p.top); ++l)
        combine_level<Tree>(p, l, std::max(level_first(p, l), ceil_div(g0, uint64_t(1) << l)),
                            std::min(level_end(p, l), g1 >> l), base);
    }
  });
  int depth = 0;
  for (const Span& p : spans) depth = std::max(depth, p.top);
  for (int l = kItemLevels + 1; l <= depth; ++l) {
    for (const Span& p : spans) {
      const int64_t lo = level_first(p, l), hi = level_end(p, l);
      at::parallel_for(lo, hi, 256, [&](int64_t begin, int64_t end) {
        combine_level<Tree>(p, l, begin, end, slots + p.slot_base);
      });
    }
  }
}

std::string num(int64_t v) { return std::to_string(v); }

// The plan's runs as spans over `sources`, every byte range checked against its source.
std::vector<Span> spans_of(const RunPlanView& v, const std::vector<at::Tensor>& sources,
                           uint64_t L, const char* op) {
  std::vector<Span> spans;
  int64_t slot_end = 0;
  for (int64_t k = 0; k < v.LR; ++k) {
    const int64_t r = v.leaf_runs[k];
    TORCH_CHECK_VALUE(r >= 0 && r < v.R, op, ": plan names run ", num(r), " of ", num(v.R));
    const int64_t* run = v.runs + r * kRunCols;
    const int64_t src = run[kRunSource];
    TORCH_CHECK_VALUE(src >= 0 && src < static_cast<int64_t>(sources.size()), op, ": run ",
                      num(r), " reads tensor ", num(src), " of ", num(sources.size()));
    Span p;
    p.start = run[kRunStart];
    p.total = run[kRunTotal];
    p.first = run[kRunFirst];
    p.count = run[kRunCount];
    p.slot_base = run[kRunSlotBase];
    p.top = static_cast<int>(run[kRunTop]);
    const uint64_t lo = p.first * L, hi = std::min<uint64_t>((p.first + p.count) * L, p.total);
    const uint64_t at = run[kRunSourceOffset], have = byte_size(sources[src]);
    TORCH_CHECK_VALUE(run[kRunSourceOffset] >= 0 && run[kRunFirst] >= 0 && run[kRunCount] > 0 &&
                          p.top >= 0 && p.top < 64 && lo >= p.start && hi > lo &&
                          at <= have && hi - p.start <= have - at &&
                          run[kRunSlotBase] >= slot_end && p.slot_base + p.count <= uint64_t(v.S),
                      op, ": run ", num(r), " does not fit its tensor (", num(have),
                      " bytes) or the plan's slots");
    slot_end = p.slot_base + p.count;
    p.data = static_cast<const uint8_t*>(sources[src].const_data_ptr()) + at;
    spans.push_back(p);
  }
  return spans;
}

template <class Tree>
void hash_runs_impl(const RunPlanView& v, const std::vector<at::Tensor>& sources,
                    uint8_t* message, int64_t message_bytes, const char* op) {
  const std::vector<Span> spans = spans_of(v, sources, Tree::kLeafBytes, op);
  std::vector<uint32_t> storage(std::max<int64_t>(v.S, 1) * 8, 0);
  Node* slots = reinterpret_cast<Node*>(storage.data());
  reduce_spans<Tree>(spans, slots);
  for (int64_t k = 0; k < v.K; ++k) {
    const int64_t slot = v.pieces[k * kPieceCols + kPieceSlot];
    TORCH_CHECK_VALUE(slot >= 0 && slot < v.S, op, ": piece ", num(k), " names slot ",
                      num(slot), " of ", num(v.S));
    Tree::digest(slots[slot], message + 32 * k);
  }
  for (int64_t f = 0; f < v.F; ++f) {
    const int64_t* fr = v.frags + f * kFragCols;
    const int64_t src = fr[kFragSource], at = fr[kFragSourceOffset], len = fr[kFragLength];
    const int64_t dst = fr[kFragDst];
    TORCH_CHECK_VALUE(src >= 0 && src < static_cast<int64_t>(sources.size()) && at >= 0 &&
                          len >= 0 && at + len <= static_cast<int64_t>(byte_size(sources[src])) &&
                          dst >= 32 * v.K && dst + len <= message_bytes,
                      op, ": edge fragment ", num(f), " lies outside its tensor or the message");
    std::memcpy(message + dst, static_cast<const uint8_t*>(sources[src].const_data_ptr()) + at,
                len);
  }
}

std::tuple<at::Tensor, at::Tensor> hash_runs_cpu(at::TensorList tensors, const at::Tensor& plan,
                                                 at::IntArrayRef header, int64_t message_bytes,
                                                 c10::string_view algorithm) {
  const char* op = "sentry.hash_runs";
  RunCall call = prepare_run_call(tensors, plan, header, message_bytes, algorithm, op);
  at::Tensor message = at::zeros({message_bytes}, at::kByte);
  if (call.algorithm == Algorithm::kBlake3)
    hash_runs_impl<Blake3Tree>(call.view, call.sources, message.data_ptr<uint8_t>(),
                               message_bytes, op);
  else
    hash_runs_impl<Sha256TreeOpenSSL>(call.view, call.sources, message.data_ptr<uint8_t>(),
                                      message_bytes, op);
  return {message, at::zeros({1}, at::kInt)};
}

at::Tensor hash_subtrees_cpu(at::TensorList tensors, at::IntArrayRef start_bytes,
                             at::IntArrayRef total_bytes, c10::string_view algorithm) {
  const char* op = "sentry.hash_subtrees";
  const Algorithm algo = parse_algorithm(algorithm, op);
  const std::vector<at::Tensor> inputs =
      prepare_subtree_inputs(tensors, start_bytes, total_bytes, op);
  const auto [header, body] = plan_runs(subtree_runs(inputs, start_bytes, total_bytes),
                                        std::string(algorithm), /*with_edges=*/false);
  const RunPlanView v = run_plan_view(header, body.const_data_ptr<int64_t>(), body.numel(), op);
  at::Tensor out = at::empty({v.K, 32}, at::kByte);
  if (algo == Algorithm::kBlake3)
    hash_runs_impl<Blake3Tree>(v, inputs, out.data_ptr<uint8_t>(), 32 * v.K, op);
  else
    hash_runs_impl<Sha256TreeOpenSSL>(v, inputs, out.data_ptr<uint8_t>(), 32 * v.K, op);
  return out;
}

// Node words from a value's 32 serialised bytes (the byte order of a digest).
template <class Tree>
void node_of(const uint8_t in[32], uint32_t out[8]) {
  if constexpr (Tree::kLeafBytes == Blake3Tree::kLeafBytes)
    node_from_bytes(static_cast<const Blake3Tree*>(nullptr), in, out);
  else
    node_from_bytes(static_cast<const Sha256Tree*>(nullptr), in, out);
}

template <class Tree>
void finish_runs_impl(const FinishPlanView& v, const uint8_t* gathered, int64_t gathered_bytes,
                      uint8_t* out, const char* op) {
  std::vector<uint32_t> storage(std::max<int64_t>(v.items, 1) * 8, 0);
  Node* items = reinterpret_cast<Node*>(storage.data());
  auto item = [&](int64_t id, const char* what, int64_t row) {
    TORCH_CHECK_VALUE(id >= 0 && id < v.items, op, ": ", what, " ", num(row), " names item ",
                      num(id), " of ", num(v.items));
    return id;
  };
  for (int64_t p = 0; p < v.P; ++p) {
    const int64_t* row = v.pieces + p * kFPCols;
    const int64_t at = row[kFPGathered];
    TORCH_CHECK_VALUE(at >= 0 && at + 32 <= gathered_bytes, op, ": piece ", num(p),
                      " lies outside the gathered bytes");
    node_of<Tree>(gathered + at, items[item(row[kFPItem], "piece", p)]);
  }
  for (int64_t b = 0; b < v.BL; ++b) {
    const int64_t* row = v.leaves + b * kFLCols;
    item(row[kFLItem], "leaf", b);
    const int64_t len = row[kFLLength], fb = row[kFLFragBegin], fe = row[kFLFragEnd];
    bool ok = len >= 0 && len <= int64_t(Tree::kLeafBytes) && fb >= 0 && fe >= fb &&
              fe <= v.FR && row[kFLIndex] >= 0;
    for (int64_t f = fb; ok && f < fe; ++f) {
      const int64_t* fr = v.frags + f * kFInCols;
      ok = fr[kFInGathered] >= 0 && fr[kFInOffset] >= 0 && fr[kFInLength] >= 0 &&
           fr[kFInOffset] + fr[kFInLength] <= len &&
           fr[kFInGathered] + fr[kFInLength] <= gathered_bytes;
    }
    TORCH_CHECK_VALUE(ok, op, ": leaf ", num(b), " or one of its fragments lies outside the ",
                      "gathered bytes or its leaf");
  }
  at::parallel_for(0, v.BL, 256, [&](int64_t begin, int64_t end) {
    uint8_t leaf[Tree::kLeafBytes];
    for (int64_t b = begin; b < end; ++b) {
      const int64_t* row = v.leaves + b * kFLCols;
      std::memset(leaf, 0, sizeof leaf);  // a plan that leaves a gap reads zeros, not garbage
      for (int64_t f = row[kFLFragBegin]; f < row[kFLFragEnd]; ++f) {
        const int64_t* fr = v.frags + f * kFInCols;
        std::memcpy(leaf + fr[kFInOffset], gathered + fr[kFInGathered], fr[kFInLength]);
      }
      Tree::leaf(HostLoader{leaf}, 0, static_cast<uint32_t>(row[kFLLength]), row[kFLIndex],
                 row[kFLRoot] != 0, items[row[kFLItem]]);
    }
  });
  for (size_t d = 0; d < v.depth_ops.size(); ++d) {
    const int64_t lo = v.depth_offset[d], hi = lo + v.depth_ops[d];
    for (int64_t o = lo; o < hi; ++o) {
      const int64_t* row = v.ops + o * kOpCols;
      item(row[kOpDst], "op", o);
      item(row[kOpLeft], "op", o);
      item(row[kOpRight], "op", o);
    }
    at::parallel_for(lo, hi, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        const int64_t* row = v.ops + o * kOpCols;
        Tree::combine(items[row[kOpLeft]], items[row[kOpRight]], row[kOpRoot] != 0,
                      items[row[kOpDst]]);
      }
    });
  }
  for (int64_t q = 0; q < v.Q; ++q) Tree::digest(items[item(v.outputs[q], "output", q)], out + 32 * q);
}

std::tuple<at::Tensor, at::Tensor> finish_runs_cpu(const at::Tensor& gathered,
                                                   const at::Tensor& plan, at::IntArrayRef header,
                                                   c10::string_view algorithm) {
  const char* op = "sentry.finish_runs";
  FinishCall call = prepare_finish_call(gathered, plan, header, algorithm, op);
  at::Tensor out = at::empty({call.view.Q, 32}, at::kByte);
  if (call.algorithm == Algorithm::kBlake3)
    finish_runs_impl<Blake3Tree>(call.view, call.gathered.const_data_ptr<uint8_t>(),
                                 call.gathered.numel(), out.data_ptr<uint8_t>(), op);
  else
    finish_runs_impl<Sha256TreeOpenSSL>(call.view, call.gathered.const_data_ptr<uint8_t>(),
                                        call.gathered.numel(), out.data_ptr<uint8_t>(), op);
  return {out, at::zeros({1}, at::kInt)};
}

at::Tensor finish_subtrees_cpu(const at::Tensor& values, at::IntArrayRef first_leaves,
                               int64_t total_bytes, c10::string_view algorithm) {
  const char* op = "sentry.finish_subtrees";
  const Algorithm algo = parse_algorithm(algorithm, op);
  TORCH_CHECK_VALUE(values.dim() == 2 && values.size(1) == 32 &&
                        values.scalar_type() == at::kByte,
                    op, ": values must be a uint8 [K, 32] tensor, got ", values.scalar_type(),
                    " ", shape_of(values));
  TORCH_CHECK_VALUE(static_cast<size_t>(values.size(0)) == first_leaves.size(), op, ": ",
                    std::to_string(values.size(0)), " values but ",
                    std::to_string(first_leaves.size()), " first_leaves");
  TORCH_CHECK_VALUE(total_bytes >= 0, op, ": total_bytes is negative (",
                    std::to_string(total_bytes), ")");
  std::vector<uint64_t> firsts(first_leaves.size());
  for (size_t i = 0; i < firsts.size(); ++i) {
    TORCH_CHECK_VALUE(first_leaves[i] >= 0, op, ": first_leaves[", std::to_string(i),
                      "] is negative");
    firsts[i] = static_cast<uint64_t>(first_leaves[i]);
  }
  const at::Tensor host = values.contiguous();
  const auto* rows = reinterpret_cast<const uint8_t(*)[32]>(host.const_data_ptr<uint8_t>());
  at::Tensor out = at::empty({32}, at::kByte);
  try {
    if (algo == Algorithm::kBlake3) {
      SubtreeFinisher<Blake3Tree>(firsts.data(), rows, firsts.size(), total_bytes)
          .root(out.data_ptr<uint8_t>());
    } else {
      SubtreeFinisher<Sha256Tree>(firsts.data(), rows, firsts.size(), total_bytes)
          .root(out.data_ptr<uint8_t>());
    }
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, op, ": ", e.what());
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sentry, CPU, m) {
  m.impl("hash_subtrees", &hash_subtrees_cpu);
  m.impl("finish_subtrees", &finish_subtrees_cpu);
  m.impl("hash_runs", &hash_runs_cpu);
  m.impl("finish_runs", &finish_runs_cpu);
}

}  // namespace cpu
}  // namespace sentry
