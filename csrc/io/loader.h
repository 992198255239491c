// Verified loading of signed safetensors models: each file is read once with positional reads
// (file_reader.h), its tensors' bytes go to their device, and every byte is checked against a
// signed digest on the way, before any tensor is handed out (docs/LOADING.md).
//
// What is checked comes from a verified signature, as plain tables (the caller turns the
// statement into them): per file, either signed digests of byte ranges that tile it (a
// `files` resource: the whole file; a `shards` resource: one range per shard), computed by
// CPU threads over the bytes as they pass, or signed digests of its tensors (Sentry's
// predicate.tensors), computed on the tensors' device as they land, plus the header bytes the
// caller already checked against the signed tensor table.
#pragma once
#include <ATen/ATen.h>

#include <stdint.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "file_digests.h"

namespace sentry {
namespace io {

// A tensor stored in a file: bytes [offset, offset + length) of it.
struct TensorToLoad {
  std::string name;
  std::string dtype;  // safetensors name: F32, BF16, I64, ...
  std::vector<int64_t> shape;
  uint64_t offset = 0, length = 0;
  bool has_digest = false;  // a signed digest of its bytes (LoadOptions::tensor_hash)
  Digest digest{};
};

// A signed digest of bytes [start, end) of a file: the whole file, or one of its shards.
struct SignedRange {
  uint64_t start = 0, end = 0;
  FileHash hash = FileHash::kSha256;
  Digest digest{};
};

struct FileToLoad {
  std::string path;  // where it is read
  std::string name;  // what the signature calls it (errors name it)
  // The file must start with these bytes (its header, checked by the caller against the signed
  // tensor table) and have expected_size bytes (-1: any): a file rewritten since the header was
  // read is a ReadError.
  std::string prefix;
  int64_t expected_size = -1;
  // Signed ranges that tile the file, in order; or none, when every byte after the prefix is a
  // tensor with a signed digest. Anything else leaves bytes unchecked and is refused.
  std::vector<SignedRange> ranges;
  std::vector<TensorToLoad> tensors;  // ascending offsets, not overlapping
};

struct LoadOptions {
  at::Device device = at::kCPU;
  TreeHash tensor_hash = TreeHash::kBlake3;
  size_t threads = 0;                  // reading threads; 0: one per CPU
  size_t block_size = size_t(8) << 20; // bytes per read (a power of two, at least 64 KiB)
  // Pinned host memory for a CUDA load's staging buffers (at least one block per thread; the
  // thread count is lowered to fit). A CPU load reads straight into its tensors instead.
  size_t pinned_bytes = size_t(512) << 20;
};

// The signed digests that did not match: files (a shard as "name:start:end") and tensors (as
// (file, tensor)). Nothing was returned; every buffer of the load has been freed.
class LoadMismatch : public std::runtime_error {
 public:
  LoadMismatch(std::vector<std::string> files,
               std::vector<std::pair<std::string, std::string>> tensors);
  std::vector<std::string> files;
  std::vector<std::pair<std::string, std::string>> tensors;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Reads every file once and returns its tensors (in the order given) on options.device, only
// when every signed digest matched. LoadMismatch when one did not; ReadError when a file
// cannot be read, is not a regular file, or changes while it is read; std::invalid_argument
// for a table that leaves bytes unchecked or describes impossible tensors.
NamedTensors load_files(const std::vector<FileToLoad>& files, const LoadOptions& options);

// The torch dtype of a safetensors dtype name; std::invalid_argument for one without a torch
// dtype of whole bytes (F4, F6_*) or an unknown name.
at::ScalarType scalar_type_of(const std::string& dtype);

}  // namespace io
}  // namespace sentry
