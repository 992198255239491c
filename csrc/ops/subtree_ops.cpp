// Schemas of the sharded-hashing operators (docs/DISTRIBUTED.md) and their shared checks.
// Kernels: cpu/subtree_cpu.cpp, cuda/subtree_cuda.cu; fake kernels: sentry_ops/_meta.py.
//
//   hash_subtrees(tensors, start_bytes, total_bytes, algorithm) -> uint8 [K, 32]
//     tensor i is bytes [start_bytes[i], start_bytes[i] + its size) of an input of
//     total_bytes[i] bytes; the rows are the values of the pieces (core/subtree.h) of every
//     tensor in turn, each in the byte order of a digest, un-finalised.
//   finish_subtrees(values, first_leaves, total_bytes, algorithm) -> uint8 [32]
//     the digest of the whole input from the values of pieces that tile its leaves in order.
//   hash_runs(sources, plan, header, message_bytes, algorithm) -> (uint8 [message_bytes], int32 [1])
//     one rank's message for a run plan (run_plan.h): the values of the pieces of its runs,
//     then the edge bytes, then zeros; and a status (0: every plan entry was in bounds).
//   finish_runs(gathered, plan, header, algorithm) -> (uint8 [Q, 32], int32 [1])
//     the outputs of a finish plan (roots, then segments) from all ranks' gathered messages.
#include <torch/library.h>

#include "subtree_common.h"

TORCH_LIBRARY_FRAGMENT(sentry, m) {
  m.def(
      "hash_subtrees(Tensor[] tensors, int[] start_bytes, int[] total_bytes, "
      "str algorithm=\"blake3\") -> Tensor");
  m.def(
      "finish_subtrees(Tensor values, int[] first_leaves, int total_bytes, "
      "str algorithm=\"blake3\") -> Tensor");
  m.def(
      "hash_runs(Tensor[] sources, Tensor plan, int[] header, int message_bytes, "
      "str algorithm=\"blake3\") -> (Tensor, Tensor)");
  m.def(
      "finish_runs(Tensor gathered, Tensor plan, int[] header, str algorithm=\"blake3\") "
      "-> (Tensor, Tensor)");
}

namespace sentry {

std::vector<at::Tensor> prepare_subtree_inputs(at::TensorList tensors, at::IntArrayRef start_bytes,
                                               at::IntArrayRef total_bytes, const char* op) {
  TORCH_CHECK_VALUE(start_bytes.size() == tensors.size() && total_bytes.size() == tensors.size(),
                    op, ": got ", std::to_string(tensors.size()), " tensors, ",
                    std::to_string(start_bytes.size()), " start_bytes and ",
                    std::to_string(total_bytes.size()), " total_bytes; give one of each "
                    "per tensor");
  std::vector<at::Tensor> inputs = prepare_hash_inputs(tensors, op);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const int64_t start = start_bytes[i], total = total_bytes[i];
    const uint64_t nbytes = byte_size(inputs[i]);
    TORCH_CHECK_VALUE(start >= 0 && total >= 0 && static_cast<uint64_t>(start) <= static_cast<uint64_t>(total) &&
                          nbytes <= static_cast<uint64_t>(total - start),
                      op, ": tensor ", std::to_string(i), " (", std::to_string(nbytes),
                      " bytes at byte ", std::to_string(start), ") does not fit in an input of ",
                      std::to_string(total), " bytes");
  }
  return inputs;
}

at::Tensor subtree_runs(const std::vector<at::Tensor>& inputs, at::IntArrayRef start_bytes,
                        at::IntArrayRef total_bytes) {
  at::Tensor runs = at::empty({static_cast<int64_t>(inputs.size()), kInCols}, at::kLong);
  int64_t* row = runs.data_ptr<int64_t>();
  for (size_t i = 0; i < inputs.size(); ++i, row += kInCols) {
    row[kInSource] = i;
    row[kInSourceOffset] = 0;
    row[kInStart] = start_bytes[i];
    row[kInLength] = byte_size(inputs[i]);
    row[kInTotal] = total_bytes[i];
    row[kInCap] = -1;
  }
  return runs;
}

namespace {

void check_plan_tensor(const at::Tensor& plan, const at::Device& device, const char* op) {
  TORCH_CHECK_VALUE(plan.scalar_type() == at::kLong && plan.dim() == 1, op,
                    ": plan must be a 1-D int64 tensor, got ", plan.scalar_type(), " ",
                    shape_of(plan));
  TORCH_CHECK_VALUE(plan.device() == device, op, ": plan is on ", plan.device(), " but the ",
                    "data is on ", device, "; move the plan there once");
}

void check_leaf_bytes(int64_t leaf_bytes, Algorithm algorithm, const char* op) {
  const int64_t want = algorithm == Algorithm::kBlake3 ? Blake3Tree::kLeafBytes
                                                       : Sha256Tree::kLeafBytes;
  TORCH_CHECK_VALUE(leaf_bytes == want, op, ": the plan was made for leaves of ",
                    std::to_string(leaf_bytes), " bytes, not this algorithm's");
}

}  // namespace

RunCall prepare_run_call(at::TensorList tensors, const at::Tensor& plan, at::IntArrayRef header,
                         int64_t message_bytes, c10::string_view algorithm, const char* op) {
  RunCall call;
  call.algorithm = parse_algorithm(algorithm, op);
  call.sources = prepare_hash_inputs(tensors, op);
  const at::Device device = tensors.empty() ? plan.device() : tensors[0].device();
  check_plan_tensor(plan, device, op);
  call.plan = plan.contiguous();
  call.view = run_plan_view(header, call.plan.const_data_ptr<int64_t>(), call.plan.numel(), op);
  check_leaf_bytes(call.view.leaf_bytes, call.algorithm, op);
  TORCH_CHECK_VALUE(message_bytes >= call.view.message_bytes, op, ": message_bytes ",
                    std::to_string(message_bytes), " is below the plan's ",
                    std::to_string(call.view.message_bytes));
  return call;
}

FinishCall prepare_finish_call(const at::Tensor& gathered, const at::Tensor& plan,
                               at::IntArrayRef header, c10::string_view algorithm,
                               const char* op) {
  FinishCall call;
  call.algorithm = parse_algorithm(algorithm, op);
  TORCH_CHECK_VALUE(gathered.scalar_type() == at::kByte && gathered.layout() == at::kStrided,
                    op, ": gathered must be a uint8 tensor, got ", gathered.scalar_type());
  check_plan_tensor(plan, gathered.device(), op);
  call.gathered = gathered.contiguous().view(-1);
  call.plan = plan.contiguous();
  call.view = finish_plan_view(header, call.plan.const_data_ptr<int64_t>(), call.plan.numel(),
                               op);
  check_leaf_bytes(call.view.leaf_bytes, call.algorithm, op);
  TORCH_CHECK_VALUE(call.gathered.numel() >= call.view.gathered_bytes, op, ": gathered has ",
                    std::to_string(call.gathered.numel()), " bytes, the plan reads ",
                    std::to_string(call.view.gathered_bytes));
  return call;
}

namespace {

// Calls no backend kernel takes: an empty list (a CPU [0, 32]), and tensors whose backend has
// no kernel of ours (the shared checks name them).
at::Tensor hash_subtrees_unsupported(at::TensorList tensors, at::IntArrayRef start_bytes,
                                     at::IntArrayRef total_bytes, c10::string_view algorithm) {
  const char* op = "sentry.hash_subtrees";
  parse_algorithm(algorithm, op);
  prepare_subtree_inputs(tensors, start_bytes, total_bytes, op);
  TORCH_CHECK(tensors.empty(), op, ": no kernel for tensors on ", tensors[0].device());
  return at::empty({0, 32}, at::kByte);
}

at::Tensor finish_subtrees_unsupported(const at::Tensor& values, at::IntArrayRef,
                                       int64_t, c10::string_view) {
  TORCH_CHECK_VALUE(false, "sentry.finish_subtrees: values are on ", values.device(),
                    "; the finish step runs on the CPU (move the [K, 32] values there)");
}

}  // namespace

TORCH_LIBRARY_IMPL(sentry, CompositeExplicitAutograd, m) {
  m.impl("hash_subtrees", &hash_subtrees_unsupported);
  m.impl("finish_subtrees", &finish_subtrees_unsupported);
}

TORCH_LIBRARY_IMPL(sentry, AutogradNestedTensor, m) {
  m.impl("hash_subtrees", &hash_subtrees_unsupported);
}

}  // namespace sentry
