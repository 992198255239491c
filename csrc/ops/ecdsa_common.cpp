#include "ecdsa_common.h"
#include "hash_common.h"  // shape_of

namespace sentry {
namespace {

void check_rows(const at::Tensor& t, const char* name, int64_t width, const char* what,
                const char* op) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " is undefined (None)");
  TORCH_CHECK_VALUE(t.layout() == at::kStrided, op, ": ", name, " has layout ", t.layout(),
                    "; expected a dense (strided) tensor");
  TORCH_CHECK_VALUE(!t.is_meta(), op, ": ", name, " is on the meta device and has no data");
  TORCH_CHECK_VALUE(t.device().is_cpu() || t.device().is_cuda(), op, ": ", name, " is on ",
                    t.device(), "; ecdsa_p256_verify runs on CPU and CUDA tensors");
  TORCH_CHECK_VALUE(t.scalar_type() == at::kByte, op, ": ", name, " must be uint8, got ",
                    t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(1) == width, op, ": ", name, " must have shape [N, ",
                    std::to_string(width), "] (", what, "), got ", shape_of(t));
}

}  // namespace

EcdsaInputs prepare_ecdsa_inputs(const at::Tensor& public_keys, const at::Tensor& digests,
                                 const at::Tensor& signatures, const char* op) {
  check_rows(public_keys, "public_keys", kEcdsaKeyBytes, "x || y, big-endian", op);
  check_rows(digests, "digests", kEcdsaDigestBytes, "SHA-256 digests", op);
  check_rows(signatures, "signatures", kEcdsaSignatureBytes, "r || s, big-endian", op);
  const int64_t n = public_keys.size(0);
  TORCH_CHECK_VALUE(digests.size(0) == n, op, ": digests has ",
                    std::to_string(digests.size(0)), " rows but public_keys has ",
                    std::to_string(n));
  TORCH_CHECK_VALUE(signatures.size(0) == n, op, ": signatures has ",
                    std::to_string(signatures.size(0)), " rows but public_keys has ",
                    std::to_string(n));
  TORCH_CHECK_VALUE(digests.device() == public_keys.device(), op, ": digests is on ",
                    digests.device(), " but public_keys is on ", public_keys.device());
  TORCH_CHECK_VALUE(signatures.device() == public_keys.device(), op, ": signatures is on ",
                    signatures.device(), " but public_keys is on ", public_keys.device());
  return {public_keys.contiguous(), digests.contiguous(), signatures.contiguous(), n};
}

}  // namespace sentry
