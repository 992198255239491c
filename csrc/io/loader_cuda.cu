// The device side of a CUDA load (load_plan.h): blocks read into pinned staging buffers are
// copied into the files' device buffers on a side stream, and every tensor with a signed digest
// is hashed on a second side stream once its last block has landed: one hash launch for the
// tensors a block completes, ordered after that block's copy by an event. Nothing here waits
// for the caller's stream, and the caller's thread waits only in finish(), for the digests.
//
// Device memory comes from the caching allocator, allocated on the copy stream and recorded on
// the caller's stream when handed over; pinned staging comes from the caching host allocator.
// A reading thread waits for its block's copy before its buffer is reused: that is what bounds
// the pinned memory.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>

#include "../include/sentry/sentry.h"
#include "load_plan.h"

namespace sentry {
namespace io {
namespace {

// A tensor's bytes in its file, and its index in plan.hashed (-1 when it has no digest).
struct Piece {
  uint64_t begin, end;
  int64_t hashed;
};

class ScopedEvent {
 public:
  ScopedEvent() {
    // Blocking sync: a waiting reader sleeps instead of spinning on a core other readers need.
    C10_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming | cudaEventBlockingSync));
  }
  ~ScopedEvent() { cudaEventDestroy(event_); }
  ScopedEvent(const ScopedEvent&) = delete;
  ScopedEvent& operator=(const ScopedEvent&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_;
};

// The loader's copy and hash streams on a device, the same for every load: device memory a
// load allocates on its copy stream is cached for that stream, so the next load reuses it
// (a new pool stream per load would leave each load's memory cached for a stream no later load
// allocates on).
std::pair<c10::cuda::CUDAStream, c10::cuda::CUDAStream> loader_streams(c10::DeviceIndex device) {
  static std::mutex mu;
  static std::map<c10::DeviceIndex, std::pair<c10::cuda::CUDAStream, c10::cuda::CUDAStream>> streams;
  const std::lock_guard<std::mutex> lock(mu);
  auto it = streams.find(device);
  if (it == streams.end())
    it = streams.emplace(device, std::make_pair(c10::cuda::getStreamFromPool(false, device),
                                                c10::cuda::getStreamFromPool(false, device))).first;
  return it->second;
}

class CudaTarget : public DeviceTarget {
 public:
  explicit CudaTarget(const LoadPlan& plan)
      : plan_(plan),
        device_(at::kCUDA, plan.options.device.has_index() ? plan.options.device.index()
                                                           : c10::cuda::current_device()),
        guard_(device_),
        copy_(loader_streams(device_.index()).first),
        hash_(loader_streams(device_.index()).second),
        algorithm_(plan.options.tensor_hash == TreeHash::kBlake3 ? "blake3" : "sha256-tree") {
    const size_t block = plan.options.block_size;
    const size_t buffers =
        std::max<size_t>(1, std::min(2 * plan.threads, plan.options.pinned_bytes / block));
    pinned_ = at::empty({static_cast<int64_t>(buffers * block)},
                        at::TensorOptions().dtype(at::kByte).pinned_memory(true));
    for (size_t i = 0; i < buffers; ++i) staging_.push_back(pinned_.data_ptr<uint8_t>() + i * block);

    const size_t files = plan.files.size();
    buffers_.resize(files);
    pieces_.resize(files);
    {
      // Allocated on the copy stream, whose copies are the first to use them.
      const c10::cuda::CUDAStreamGuard on_copy(copy_);
      for (size_t f = 0; f < files; ++f)
        if (!plan.files[f].tensors.empty())
          buffers_[f] = at::empty({static_cast<int64_t>(plan.load_end[f] - plan.load_begin[f])},
                                  at::TensorOptions().dtype(at::kByte).device(device_));
    }
    for (size_t k = 0; k < plan.hashed.size(); ++k) {
      const auto& [f, t] = plan.hashed[k];
      if (pieces_[f].empty()) {
        for (const TensorToLoad& tensor : plan.files[f].tensors)
          pieces_[f].push_back({tensor.offset, tensor.offset + tensor.length, -1});
      }
      pieces_[f][t].hashed = static_cast<int64_t>(k);
    }
    // Blocks still to land per hashed tensor: those of each span that overlap it.
    remaining_.reset(new std::atomic<int64_t>[plan.hashed.size()]);
    std::vector<int64_t> blocks(plan.hashed.size(), 0);
    for (size_t s = 0; s < plan.spans.size(); ++s) {
      const uint64_t start = plan.spans[s].start(), stop = start + plan.spans[s].size();
      for (const Piece& p : pieces_[plan.span_file[s]]) {
        const uint64_t lo = std::max(p.begin, start), hi = std::min(p.end, stop);
        if (p.hashed >= 0 && lo < hi) blocks[p.hashed] += (hi - 1 - start) / block - (lo - start) / block + 1;
      }
    }
    std::vector<size_t> empty;
    for (size_t k = 0; k < plan.hashed.size(); ++k) {
      remaining_[k].store(blocks[k]);
      if (blocks[k] == 0) empty.push_back(k);
    }
    if (!empty.empty()) hash(empty);
  }

  ~CudaTarget() override {
    if (handed_over_) return;
    // A failed load: copies and hashes may still read the buffers; wait before they go.
    cudaStreamSynchronize(copy_.stream());
    cudaStreamSynchronize(hash_.stream());
  }

  std::vector<uint8_t*> staging() override { return staging_; }

  void on_block(const Block& b) override {
    const c10::cuda::CUDAGuard guard(device_);
    const size_t f = plan_.span_file[b.file];
    const uint64_t begin = plan_.spans[b.file].start() + b.offset, end = begin + b.size;
    const uint64_t lo = std::max(begin, plan_.load_begin[f]), hi = std::min(end, plan_.load_end[f]);
    if (lo >= hi) return;  // a header, or a file without tensors: nothing goes to the device
    C10_CUDA_CHECK(cudaMemcpyAsync(buffers_[f].data_ptr<uint8_t>() + (lo - plan_.load_begin[f]),
                                   b.data + (lo - begin), hi - lo, cudaMemcpyHostToDevice,
                                   copy_.stream()));
    std::vector<size_t> completed;
    const std::vector<Piece>& pieces = pieces_[f];
    auto it = std::upper_bound(pieces.begin(), pieces.end(), begin,
                               [](uint64_t at, const Piece& p) { return at < p.end; });
    for (; it != pieces.end() && it->begin < end; ++it)
      if (it->hashed >= 0 && it->begin < it->end && remaining_[it->hashed].fetch_sub(1) == 1)
        completed.push_back(static_cast<size_t>(it->hashed));
    const ScopedEvent copied;
    C10_CUDA_CHECK(cudaEventRecord(copied.get(), copy_.stream()));
    if (!completed.empty()) {
      // Every block of these tensors was queued on the copy stream before this event.
      C10_CUDA_CHECK(cudaStreamWaitEvent(hash_.stream(), copied.get(), 0));
      hash(completed);
    }
    C10_CUDA_CHECK(cudaEventSynchronize(copied.get()));  // the staging buffer is free again
  }

  std::vector<Digest> finish() override {
    const c10::cuda::CUDAGuard guard(device_);
    std::vector<Digest> out(plan_.hashed.size());
    if (plan_.hashed.empty()) return out;
    if (order_.size() != plan_.hashed.size())
      throw std::logic_error("sentry loader: " + std::to_string(plan_.hashed.size() - order_.size()) +
                             " tensors were never hashed");
    const c10::cuda::CUDAStreamGuard on_hash(hash_);
    // The one wait of the caller's thread: for the hash stream, to read the digests back.
    const at::Tensor host = at::cat(batches_).to(at::kCPU);
    const uint8_t* rows = host.const_data_ptr<uint8_t>();
    for (size_t r = 0; r < order_.size(); ++r) std::copy_n(rows + 32 * r, 32, out[order_[r]].begin());
    return out;
  }

  at::Tensor loaded(size_t file) override { return buffers_[file]; }

  void hand_over() override {
    const c10::cuda::CUDAGuard guard(device_);
    const c10::cuda::CUDAStream caller = c10::cuda::getCurrentCUDAStream(device_.index());
    const ScopedEvent done;
    C10_CUDA_CHECK(cudaEventRecord(done.get(), copy_.stream()));
    C10_CUDA_CHECK(cudaStreamWaitEvent(caller.stream(), done.get(), 0));
    // Freed later by the caller, the memory must not be reused before the caller's stream is
    // done with it.
    for (const at::Tensor& b : buffers_)
      if (b.defined()) b.record_stream(caller);
    handed_over_ = true;
  }

 private:
  // Hashes tensors plan.hashed[k] for k in ks, in one launch on the hash stream.
  void hash(const std::vector<size_t>& ks) {
    const c10::cuda::CUDAStreamGuard on_hash(hash_);
    std::vector<at::Tensor> views;
    views.reserve(ks.size());
    for (size_t k : ks) {
      const auto& [f, t] = plan_.hashed[k];
      const TensorToLoad& tensor = plan_.files[f].tensors[t];
      views.push_back(buffers_[f].narrow(0, static_cast<int64_t>(tensor.offset - plan_.load_begin[f]),
                                         static_cast<int64_t>(tensor.length)));
    }
    at::Tensor digests = sentry::hash_tensors(views, algorithm_);
    const std::lock_guard<std::mutex> lock(mu_);
    batches_.push_back(std::move(digests));
    order_.insert(order_.end(), ks.begin(), ks.end());
  }

  const LoadPlan& plan_;
  const at::Device device_;
  const c10::cuda::CUDAGuard guard_;
  const c10::cuda::CUDAStream copy_, hash_;
  const std::string algorithm_;
  at::Tensor pinned_;
  std::vector<uint8_t*> staging_;
  std::vector<at::Tensor> buffers_;
  std::vector<std::vector<Piece>> pieces_;  // per file, by offset
  std::unique_ptr<std::atomic<int64_t>[]> remaining_;
  std::mutex mu_;
  std::vector<at::Tensor> batches_;  // digests of each hash launch
  std::vector<size_t> order_;        // the plan.hashed index of each digest row, in launch order
  bool handed_over_ = false;
};

std::unique_ptr<DeviceTarget> make_cuda_target(const LoadPlan& plan) {
  return std::make_unique<CudaTarget>(plan);
}

[[maybe_unused]] const bool registered = (register_cuda_target(&make_cuda_target), true);

}  // namespace
}  // namespace io
}  // namespace sentry
