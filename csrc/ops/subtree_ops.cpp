// Schemas of the sharded-hashing operators (docs/DISTRIBUTED.md) and their shared checks.
// Kernels: cpu/subtree_cpu.cpp, cuda/subtree_cuda.cu; fake kernels: sentry_ops/_meta.py.
//
//   hash_subtrees(tensors, start_bytes, total_bytes, algorithm) -> uint8 [K, 32]
//     tensor i is bytes [start_bytes[i], start_bytes[i] + its size) of an input of
//     total_bytes[i] bytes; the rows are the values of the pieces (core/subtree.h) of every
//     tensor in turn, each in the byte order of a digest, un-finalised.
//   finish_subtrees(values, first_leaves, total_bytes, algorithm) -> uint8 [32]
//     the digest of the whole input from the values of pieces that tile its leaves in order.
#include <torch/library.h>

#include "subtree_common.h"

TORCH_LIBRARY_FRAGMENT(sentry, m) {
  m.def(
      "hash_subtrees(Tensor[] tensors, int[] start_bytes, int[] total_bytes, "
      "str algorithm=\"blake3\") -> Tensor");
  m.def(
      "finish_subtrees(Tensor values, int[] first_leaves, int total_bytes, "
      "str algorithm=\"blake3\") -> Tensor");
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
