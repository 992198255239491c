// Internal to the loader (loader.cpp): how one load is laid out, and the interface of the
// device side of a CUDA load (loader_cuda.cu), which only a CUDA build has.
#pragma once
#include <memory>
#include <utility>
#include <vector>

#include "file_reader.h"
#include "loader.h"

namespace sentry {
namespace io {

struct LoadPlan {
  const std::vector<FileToLoad>& files;
  LoadOptions options;
  size_t threads = 1;
  // What the reader reads: windows of the files (one per signed range, or the whole file).
  std::vector<InputFile> spans;
  std::vector<size_t> span_file;       // the file of each span
  std::vector<int64_t> span_range;     // its index in the file's ranges, -1 for none
  // Per file: the bytes its tensors take, [load_begin, load_end) (empty without tensors).
  std::vector<uint64_t> load_begin, load_end;
  // The tensors with a signed digest, as (file, index in its tensors), in table order.
  std::vector<std::pair<size_t, size_t>> hashed;
};

// Where the blocks of a CUDA load go: copied from pinned staging buffers into device memory,
// each tensor with a signed digest hashed there once its last byte has landed.
class DeviceTarget {
 public:
  virtual ~DeviceTarget() = default;
  // The pinned buffers (options.block_size bytes each) the reader reads into.
  virtual std::vector<uint8_t*> staging() = 0;
  // A block of plan.spans[block.file], on a reading thread; returns once the block's buffer
  // may be reused.
  virtual void on_block(const Block& block) = 0;
  // After every block: the digests of plan.hashed, in order (waits for the device).
  virtual std::vector<Digest> finish() = 0;
  // Bytes [load_begin, load_end) of a file, on the device.
  virtual at::Tensor loaded(size_t file) = 0;
  // The loaded bytes are handed to the caller's current stream (after finish()).
  virtual void hand_over() = 0;
};

using DeviceTargetMaker = std::unique_ptr<DeviceTarget> (*)(const LoadPlan&);

// Called by loader_cuda.cu's static initialiser; a CPU-only build has no maker.
void register_cuda_target(DeviceTargetMaker maker);

}  // namespace io
}  // namespace sentry
