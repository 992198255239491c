// Digests of untrusted files from one read of their bytes (file_reader.h): the whole file's
// digest (SHA-256, BLAKE3 or sha256-tree) and the tree digests of byte ranges of it (a
// safetensors file's tensors) are computed from the same buffers as they pass, so they always
// describe the same bytes. Torch-free.
#pragma once
#include <stdint.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "file_reader.h"

namespace sentry {
namespace io {

enum class FileHash { kNone, kSha256, kBlake3, kSha256Tree };
enum class TreeHash { kBlake3, kSha256Tree };

// "sha256", "blake3", "sha256-tree" ("" for none); std::invalid_argument otherwise.
FileHash parse_file_hash(const std::string& name);
TreeHash parse_tree_hash(const std::string& name);

struct ByteRange {
  uint64_t offset, length;
};

struct DigestRequest {
  FileHash file_hash = FileHash::kNone;
  // The file must start with these bytes (e.g. a safetensors header parsed before): a file
  // rewritten since then is a ReadError, so the ranges' meaning and the bytes hashed agree.
  std::string prefix;
  // Expected size (e.g. what the header was parsed against); -1: whatever the file has.
  int64_t expected_size = -1;
  // Ranges inside the file, in ascending order, not overlapping (std::invalid_argument
  // otherwise); each gets its own digest.
  std::vector<ByteRange> ranges;
  TreeHash range_hash = TreeHash::kBlake3;
};

using Digest = std::array<uint8_t, 32>;

struct FileDigests {
  Digest file{};  // zeros for FileHash::kNone
  std::vector<Digest> ranges;
};

// A BlockConsumer computing the requested digests; on_file_done finishes a file's digests.
// Its blocks may also go to another consumer (e.g. a copy to a device) through a caller's own
// consumer that forwards to this one.
class FileDigester : public BlockConsumer {
 public:
  FileDigester(const std::vector<InputFile>& files, const std::vector<DigestRequest>& requests);
  ~FileDigester() override;

  void on_block(const Block& block) override;
  bool wants_in_order() const override;
  void on_block_in_order(const Block& block) override;
  void on_file_done(size_t file) override;

  // The digests of each file, once read_files() has returned.
  std::vector<FileDigests> results() const;

 private:
  struct State;
  const std::vector<InputFile>& files_;
  std::vector<std::unique_ptr<State>> states_;
  bool in_order_ = false;
};

// Reads the files once and returns their digests (ReadError naming a file that changed, or
// that does not match its expected size or prefix).
std::vector<FileDigests> digest_files(const std::vector<InputFile>& files,
                                      const std::vector<DigestRequest>& requests,
                                      const ReadOptions& options = {});

}  // namespace io
}  // namespace sentry
