#include "file_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

namespace sentry {
namespace io {
namespace {

std::string errno_text(int err) { return std::string(strerror(err)); }

uint64_t checked_regular_size(int fd, const std::string& name) {
  struct stat st;
  if (fstat(fd, &st) != 0) throw ReadError(name + ": " + errno_text(errno));
  if (!S_ISREG(st.st_mode)) throw ReadError(name + ": not a regular file");
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace

struct InputFile::Descriptor {
  int fd;
  explicit Descriptor(int f) : fd(f) {}
  ~Descriptor() { ::close(fd); }
};

InputFile::InputFile(int fd, std::string name) : name_(std::move(name)) {
  fd_ = std::make_shared<const Descriptor>(fd);  // closes fd if what follows throws
  size_ = file_size_ = checked_regular_size(fd, name_);
}

InputFile InputFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw ReadError(path + ": " + errno_text(errno));
  return InputFile(fd, path);
}

InputFile InputFile::adopt(int fd, const std::string& name) {
  const int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) throw ReadError(name + ": " + errno_text(errno));
  return InputFile(own, name);
}

InputFile InputFile::window(uint64_t start, uint64_t length) const {
  if (start > size_ || length > size_ - start)
    throw std::invalid_argument(name_ + ": bytes [" + std::to_string(start) + ", +" +
                                std::to_string(length) + ") lie past the end of the file (" +
                                std::to_string(size_) + " bytes)");
  InputFile w;
  w.fd_ = fd_;
  w.name_ = name_;
  w.file_size_ = file_size_;
  w.start_ = start_ + start;
  w.size_ = length;
  return w;
}

void InputFile::read_exact(uint64_t offset, uint8_t* out, size_t n) const {
  size_t done = 0;
  while (done < n) {
    const ssize_t got =
        ::pread(fd_->fd, out + done, n - done, static_cast<off_t>(start_ + offset + done));
    if (got > 0) {
      done += static_cast<size_t>(got);
    } else if (got == 0) {
      throw ReadError(name_ + ": the file changed while it was read: it ended at byte " +
                      std::to_string(start_ + offset + done) + " but had " +
                      std::to_string(file_size_) +
                      " bytes when it was opened");
    } else if (errno != EINTR) {
      throw ReadError(name_ + ": read failed at byte " + std::to_string(start_ + offset + done) +
                      ": " +
                      errno_text(errno));
    }
  }
}

void InputFile::check_unchanged() const {
  const uint64_t now = checked_regular_size(fd_->fd, name_);
  uint8_t extra;
  ssize_t got;
  do {
    got = ::pread(fd_->fd, &extra, 1, static_cast<off_t>(file_size_));
  } while (got < 0 && errno == EINTR);
  if (now != file_size_ || got > 0)
    throw ReadError(name_ + ": the file changed while it was read: it had " +
                    std::to_string(file_size_) + " bytes when it was opened, " +
                    (got > 0 && now == file_size_ ? std::string("more") : std::to_string(now)) +
                    " bytes after");
}

namespace {

struct Slot {
  Block block;
  size_t owner;  // the worker whose staging buffer holds it (unused in place)
};

struct Progress {
  uint64_t blocks = 0, assigned = 0, outstanding = 0, released = 0, next_in_order = 0;
  bool in_order_running = false, done = false;
  std::map<uint64_t, Slot> waiting;  // read, waiting for their turn in order
};

class Reader {
 public:
  Reader(const std::vector<InputFile>& files, BlockConsumer& consumer, const ReadOptions& o)
      : files_(files), consumer_(consumer), block_(o.block_size),
        in_order_(consumer.wants_in_order()), progress_(files.size()),
        destinations_(o.destinations) {
    if (block_ < (64u << 10) || (block_ & (block_ - 1)) != 0)
      throw std::invalid_argument("block_size must be a power of two of at least 64 KiB, got " +
                                  std::to_string(block_));
    if (!destinations_.empty() && destinations_.size() != files.size())
      throw std::invalid_argument("one destination per file: " +
                                  std::to_string(destinations_.size()) + " for " +
                                  std::to_string(files.size()) + " files");
    uint64_t total_blocks = 0;
    for (size_t f = 0; f < files.size(); ++f) {
      progress_[f].blocks = std::max<uint64_t>(1, (files[f].size() + block_ - 1) / block_);
      total_blocks += progress_[f].blocks;
    }
    size_t threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
    if (destinations_.empty() && !o.staging.empty()) threads = std::min(threads, o.staging.size());
    threads_ = static_cast<size_t>(std::max<uint64_t>(1, std::min<uint64_t>(threads, total_blocks)));
    free_.resize(threads_);
    if (destinations_.empty()) {
      if (o.staging.empty()) {
        own_.resize(2 * threads_);
        for (size_t i = 0; i < own_.size(); ++i) {
          own_[i].reset(new uint8_t[block_]);
          free_[i % threads_].push_back(own_[i].get());
        }
      } else {
        for (size_t i = 0; i < o.staging.size(); ++i)
          free_[i % threads_].push_back(o.staging[i]);
      }
    }
  }

  void run() {
    if (files_.empty()) return;
    std::vector<std::thread> workers;
    for (size_t w = 1; w < threads_; ++w) workers.emplace_back([this, w] { work(w); });
    work(0);
    for (auto& t : workers) t.join();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  bool in_place() const { return !destinations_.empty(); }

  bool has_buffer(size_t w) const { return in_place() || !free_[w].empty(); }

  bool unassigned_left() const { return next_file_ < files_.size() || !active_.empty(); }

  // A file to read the next block of: a new one while fewer than one per thread are in
  // progress (so several files' in-order consumers run at once), else the started file with
  // the fewest blocks outstanding.
  size_t pick() {
    if (next_file_ < files_.size() && (active_.size() < threads_ || active_.empty())) {
      active_.push_back(next_file_++);
      return active_.size() - 1;
    }
    size_t best = 0;
    for (size_t i = 1; i < active_.size(); ++i)
      if (progress_[active_[i]].outstanding < progress_[active_[best]].outstanding) best = i;
    return best;
  }

  void work(size_t w) {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      wake_.wait(lock, [&] { return error_ || !unassigned_left() || has_buffer(w); });
      if (error_ || !unassigned_left()) return;
      const size_t at = pick();
      const size_t f = active_[at];
      Progress& p = progress_[f];
      const uint64_t b = p.assigned++;
      ++p.outstanding;
      if (p.assigned == p.blocks) active_.erase(active_.begin() + static_cast<long>(at));
      uint8_t* buffer;
      if (in_place()) {
        buffer = destinations_[f] + b * block_;
      } else {
        buffer = free_[w].back();
        free_[w].pop_back();
      }
      const uint64_t offset = b * block_;
      const size_t size = static_cast<size_t>(std::min<uint64_t>(block_, files_[f].size() - offset));
      Slot slot{Block{f, b, offset, buffer, size}, w};
      const bool read = unlocked(lock, [&] {
        files_[f].read_exact(offset, buffer, size);
        consumer_.on_block(slot.block);
      });
      if (!read) return;
      if (in_order_) {
        p.waiting.emplace(b, slot);
        run_in_order(f, lock);
      } else {
        release(slot);
      }
      finish_file_if_done(f, lock);
      wake_.notify_all();
    }
  }

  // Runs the in-order consumer over the file's waiting blocks that are next in line, unless
  // another thread already does.
  void run_in_order(size_t f, std::unique_lock<std::mutex>& lock) {
    Progress& p = progress_[f];
    if (p.in_order_running) return;
    p.in_order_running = true;
    while (!error_ && !p.waiting.empty() && p.waiting.begin()->first == p.next_in_order) {
      const Slot slot = p.waiting.begin()->second;
      p.waiting.erase(p.waiting.begin());
      if (!unlocked(lock, [&] { consumer_.on_block_in_order(slot.block); })) break;
      ++p.next_in_order;
      release(slot);
      wake_.notify_all();
    }
    p.in_order_running = false;
  }

  void release(const Slot& slot) {
    Progress& p = progress_[slot.block.file];
    --p.outstanding;
    ++p.released;
    if (!in_place()) free_[slot.owner].push_back(const_cast<uint8_t*>(slot.block.data));
  }

  void finish_file_if_done(size_t f, std::unique_lock<std::mutex>& lock) {
    Progress& p = progress_[f];
    if (error_ || p.done || p.released != p.blocks) return;
    p.done = true;
    unlocked(lock, [&] {
      files_[f].check_unchanged();
      consumer_.on_file_done(f);
    });
  }

  // Runs `step` (reading, hashing: slow, and it may throw) with the lock released, and holds
  // the lock again after it. False when it threw: the error is then recorded for every thread
  // to stop on.
  template <typename Step>
  bool unlocked(std::unique_lock<std::mutex>& lock, Step&& step) {
    lock.unlock();
    try {
      step();
    } catch (...) {
      lock.lock();
      fail(std::current_exception());
      return false;
    }
    lock.lock();
    return true;
  }

  void fail(std::exception_ptr e) {
    if (!error_) error_ = e;
    wake_.notify_all();
  }

  const std::vector<InputFile>& files_;
  BlockConsumer& consumer_;
  const uint64_t block_;
  const bool in_order_;
  std::vector<Progress> progress_;
  std::vector<uint8_t*> destinations_;
  size_t threads_ = 1;
  std::vector<std::unique_ptr<uint8_t[]>> own_;
  std::vector<std::vector<uint8_t*>> free_;  // each worker's free staging buffers

  std::mutex mu_;
  std::condition_variable wake_;
  size_t next_file_ = 0;
  std::vector<size_t> active_;  // started files with blocks not yet handed out
  std::exception_ptr error_;
};

}  // namespace

void read_files(const std::vector<InputFile>& files, BlockConsumer& consumer,
                const ReadOptions& options) {
  Reader(files, consumer, options).run();
}

}  // namespace io
}  // namespace sentry
