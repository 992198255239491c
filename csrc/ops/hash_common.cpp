#include "hash_common.h"

namespace sentry {

Algorithm parse_algorithm(c10::string_view name, const char* op) {
  if (name == "blake3") return Algorithm::kBlake3;
  if (name == "sha256-tree") return Algorithm::kSha256Tree;
  TORCH_CHECK_VALUE(false, op, ": unknown algorithm '", std::string(name),
                    "'; tensor digests are 'blake3' or 'sha256-tree'");
}

namespace {

void check_hashable(const at::Tensor& t, const std::string& what, const char* op) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", what, " is undefined (None)");
  TORCH_CHECK_VALUE(!t.is_nested(), op, ": ", what,
                    " is a nested tensor; it has no single byte string to hash");
  TORCH_CHECK_VALUE(t.layout() == at::kStrided, op, ": ", what, " has layout ", t.layout(),
                    "; only strided (dense) tensors have a byte string to hash");
  TORCH_CHECK_VALUE(!t.is_quantized(), op, ": ", what, " is quantized (", t.scalar_type(),
                    "); hash its int_repr() instead");
  TORCH_CHECK_VALUE(!t.is_meta(), op, ": ", what, " is on the meta device and has no data");
  TORCH_CHECK_VALUE(t.device().is_cpu() || t.device().is_cuda(), op, ": ", what, " is on ",
                    t.device(), "; sentry hashes CPU and CUDA tensors");
}

}  // namespace

std::vector<at::Tensor> prepare_hash_inputs(at::TensorList tensors, const char* op) {
  std::vector<at::Tensor> out;
  out.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    const std::string what = "tensor " + std::to_string(i);
    check_hashable(t, what, op);
    TORCH_CHECK_VALUE(t.device() == tensors[0].device(), op, ": ", what, " is on ", t.device(),
                      " but tensor 0 is on ", tensors[0].device(),
                      "; hash tensors of one device per call");
    out.push_back(t.is_contiguous() ? t : t.contiguous());
  }
  return out;
}

at::Tensor prepare_rows_input(const at::Tensor& x, const char* op, int64_t* row_stride) {
  check_hashable(x, "input", op);
  TORCH_CHECK_VALUE(x.dim() >= 1, op, ": input must have at least one dimension (rows), got a ",
                    "0-dim tensor");
  // A row is contiguous when dims 1.. are; the rows themselves may sit at any stride.
  at::Tensor rows = x;
  if (x.size(0) > 0 && !x.select(0, 0).is_contiguous()) rows = x.contiguous();
  const int64_t row_bytes = rows.numel() == 0 ? 0 : byte_size(rows.select(0, 0));
  *row_stride = rows.size(0) > 1 ? rows.stride(0) * rows.element_size() : row_bytes;
  return rows;
}

}  // namespace sentry
