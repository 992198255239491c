// A few persistent threads for the host steps of a verification that can overlap: opening a
// bundle while the GPU hash launches, parsing its statement while its signature is checked.
// Threads are made once (a thread made per call cost more than the overlap saved) and remade
// in a forked child, which inherits none of them.
//
// A Task never deadlocks for want of a thread: get() runs the work on the calling thread when no
// worker has started it, so tasks may start tasks, and with no threads (set_background_threads(0))
// everything runs in order on the caller.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <utility>

#include "../include/sentry/bundle.h"  // set_background_threads

namespace sentry {

namespace background {

// The shared state of one task: what to run, and how far it got.
struct Job {
  enum Phase { kPending, kRunning, kDone, kCancelled };
  std::atomic<int> phase{kPending};
  std::function<void()> work;  // stores its result or exception in the Task
  // The call the job belongs to: the outermost task's number, inherited by the tasks its work
  // makes. A waiting thread runs queued jobs of its own call only (another call's job could
  // reuse what the waiter's stack still holds, such as its thread's JSON parser).
  std::uint64_t call = 0;
  std::atomic<int> claimed_by{0};  // the process that started it: a forked child lacks its thread
  std::mutex mutex;
  std::condition_variable done;

  // Runs the work if nobody has started it; true when this call ran it.
  bool claim_and_run();
  // Returns once the work has run (running it here if nobody has started it, helping with the
  // call's other queued jobs while it waits); false when it never will: it was started in the
  // parent of this forked process.
  bool finish();
};

// The call a job made now on this thread belongs to.
std::uint64_t current_call();

// Queues a job for the workers; false when there are none (it then runs at get()).
bool submit(std::shared_ptr<Job> job);

}  // namespace background

// Work of result T started in the background. Everything the work refers to must outlive the
// Task: its destructor waits for work already started, and cancels work not started.
template <class T>
class Task {
 public:
  explicit Task(std::function<T()> work) : job_(std::make_shared<background::Job>()) {
    job_->call = background::current_call();
    job_->work = [this, work = std::move(work)] {
      try {
        result_.emplace(work());
      } catch (...) {
        error_ = std::current_exception();
      }
    };
    background::submit(job_);
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() {
    int pending = background::Job::kPending;
    if (!job_->phase.compare_exchange_strong(pending, background::Job::kCancelled)) {
      job_->finish();  // false only in a forked child, where the work will never run
    }
  }

  // The work's result, or its exception rethrown. Call once.
  T get() {
    if (!job_->finish()) {
      throw std::runtime_error("the process forked while a background task of Sentry ran");
    }
    if (error_) std::rethrow_exception(error_);
    return std::move(*result_);
  }

 private:
  std::shared_ptr<background::Job> job_;
  std::optional<T> result_;
  std::exception_ptr error_;
};

}  // namespace sentry
