// Reading untrusted files: positional reads (pread) into bounded buffers, never a memory map,
// so a file that shrinks, grows or is replaced while it is read is a ReadError naming it, not a
// SIGBUS. Torch-free.
//
// read_files() reads each file's bytes [0, size) once, in blocks, with a pool of threads, and
// hands every block to a BlockConsumer twice: on_block() on the reading thread, blocks of one
// file in any order and several at once (tree hashes, copies to a device), then
// on_block_in_order() one at a time per file in file order (SHA-256 of the whole file). The
// block's buffer is reused only after both. Several files are read at once, so their in-order
// consumers run in parallel too. Blocks go into staging buffers (the caller's, e.g. pinned
// memory, or the reader's own) or straight into a destination per file.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace sentry {
namespace io {

// A file that is not what it was (it changed while it was read), cannot be read, or is not a
// regular file. The message names the file.
class ReadError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An input file, open for reading, with the size fstat gave when it was opened.
class InputFile {
 public:
  // Opens without blocking (O_NONBLOCK: a FIFO never hangs the open) and refuses anything but a
  // regular file, checked on the opened descriptor.
  static InputFile open(const std::string& path);
  // Takes a duplicate of an already open descriptor (the caller keeps and closes its own);
  // `name` names the file in errors. Refused unless it is a regular file.
  static InputFile adopt(int fd, const std::string& name);

  // Bytes [start, start + length) of this file, read as a file of their own (offsets relative
  // to start; size() is length), sharing the descriptor: e.g. the shards of a file, each hashed
  // on its own. check_unchanged() still checks the whole file. std::invalid_argument unless the
  // range lies inside the file.
  InputFile window(uint64_t start, uint64_t length) const;
  // Where a window starts in its file (0 for a whole file) and the whole file's size.
  uint64_t start() const { return start_; }
  uint64_t file_size() const { return file_size_; }

  InputFile(InputFile&&) noexcept = default;
  InputFile& operator=(InputFile&&) noexcept = default;
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  const std::string& name() const { return name_; }
  uint64_t size() const { return size_; }

  // Exactly n bytes at `offset` (pread, retried on EINTR and short reads). ReadError when the
  // file ends first (it shrank) or the read fails.
  void read_exact(uint64_t offset, uint8_t* out, size_t n) const;
  // ReadError unless the whole file still has exactly file_size() bytes: fstat, and nothing to
  // read at file_size() (a file that grew is caught even where fstat lags).
  void check_unchanged() const;

 private:
  struct Descriptor;  // closes the file when the last InputFile of it goes
  InputFile() = default;
  InputFile(int fd, std::string name);
  std::shared_ptr<const Descriptor> fd_;
  std::string name_;
  uint64_t start_ = 0, size_ = 0, file_size_ = 0;
};

// One block of a file as read: bytes [offset, offset + size) of files[file].
struct Block {
  size_t file;
  uint64_t index;  // offset / block_size
  uint64_t offset;
  const uint8_t* data;
  size_t size;
};

class BlockConsumer {
 public:
  virtual ~BlockConsumer() = default;
  // On the thread that read the block; blocks of one file in any order, several at once.
  virtual void on_block(const Block&) {}
  // Whether on_block_in_order is wanted (a consumer without one lets buffers go sooner).
  virtual bool wants_in_order() const { return false; }
  // Each file's blocks in order, one at a time per file (any thread), after on_block.
  virtual void on_block_in_order(const Block&) {}
  // Once per file, after every block of it went through both, and the file was checked
  // unchanged.
  virtual void on_file_done(size_t) {}
};

struct ReadOptions {
  size_t threads = 0;             // 0: one per CPU
  size_t block_size = 4u << 20;   // a power of two, at least 64 KiB
  // Staging buffers of block_size bytes (e.g. pinned memory), at least one per thread; empty:
  // the reader allocates two per thread.
  std::vector<uint8_t*> staging;
  // Or, one destination of files[i].size() bytes per file: blocks are read in place.
  std::vector<uint8_t*> destinations;
};

// Reads every file once through `consumer`. The first error (a ReadError, or anything the
// consumer throws) stops all threads and is rethrown here.
void read_files(const std::vector<InputFile>& files, BlockConsumer& consumer,
                const ReadOptions& options = {});

}  // namespace io
}  // namespace sentry
