// Plans of the run-based sharded hash (docs/DISTRIBUTED.md, "Weight syncs"), made once on the
// host from metadata, so that each later check is a few kernel launches over fixed tables:
//
//  * plan_runs: one rank's byte runs of full tensors (each run: bytes [start, start + length)
//    of a tensor of `total` bytes, found at `source_offset` of local tensor `source`) -> where
//    their whole leaves go (slots), which aligned subtrees ("pieces", core/subtree.h) and which
//    edge bytes (parts of leaves the run does not hold whole) make up the rank's message, and
//    the tables hash_runs reads on the device.
//  * plan_finish: the items of every tree to finish (pieces found in the gathered messages,
//    boundary leaves assembled from edge fragments) -> the combinations, grouped by dependency
//    depth, that finish_runs performs to get every root (and, optionally, the nodes of one
//    level of a tree: its segments).
//
// Plans are int64 tensors: a header (a short list of counts, known on the host) and a body of
// sections. The kernels never trust a body: every index they read is checked against the
// header's counts and the sizes of the tensors of the call, and a bad entry sets a status flag.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

namespace sentry {

constexpr int kBlockLevels = 7;                   // levels a block reduces in shared memory
constexpr int kBlockLeaves = 1 << kBlockLevels;   // leaves (threads) of such a block
constexpr int64_t kPlanVersion = 1;

// Columns of plan_runs' input ([R, 6] int64): cap is the largest piece level (-1: none).
enum RunInput { kInSource, kInSourceOffset, kInStart, kInLength, kInTotal, kInCap, kInCols };

// Body sections of a run plan, in this order.
enum RunCol { kRunSource, kRunSourceOffset, kRunStart, kRunTotal, kRunFirst, kRunCount,
              kRunSlotBase, kRunTop, kRunCols };
enum PieceCol { kPieceSlot, kPieceRun, kPieceFirst, kPieceLevel, kPieceCols };
enum FragCol { kFragSource, kFragSourceOffset, kFragLength, kFragDst, kFragRun, kFragStart,
               kFragCols };
enum LevelCol { kLevelRun, kLevelFirstNode, kLevelPrefix, kLevelCols };
// Header words; then, for each global level kBlockLevels + 1 + i: its entries, its nodes.
enum RunHeader { kRHVersion, kRHLeafBytes, kRHRuns, kRHLeafRuns, kRHBlocks, kRHPieces,
                 kRHFrags, kRHSlots, kRHEdgeBytes, kRHMessageBytes, kRHLevels, kRHWords };

// Section pointers of a run plan's body, from its header (validated against the body's size).
struct RunPlanView {
  const int64_t* runs;       // [R, kRunCols]
  const int64_t* leaf_runs;  // [LR]: runs that hold whole leaves, in slot order
  const int64_t* blocks;     // [B]: index into leaf_runs of the first run of block b
  const int64_t* pieces;     // [K, kPieceCols]; piece k is row k of the message
  const int64_t* frags;      // [F, kFragCols]
  const int64_t* levels;     // entries of the global levels, [*, kLevelCols]
  int64_t R, LR, B, K, F, S, E, message_bytes, leaf_bytes;
  std::vector<int64_t> level_offset, level_entries, level_nodes;  // per global level
  int64_t body_words;
};

// Reads and checks a run plan's header against its body's size; names the op on failure.
RunPlanView run_plan_view(at::IntArrayRef header, const int64_t* body, int64_t body_words,
                          const char* op);

// Columns of plan_finish's inputs.
enum TreeInput { kTreeTotal, kTreeItemBegin, kTreeItemEnd, kTreeSegmentLevel, kTreeCols };
enum ItemInput { kItemFirst, kItemKind, kItemRef, kItemCols };  // kind: 0 piece, 1 leaf
enum LeafInput { kLeafFragBegin, kLeafFragEnd, kLeafInputCols };
enum FragInput { kFInGathered, kFInOffset, kFInLength, kFInCols };

// Body sections of a finish plan.
enum FinishPieceCol { kFPItem, kFPGathered, kFPCols };
enum FinishLeafCol { kFLItem, kFLIndex, kFLLength, kFLRoot, kFLFragBegin, kFLFragEnd, kFLCols };
enum FinishOpCol { kOpDst, kOpLeft, kOpRight, kOpRoot, kOpCols };
// Header words; then the number of ops of each dependency depth.
enum FinishHeader { kFHVersion, kFHLeafBytes, kFHItems, kFHPieces, kFHLeaves, kFHFrags, kFHOps,
                    kFHOutputs, kFHGatheredBytes, kFHDepths, kFHWords };

struct FinishPlanView {
  const int64_t* pieces;   // [P, kFPCols]
  const int64_t* leaves;   // [BL, kFLCols]
  const int64_t* frags;    // [FR, kFInCols]
  const int64_t* ops;      // [O, kOpCols], by dependency depth
  const int64_t* outputs;  // [Q]: item of each output digest
  int64_t items, P, BL, FR, O, Q, gathered_bytes, leaf_bytes;
  std::vector<int64_t> depth_offset, depth_ops;
};

FinishPlanView finish_plan_view(at::IntArrayRef header, const int64_t* body, int64_t body_words,
                                const char* op);

// The planners (CPU tensors in, CPU tensors out). plan_runs returns (header, body);
// plan_finish returns (header, body, segments: [X, 3] int64 (tree, first leaf, end leaf) of the
// outputs after the roots). Both throw ValueError naming the run, tree, item or leaf at fault.
std::tuple<std::vector<int64_t>, at::Tensor> plan_runs(const at::Tensor& runs,
                                                       const std::string& algorithm,
                                                       bool with_edges);
std::tuple<std::vector<int64_t>, at::Tensor, at::Tensor> plan_finish(
    const at::Tensor& trees, const at::Tensor& items, const at::Tensor& leaves,
    const at::Tensor& frags, const std::string& algorithm);

}  // namespace sentry
