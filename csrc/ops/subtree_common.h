// Glue shared by the CPU and CUDA kernels of hash_subtrees, hash_runs and finish_runs: argument
// checks, and the run table that turns a hash_subtrees call into a run plan (run_plan.h).
#pragma once
#include <ATen/ATen.h>

#include <vector>

#include "../core/subtree.h"
#include "hash_common.h"
#include "run_plan.h"

namespace sentry {

// Validates hash_subtrees' arguments (each message names the tensor by index) and returns the
// tensors with a contiguous layout on their common device.
std::vector<at::Tensor> prepare_subtree_inputs(at::TensorList tensors, at::IntArrayRef start_bytes,
                                               at::IntArrayRef total_bytes, const char* op);

// plan_runs' input for hash_subtrees: tensor i is one run, bytes [start_bytes[i], + its size)
// of an input of total_bytes[i] bytes, read from its offset 0, pieces of any size.
at::Tensor subtree_runs(const std::vector<at::Tensor>& inputs, at::IntArrayRef start_bytes,
                        at::IntArrayRef total_bytes);

// A checked hash_runs call: its sources (contiguous, on the plan's device) and its plan.
struct RunCall {
  Algorithm algorithm;
  std::vector<at::Tensor> sources;
  at::Tensor plan;
  RunPlanView view;
};
RunCall prepare_run_call(at::TensorList tensors, const at::Tensor& plan, at::IntArrayRef header,
                         int64_t message_bytes, c10::string_view algorithm, const char* op);

struct FinishCall {
  Algorithm algorithm;
  at::Tensor gathered;  // contiguous uint8, flat
  at::Tensor plan;
  FinishPlanView view;
};
FinishCall prepare_finish_call(const at::Tensor& gathered, const at::Tensor& plan,
                               at::IntArrayRef header, c10::string_view algorithm, const char* op);

}  // namespace sentry
