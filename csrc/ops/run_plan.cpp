// The planners of run_plan.h. Pure integer work on the host; the hashing happens in the
// hash_runs / finish_runs kernels (cpu/subtree_cpu.cpp, cuda/subtree_cuda.cu).
#include "run_plan.h"

#include <algorithm>
#include <stdexcept>

#include "../core/subtree.h"
#include "hash_common.h"

namespace sentry {
namespace {

std::string num(int64_t v) { return std::to_string(v); }

const int64_t* int64_rows(const at::Tensor& t, int64_t cols, const char* what, const char* op,
                          at::Tensor* keep) {
  TORCH_CHECK_VALUE(t.device().is_cpu() && t.scalar_type() == at::kLong && t.dim() == 2 &&
                        t.size(1) == cols,
                    op, ": ", what, " must be a CPU int64 tensor of shape [*, ", num(cols),
                    "], got ", t.scalar_type(), " ", shape_of(t), " on ", t.device());
  *keep = t.contiguous();
  return keep->const_data_ptr<int64_t>();
}

uint64_t leaf_bytes_of(const std::string& algorithm, const char* op) {
  return parse_algorithm(algorithm, op) == Algorithm::kBlake3 ? Blake3Tree::kLeafBytes
                                                              : Sha256Tree::kLeafBytes;
}

// The tree of a leaf size, for the templates of subtree.h.
template <class F>
auto with_tree(uint64_t leaf_bytes, F&& f) {
  return leaf_bytes == Blake3Tree::kLeafBytes ? f(static_cast<const Blake3Tree*>(nullptr))
                                              : f(static_cast<const Sha256Tree*>(nullptr));
}

template <class Tree>
std::tuple<std::vector<int64_t>, at::Tensor> plan_runs_impl(const int64_t* in, int64_t R,
                                                            bool with_edges) {
  const char* op = "sentry.plan_runs";
  const uint64_t L = Tree::kLeafBytes;
  std::vector<int64_t> runs(R * kRunCols), leaf_runs, pieces, frags;
  std::vector<std::vector<int64_t>> levels;  // per global level: entries
  std::vector<int64_t> level_nodes;
  int64_t cursor = 0, edge_bytes = 0;
  for (int64_t r = 0; r < R; ++r) {
    const int64_t* row = in + r * kInCols;
    for (int c = 0; c < kInCols; ++c)
      TORCH_CHECK_VALUE(row[c] >= (c == kInCap ? -1 : 0), op, ": run ", num(r), " column ",
                        num(c), " is ", num(row[c]));
    TORCH_CHECK_VALUE(row[kInCap] <= 63, op, ": run ", num(r), " cap ", num(row[kInCap]));
    ShardLeaves s;
    try {
      s = shard_leaves<Tree>(row[kInStart], row[kInLength], row[kInTotal]);
    } catch (const std::invalid_argument& e) {
      TORCH_CHECK_VALUE(false, op, ": run ", num(r), ": ", e.what());
    }
    if (row[kInCap] >= 0) s.max_level = std::min<int>(s.max_level, row[kInCap]);
    const int64_t count = s.end - s.first;
    int64_t base = cursor;
    if (count > 0) {
      // Leaf g sits in slot base + g - first. Aligning base with first modulo the block-level
      // nodes the run can hold keeps each such node inside one block of kBlockLeaves slots.
      const int a = std::min({kBlockLevels, s.max_level, floor_log2(count)});
      const int64_t mask = (int64_t(1) << a) - 1;
      base = cursor + ((static_cast<int64_t>(s.first) - cursor) & mask);
      cursor = base + count;
      leaf_runs.push_back(r);
    }
    int64_t* out = runs.data() + r * kRunCols;
    out[kRunSource] = row[kInSource];
    out[kRunSourceOffset] = row[kInSourceOffset];
    out[kRunStart] = row[kInStart];
    out[kRunTotal] = row[kInTotal];
    out[kRunFirst] = s.first;
    out[kRunCount] = count;
    out[kRunSlotBase] = base;
    out[kRunTop] = s.max_level;
    for (const Piece& p : pieces_of(s))
      pieces.insert(pieces.end(), {base + static_cast<int64_t>(p.first_leaf - s.first), r,
                                   static_cast<int64_t>(p.first_leaf), p.level});
    if (with_edges) {
      const int64_t start = row[kInStart], stop = start + row[kInLength];
      auto frag = [&](int64_t a, int64_t b) {
        if (b <= a) return;
        frags.insert(frags.end(), {row[kInSource], row[kInSourceOffset] + (a - start), b - a,
                                   edge_bytes, r, a});
        edge_bytes += b - a;
      };
      if (count == 0) {
        frag(start, stop);
      } else {
        frag(start, static_cast<int64_t>(s.first * L));
        frag(static_cast<int64_t>(s.end * L), stop);  // the input's last leaf counts as whole
      }
    }
    for (int l = kBlockLevels + 1; l <= s.max_level; ++l) {
      const int64_t j0 = ceil_div(s.first, uint64_t(1) << l), j1 = s.end >> l;
      if (j1 <= j0) break;  // no node this high, nor above
      const size_t i = l - kBlockLevels - 1;
      if (levels.size() <= i) {
        levels.resize(i + 1);
        level_nodes.resize(i + 1, 0);
      }
      levels[i].insert(levels[i].end(), {r, j0, level_nodes[i]});
      level_nodes[i] += j1 - j0;
    }
  }
  const int64_t K = pieces.size() / kPieceCols, F = frags.size() / kFragCols;
  for (int64_t f = 0; f < F; ++f) frags[f * kFragCols + kFragDst] += 32 * K;
  const int64_t S = cursor, B = (S + kBlockLeaves - 1) / kBlockLeaves;
  std::vector<int64_t> blocks(B);
  for (int64_t b = 0, k = 0; b < B; ++b) {
    while (k + 1 < static_cast<int64_t>(leaf_runs.size()) &&
           runs[leaf_runs[k + 1] * kRunCols + kRunSlotBase] <= b * kBlockLeaves)
      ++k;
    blocks[b] = k;
  }

  std::vector<int64_t> header = {kPlanVersion, static_cast<int64_t>(L), R,
                                 static_cast<int64_t>(leaf_runs.size()), B, K, F, S, edge_bytes,
                                 32 * K + edge_bytes, static_cast<int64_t>(levels.size())};
  for (size_t i = 0; i < levels.size(); ++i) {
    header.push_back(levels[i].size() / kLevelCols);
    header.push_back(level_nodes[i]);
  }
  std::vector<int64_t> body;
  for (const auto* part : {&runs, &leaf_runs, &blocks, &pieces, &frags})
    body.insert(body.end(), part->begin(), part->end());
  for (const auto& entries : levels) body.insert(body.end(), entries.begin(), entries.end());
  at::Tensor out = at::empty({static_cast<int64_t>(body.size())}, at::kLong);
  std::copy(body.begin(), body.end(), out.data_ptr<int64_t>());
  return {header, out};
}

// TreeWalk visitor that records combinations instead of computing them.
struct Recorder {
  struct Handle {
    int64_t item;
    int64_t depth;  // 0 for a piece or leaf; 1 + the deeper child for a combination
  };
  struct Segment {
    uint64_t lo, hi;
    int64_t item;
  };
  int64_t item_base, next_item;
  std::vector<int64_t>* ops;  // rows of kOpCols + 1 words (the depth last, dropped later)
  int segment_level;          // -1: record no segment
  uint64_t leaves;
  std::vector<Segment> segments;  // nodes of segment_level (and the trailing node), in order

  Handle piece(uint64_t i) { return {item_base + static_cast<int64_t>(i), 0}; }
  Handle combine(const Handle& l, const Handle& r, bool root) {
    const Handle h{next_item++, std::max(l.depth, r.depth) + 1};
    ops->insert(ops->end(), {h.item, l.item, r.item, root ? 1 : 0, h.depth});
    return h;
  }
  void node(uint64_t lo, uint64_t hi, const Handle& h) {
    if (segment_level < 0) return;
    const uint64_t size = uint64_t(1) << segment_level;
    if (lo % size == 0 && (hi - lo == size || (hi == leaves && hi - lo < size)))
      segments.push_back({lo, hi, h.item});
  }
};

template <class Tree>
std::tuple<std::vector<int64_t>, at::Tensor, at::Tensor> plan_finish_impl(
    const int64_t* trees, int64_t Q, const int64_t* items, int64_t I, const int64_t* leaves,
    int64_t BL, const int64_t* frags, int64_t FR) {
  const char* op = "sentry.plan_finish";
  const int64_t L = Tree::kLeafBytes;
  std::vector<int64_t> pieces, leaf_rows(BL * kFLCols, -1), ops, outputs, segment_rows;
  int64_t gathered = 0, next_item = I;
  std::vector<char> leaf_used(BL, 0);
  for (int64_t f = 0; f < FR; ++f) {
    const int64_t* fr = frags + f * kFInCols;
    TORCH_CHECK_VALUE(fr[kFInGathered] >= 0 && fr[kFInOffset] >= 0 && fr[kFInLength] > 0 &&
                          fr[kFInOffset] + fr[kFInLength] <= L,
                      op, ": fragment ", num(f), " is not a range of bytes inside one leaf");
    gathered = std::max(gathered, fr[kFInGathered] + fr[kFInLength]);
  }
  int64_t expect_begin = 0;
  std::vector<int64_t> segment_items;
  for (int64_t q = 0; q < Q; ++q) {
    const int64_t* t = trees + q * kTreeCols;
    const int64_t total = t[kTreeTotal], begin = t[kTreeItemBegin], end = t[kTreeItemEnd];
    const std::string tree = "tree " + num(q);
    TORCH_CHECK_VALUE(total >= 0 && begin == expect_begin && end >= begin && end <= I &&
                          t[kTreeSegmentLevel] >= -1 && t[kTreeSegmentLevel] < 63,
                      op, ": ", tree, " has a bad row (total, items, segment level)");
    expect_begin = end;
    const uint64_t n = leaf_count<Tree>(total);
    std::vector<uint64_t> firsts;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t* it = items + i * kItemCols;
      TORCH_CHECK_VALUE(it[kItemFirst] >= 0 && static_cast<uint64_t>(it[kItemFirst]) < n &&
                            (it[kItemKind] == 0 || it[kItemKind] == 1) && it[kItemRef] >= 0,
                        op, ": ", tree, ", item ", num(i - begin), " is malformed");
      firsts.push_back(it[kItemFirst]);
      if (it[kItemKind] == 0) {
        pieces.insert(pieces.end(), {i, it[kItemRef]});
        gathered = std::max(gathered, it[kItemRef] + 32);
        continue;
      }
      const int64_t b = it[kItemRef];
      TORCH_CHECK_VALUE(b < BL && !leaf_used[b], op, ": ", tree, ", item ", num(i - begin),
                        " names leaf row ", num(b), " that is missing or used twice");
      leaf_used[b] = 1;
      const int64_t g = it[kItemFirst];
      const int64_t len = std::min<int64_t>(L, total - g * L);
      const int64_t fb = leaves[b * kLeafInputCols + kLeafFragBegin];
      const int64_t fe = leaves[b * kLeafInputCols + kLeafFragEnd];
      TORCH_CHECK_VALUE(fb >= 0 && fe >= fb && fe <= FR, op, ": leaf row ", num(b),
                        " has a bad fragment range");
      int64_t at = 0;
      for (int64_t f = fb; f < fe; ++f) {
        TORCH_CHECK_VALUE(frags[f * kFInCols + kFInOffset] == at, op, ": ", tree, ", leaf ",
                          num(g), ": its fragments do not cover bytes [0, ", num(len),
                          ") in order");
        at += frags[f * kFInCols + kFInLength];
      }
      TORCH_CHECK_VALUE(at == len, op, ": ", tree, ", leaf ", num(g), ": fragments hold ",
                        num(at), " of its ", num(len), " bytes");
      int64_t* row = leaf_rows.data() + b * kFLCols;
      row[kFLItem] = i;
      row[kFLIndex] = g;
      row[kFLLength] = len;
      row[kFLRoot] = n == 1;
      row[kFLFragBegin] = fb;
      row[kFLFragEnd] = fe;
    }
    if (n == 1) {
      TORCH_CHECK_VALUE(end - begin == 1 && items[begin * kItemCols + kItemKind] == 1, op, ": ",
                        tree, " is one leaf: give exactly that leaf's bytes");
      outputs.push_back(begin);
      continue;
    }
    const int level = static_cast<int>(t[kTreeSegmentLevel]);
    Recorder rec{begin, next_item, &ops, level, n, {}};
    try {
      outputs.push_back(TreeWalk<Recorder>(firsts.data(), firsts.size(), n, rec).root().item);
    } catch (const std::invalid_argument& e) {
      TORCH_CHECK_VALUE(false, op, ": ", tree, ": ", e.what());
    }
    next_item = rec.next_item;
    if (level >= 0) {
      const uint64_t want = ceil_div(n, uint64_t(1) << level);
      TORCH_CHECK_VALUE(rec.segments.size() == want, op, ": ", tree, ": pieces larger than ",
                        "segment level ", num(level), " hide some of its ", num(want),
                        " segments");
      for (const auto& seg : rec.segments) {
        segment_items.push_back(seg.item);
        segment_rows.insert(segment_rows.end(), {q, static_cast<int64_t>(seg.lo),
                                                 static_cast<int64_t>(seg.hi)});
      }
    }
  }
  TORCH_CHECK_VALUE(expect_begin == I, op, ": the trees hold ", num(expect_begin), " of ",
                    num(I), " items");
  for (int64_t b = 0; b < BL; ++b)
    TORCH_CHECK_VALUE(leaf_used[b], op, ": leaf row ", num(b), " belongs to no item");
  outputs.insert(outputs.end(), segment_items.begin(), segment_items.end());

  // Ops by dependency depth (a counting sort, stable): depth d needs only smaller depths.
  const int64_t O = ops.size() / (kOpCols + 1);
  std::vector<int64_t> depth_ops;
  for (int64_t k = 0; k < O; ++k) {
    const int64_t d = ops[k * (kOpCols + 1) + kOpCols];
    if (static_cast<int64_t>(depth_ops.size()) < d) depth_ops.resize(d, 0);
    ++depth_ops[d - 1];
  }
  std::vector<int64_t> at(depth_ops.size(), 0), sorted_ops(O * kOpCols);
  for (size_t d = 1; d < at.size(); ++d) at[d] = at[d - 1] + depth_ops[d - 1];
  for (int64_t k = 0; k < O; ++k) {
    const int64_t* o = ops.data() + k * (kOpCols + 1);
    std::copy(o, o + kOpCols, sorted_ops.data() + kOpCols * at[o[kOpCols] - 1]++);
  }
  std::vector<int64_t> header = {kPlanVersion, L, next_item,
                                 static_cast<int64_t>(pieces.size() / kFPCols), BL, FR, O,
                                 static_cast<int64_t>(outputs.size()), gathered,
                                 static_cast<int64_t>(depth_ops.size())};
  header.insert(header.end(), depth_ops.begin(), depth_ops.end());
  std::vector<int64_t> body;
  body.insert(body.end(), pieces.begin(), pieces.end());
  body.insert(body.end(), leaf_rows.begin(), leaf_rows.end());
  body.insert(body.end(), frags, frags + FR * kFInCols);
  body.insert(body.end(), sorted_ops.begin(), sorted_ops.end());
  body.insert(body.end(), outputs.begin(), outputs.end());
  at::Tensor out = at::empty({static_cast<int64_t>(body.size())}, at::kLong);
  std::copy(body.begin(), body.end(), out.data_ptr<int64_t>());
  at::Tensor segs = at::empty({static_cast<int64_t>(segment_rows.size() / 3), 3}, at::kLong);
  std::copy(segment_rows.begin(), segment_rows.end(), segs.data_ptr<int64_t>());
  return {header, out, segs};
}

}  // namespace

RunPlanView run_plan_view(at::IntArrayRef header, const int64_t* body, int64_t body_words,
                          const char* op) {
  TORCH_CHECK_VALUE(header.size() >= kRHWords && header[kRHVersion] == kPlanVersion, op,
                    ": not a run plan header (plan_runs makes them)");
  RunPlanView v;
  v.leaf_bytes = header[kRHLeafBytes];
  v.R = header[kRHRuns];
  v.LR = header[kRHLeafRuns];
  v.B = header[kRHBlocks];
  v.K = header[kRHPieces];
  v.F = header[kRHFrags];
  v.S = header[kRHSlots];
  v.E = header[kRHEdgeBytes];
  v.message_bytes = header[kRHMessageBytes];
  const int64_t levels = header[kRHLevels];
  TORCH_CHECK_VALUE(levels >= 0 && header.size() == static_cast<size_t>(kRHWords + 2 * levels),
                    op, ": run plan header has ", num(header.size()), " words");
  for (int64_t x : {v.R, v.LR, v.B, v.K, v.F, v.S, v.E})
    TORCH_CHECK_VALUE(x >= 0, op, ": run plan header has a negative count");
  TORCH_CHECK_VALUE(v.message_bytes == 32 * v.K + v.E && v.LR <= v.R &&
                        v.B == (v.S + kBlockLeaves - 1) / kBlockLeaves,
                    op, ": run plan header is inconsistent");
  int64_t words = v.R * kRunCols + v.LR + v.B + v.K * kPieceCols + v.F * kFragCols;
  for (int64_t i = 0; i < levels; ++i) {
    const int64_t entries = header[kRHWords + 2 * i], nodes = header[kRHWords + 2 * i + 1];
    TORCH_CHECK_VALUE(entries >= 0 && nodes >= 0, op, ": run plan header has a negative count");
    v.level_offset.push_back(words);
    v.level_entries.push_back(entries);
    v.level_nodes.push_back(nodes);
    words += entries * kLevelCols;
  }
  TORCH_CHECK_VALUE(words == body_words, op, ": run plan body has ", num(body_words),
                    " words, its header describes ", num(words));
  v.body_words = words;
  v.runs = body;
  v.leaf_runs = v.runs + v.R * kRunCols;
  v.blocks = v.leaf_runs + v.LR;
  v.pieces = v.blocks + v.B;
  v.frags = v.pieces + v.K * kPieceCols;
  v.levels = v.frags + v.F * kFragCols;
  return v;
}

FinishPlanView finish_plan_view(at::IntArrayRef header, const int64_t* body, int64_t body_words,
                                const char* op) {
  TORCH_CHECK_VALUE(header.size() >= kFHWords && header[kFHVersion] == kPlanVersion, op,
                    ": not a finish plan header (plan_finish makes them)");
  FinishPlanView v;
  v.leaf_bytes = header[kFHLeafBytes];
  v.items = header[kFHItems];
  v.P = header[kFHPieces];
  v.BL = header[kFHLeaves];
  v.FR = header[kFHFrags];
  v.O = header[kFHOps];
  v.Q = header[kFHOutputs];
  v.gathered_bytes = header[kFHGatheredBytes];
  const int64_t depths = header[kFHDepths];
  TORCH_CHECK_VALUE(depths >= 0 && header.size() == static_cast<size_t>(kFHWords + depths), op,
                    ": finish plan header has ", num(header.size()), " words");
  for (int64_t x : {v.items, v.P, v.BL, v.FR, v.O, v.Q, v.gathered_bytes})
    TORCH_CHECK_VALUE(x >= 0, op, ": finish plan header has a negative count");
  int64_t at = 0;
  for (int64_t d = 0; d < depths; ++d) {
    TORCH_CHECK_VALUE(header[kFHWords + d] >= 0, op, ": finish plan header has a negative count");
    v.depth_offset.push_back(at);
    v.depth_ops.push_back(header[kFHWords + d]);
    at += header[kFHWords + d];
  }
  TORCH_CHECK_VALUE(at == v.O, op, ": finish plan header is inconsistent");
  const int64_t words = v.P * kFPCols + v.BL * kFLCols + v.FR * kFInCols + v.O * kOpCols + v.Q;
  TORCH_CHECK_VALUE(words == body_words, op, ": finish plan body has ", num(body_words),
                    " words, its header describes ", num(words));
  v.pieces = body;
  v.leaves = v.pieces + v.P * kFPCols;
  v.frags = v.leaves + v.BL * kFLCols;
  v.ops = v.frags + v.FR * kFInCols;
  v.outputs = v.ops + v.O * kOpCols;
  return v;
}

std::tuple<std::vector<int64_t>, at::Tensor> plan_runs(const at::Tensor& runs,
                                                       const std::string& algorithm,
                                                       bool with_edges) {
  const char* op = "sentry.plan_runs";
  const uint64_t L = leaf_bytes_of(algorithm, op);
  at::Tensor keep;
  const int64_t* in = int64_rows(runs, kInCols, "runs", op, &keep);
  return with_tree(L, [&](auto tree) {
    using Tree = std::remove_const_t<std::remove_pointer_t<decltype(tree)>>;
    return plan_runs_impl<Tree>(in, runs.size(0), with_edges);
  });
}

std::tuple<std::vector<int64_t>, at::Tensor, at::Tensor> plan_finish(
    const at::Tensor& trees, const at::Tensor& items, const at::Tensor& leaves,
    const at::Tensor& frags, const std::string& algorithm) {
  const char* op = "sentry.plan_finish";
  const uint64_t L = leaf_bytes_of(algorithm, op);
  at::Tensor k1, k2, k3, k4;
  const int64_t* t = int64_rows(trees, kTreeCols, "trees", op, &k1);
  const int64_t* i = int64_rows(items, kItemCols, "items", op, &k2);
  const int64_t* l = int64_rows(leaves, kLeafInputCols, "leaves", op, &k3);
  const int64_t* f = int64_rows(frags, kFInCols, "fragments", op, &k4);
  return with_tree(L, [&](auto tree) {
    using Tree = std::remove_const_t<std::remove_pointer_t<decltype(tree)>>;
    return plan_finish_impl<Tree>(t, trees.size(0), i, items.size(0), l, leaves.size(0), f,
                                  frags.size(0));
  });
}

}  // namespace sentry
