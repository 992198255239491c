// A model directory's files as OpenSSF Model Signing sees them, and the strict reader of
// safetensors headers: the two checks a verified load makes before it reads a byte of data.
// Torch-free (link the sentry_ops library, or sentry_bundle). Sentry's Python
// sentry.model_files.list_files and sentry.safetensors_format.read_header are shells over these.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bundle.h"

namespace sentry {

// Input refused, naming the options that would allow it (a symbolic link: allow_symlinks).
// `parts` is the message in pieces, the options marked (MethodError's), so that each interface
// spells them its own way; what() spells them as `python` (or the keyword).
class OptionError : public FormatError {
 public:
  struct Part {
    std::string text;
    bool option = false;  // text is an option's Python keyword
    std::string python;   // how the Python API writes it here (empty: the keyword)
  };
  explicit OptionError(std::vector<Part> parts) : FormatError(join(parts)), parts(std::move(parts)) {}
  std::vector<Part> parts;

 private:
  static std::string join(const std::vector<Part>& parts) {
    std::string out;
    for (const Part& p : parts) out += p.option && !p.python.empty() ? p.python : p.text;
    return out;
  }
};

// ---------------------------------------------------------------------------------------------
// Model directories (the reference tool's rules, model_signing 1.1.1; docs/FORMAT.md §7):
// every regular file at any depth is a resource named by its POSIX path relative to the
// directory; ignored paths match whole components; the git paths are ignored at the top only;
// symbolic links anywhere are refused unless allowed (then a link to a file is that file under
// the link's name, a link to a directory is not followed, a broken link is refused); sockets,
// FIFOs and devices are refused; the signature file inside the directory is ignored; a model
// that is one file is the single resource ".".

// Ignored at the top of the model directory unless ignore_git_paths is false.
inline const std::vector<std::string>& git_paths() {
  static const std::vector<std::string> kPaths = {".git", ".gitattributes", ".github",
                                                  ".gitignore"};
  return kPaths;
}

struct ListOptions {
  std::vector<std::string> ignore_paths;  // relative to the model directory, or absolute
  std::optional<std::string> signature_path;  // absolute or relative to the current directory
  bool ignore_git_paths = true;
  bool allow_symlinks = false;
};

// The ignored paths relative to the model directory, sorted, without duplicates: what
// list_model_files skips and what a statement's serialization.ignore_paths records. Entries
// outside the directory are dropped; "" or the directory itself is a FormatError.
std::vector<std::string> effective_ignore_paths(const std::string& model_dir,
                                                const ListOptions& options);

// The model's files, relative POSIX paths, sorted by code point. FormatError names a refused
// path (OptionError for a symbolic link); FileError when the model cannot be read.
std::vector<std::string> list_model_files(const std::string& model_dir,
                                          const ListOptions& options = {});

// Where resource `rel` lies on disk ("." is the model itself, a single file).
std::string model_file_path(const std::string& model_dir, const std::string& rel);

// The model's files a signature signs, in listing order, after checking that the listing
// (list_model_files with `options`, the signature file ignored) holds exactly `signed_names`
// (the statement's resources, or the files its shards cut; any order, repeats allowed).
// Otherwise VerificationError "MODEL: the files do not match SIGNATURE" with the missing files
// (sorted) and the unexpected ones (in listing order). With `shards` (the reference's shards
// method) an empty file is not unexpected: the reference cuts it into no shards.
std::vector<std::string> check_model_files(const std::string& model_dir,
                                           const std::string& signature_path,
                                           const std::vector<std::string>& signed_names,
                                           bool shards, ListOptions options);

// ---------------------------------------------------------------------------------------------
// safetensors headers: an unsigned 64-bit little-endian length N, N bytes of JSON, then the
// data region, which the tensors must tile exactly (no overlap, no hole, nothing after the last
// tensor). Stricter than the safetensors package: duplicate keys, unknown fields in a tensor's
// entry and empty names are refused. Every problem is a FormatError naming the file and tensor.

// The safetensors package's limit on the header length.
inline constexpr std::uint64_t kMaxSafetensorsHeader = 100'000'000;

struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // safetensors name: F32, BF16, ...
  std::vector<std::int64_t> shape;
  std::uint64_t offset = 0;  // absolute in the file (relative to the data region from parse_)
  std::uint64_t length = 0;
};

struct SafetensorsHeader {
  std::string path;
  std::vector<SafetensorsEntry> entries;  // by offset, then length, then name
  std::vector<std::pair<std::string, std::string>> metadata;  // as listed
  std::uint64_t data_start = 0;  // 8 + N
  std::uint64_t file_size = 0;
  std::string prefix;  // the file's first data_start bytes: a reader checks it still has them
};

// Validates the JSON header of a file whose data region has `data_size` bytes; offsets of the
// entries are relative to the data region. `source` names the file in messages.
SafetensorsHeader parse_safetensors_header(std::string_view json, std::uint64_t data_size,
                                           const std::string& source);

// Reads and validates a file's header (not its data), opened without blocking (a FIFO is a
// FormatError; a missing file a FileError).
SafetensorsHeader read_safetensors_header(const std::string& path);
// The same through `fd`, a descriptor open on `path` (not closed here).
SafetensorsHeader read_safetensors_header_fd(int fd, const std::string& path);

// Bytes of a tensor of this dtype and shape; FormatError for an unknown dtype, a negative
// dimension, sub-byte elements that do not end on a byte, or more than 2^64 - 1 bytes.
std::uint64_t safetensors_byte_length(std::string_view dtype, const std::vector<std::int64_t>& shape);

}  // namespace sentry
