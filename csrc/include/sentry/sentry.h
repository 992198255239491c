// Sentry's C++ API for LibTorch programs.
//
// Link against the sentry_ops library (it registers the torch.ops.sentry operators) and call
// these; they dispatch to the CPU or CUDA kernel by the tensors' device, like any ATen op.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bundle.h"
#include "model_files.h"

namespace sentry {

// One 32-byte digest per tensor (uint8 [N, 32], on the tensors' device) of each tensor's
// logical bytes in row-major order. algorithm: "blake3" or "sha256-tree".
at::Tensor hash_tensors(at::TensorList tensors, const std::string& algorithm = "blake3");

// One 32-byte digest per row (index along dim 0) of x: uint8 [x.size(0), 32].
at::Tensor hash_rows(const at::Tensor& x, const std::string& algorithm = "blake3");

// Batched ECDSA P-256 verification: bool [N], true where signature i (r || s, big-endian,
// uint8 [N, 64]) is valid for SHA-256 digest i (uint8 [N, 32]) under public key i (x || y,
// big-endian, uint8 [N, 64]). A bad row (key off the curve or not reduced, r or s outside
// [1, n-1], wrong signature) is false, never an exception; wrong shapes, dtypes or devices
// throw. All three on one device (CPU: OpenSSL over the thread pool; CUDA: one thread per row).
at::Tensor ecdsa_p256_verify(const at::Tensor& public_keys, const at::Tensor& digests,
                             const at::Tensor& signatures);

// Lower-case hex of each 32-byte row of a digest tensor (copied to the host).
std::vector<std::string> to_hex(const at::Tensor& digests);

// A model's tensors by name (a state dict: parameters and persistent buffers).
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// What verify_model established.
struct VerifiedModel {
  std::string model_name;
  std::string method;     // the statement's serialization method: "tensors" or "files"
  std::string hash_type;  // the tensor digests' algorithm: "blake3" or "sha256-tree"
  std::vector<std::string> names;  // the verified tensors, sorted
  std::string key_hint;            // hex SHA-256 of the verifying key's PEM
  // Milliseconds: "launch GPU hash", "read bundle", "check signature", "parse statement",
  // "match names", "finish hash and compare".
  std::vector<std::pair<std::string, double>> timings_ms;
};

// Checks tensors against a signature bundle's predicate.tensors, on the tensors' devices:
// CUDA tensors start hashing (one hash_tensors call per device, on its current stream) before
// the bundle is read, its signature checked with `trust` and its statement parsed on the host;
// then names, dtypes and shapes are matched, the expected digests go to each device in one
// copy, and one flag per tensor comes back. Throws VerificationError naming the changed,
// missing and unexpected tensors (its lists hold them), or when the signature does not verify;
// FormatError for a malformed bundle or a tensor of a dtype safetensors cannot name.
// With a signature of a directory, the tensors must be every signed tensor of its safetensors
// files or, given `files` (paths as the signature names them), exactly those files' tensors; a
// name signed in two of the files concerned is a FormatError (expected_tensors, bundle.h).
VerifiedModel verify_model(const NamedTensors& tensors, const std::string& signature_path,
                           const Trust& trust,
                           const std::optional<std::vector<std::string>>& files = std::nullopt);
// The same over bundle bytes already read (`source` names them in messages).
VerifiedModel verify_model_data(const NamedTensors& tensors, std::string_view bundle_data,
                                const std::string& source, const Trust& trust,
                                const std::optional<std::vector<std::string>>& files = std::nullopt);

// The safetensors name of a dtype ("F32", "BF16", ...); empty when it has none.
std::string safetensors_dtype_name(at::ScalarType dtype);

// How load_verified loads; the defaults are sentry.load_verified's (Python), but the CPU.
struct LoadVerifiedOptions {
  at::Device device = at::kCPU;  // the CPU or a CUDA device (no index: the current one)
  // Converts floating-point tensors (not complex, not integers) after verification.
  std::optional<at::ScalarType> dtype;
  // Only these files (paths as the signature names them) are read, checked and loaded: two
  // files that hold tensors of the same name (checkpoints side by side) need it.
  std::optional<std::vector<std::string>> files;
  // Ignored besides the signature's own ignore_paths (as verify_files takes them).
  std::vector<std::string> ignore_paths;
  std::size_t threads = 0;                       // reading threads; 0: one per CPU
  std::size_t block_size = std::size_t(8) << 20;  // bytes per read, a power of two
  std::size_t pinned_bytes = std::size_t(512) << 20;  // pinned staging of a CUDA load
  // Told of a .safetensors file without signed tensors whose header cannot be read: its bytes
  // are checked as a plain file's, its tensors not loaded. Default: a line on stderr.
  std::function<void(const std::string&)> on_warning;
};

// The tensors of a signed model (a directory of safetensors files, or one file), sorted by
// name, on options.device, read once from disk and returned only when every byte matched the
// signature at signature_path, checked with `trust`. The files present must be the signed ones
// (the signature file and ignored paths aside) before a byte of data is read; with Sentry's
// tensor table each header must describe exactly the signed tensors and each tensor is hashed
// on its device as it lands; a plain OpenSSF Model Signing `files` or `shards` bundle has CPU
// threads hash the same bytes that go to the device. Other files (config, tokenizer) are
// checked, not returned. Throws VerificationError naming the files and tensors that differ
// (missing and unexpected files in its lists), MethodError for a signature of tensors in
// memory, FormatError for bad input (naming the file and tensor; a file that changes while it
// is read, tensors of one name in several files, a dtype torch cannot hold), FileError for a
// file that cannot be opened. Nothing is returned then, and the memory of the load is freed.
NamedTensors load_verified(const std::string& model_path, const std::string& signature_path,
                           const Trust& trust, const LoadVerifiedOptions& options = {});
// The same over bundle bytes already read from signature_path (a keyless bundle its caller
// verified: Trust::verified_keyless).
NamedTensors load_verified_data(const std::string& model_path, std::string_view bundle_data,
                                const std::string& signature_path, const Trust& trust,
                                const LoadVerifiedOptions& options = {});

}  // namespace sentry
