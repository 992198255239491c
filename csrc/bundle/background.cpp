// The background threads of background.h.
#include "background.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <thread>
#include <vector>

namespace sentry {

namespace background {

namespace {

// Waking a sleeping thread took 0.3-0.5 ms on the H200 machine (a virtual machine), as long as
// the steps handed to it. So every worker wakes when work arrives, and a worker spins this long
// after its last work before it sleeps again, to be awake for the next step of the same call; a
// thread waiting for a task spins as long before it sleeps.
constexpr auto kSpin = std::chrono::milliseconds(1);

struct Pool {
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::shared_ptr<Job>> queue;
  std::atomic<std::size_t> queued{0};  // queue.size(), read without the lock while spinning
  std::uint64_t pushes = 0;            // jobs ever queued: a change wakes every worker
  bool retired = false;                // replaced: its threads end once its queue is empty

  explicit Pool(int threads) {
    for (int i = 0; i < threads; ++i) std::thread([this] { serve(); }).detach();
  }

  void push(std::shared_ptr<Job> job) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      queue.push_back(std::move(job));
      queued.store(queue.size());
      ++pushes;
    }
    wake.notify_all();
  }

  // The next job, spinning up to kSpin for one before sleeping; null when retired. A worker
  // woken for a job another one took spins again: the caller's next step is coming.
  std::shared_ptr<Job> next() {
    while (true) {
      const auto give_up = std::chrono::steady_clock::now() + kSpin;
      while (queued.load() == 0 && std::chrono::steady_clock::now() < give_up) {
        std::this_thread::yield();
      }
      std::unique_lock<std::mutex> lock(mutex);
      if (queue.empty() && !retired) {
        const std::uint64_t seen = pushes;
        wake.wait(lock, [&] { return retired || !queue.empty() || pushes != seen; });
      }
      if (!queue.empty()) {
        std::shared_ptr<Job> job = std::move(queue.front());
        queue.pop_front();
        queued.store(queue.size());
        return job;
      }
      if (retired) return nullptr;
    }
  }

  // A queued job, if there is one, without waiting.
  std::shared_ptr<Job> try_next() {
    if (queued.load() == 0) return nullptr;
    std::lock_guard<std::mutex> lock(mutex);
    if (queue.empty()) return nullptr;
    std::shared_ptr<Job> job = std::move(queue.front());
    queue.pop_front();
    queued.store(queue.size());
    return job;
  }

  void serve() {
    while (std::shared_ptr<Job> job = next()) job->claim_and_run();
  }
};

// The pool is made on first use and never freed (its threads are detached and outlive any
// static destructor); a forked child drops its parent's, whose threads it does not have.
std::mutex pool_mutex;
Pool* pool = nullptr;
std::atomic<Pool*> current_pool{nullptr};  // `pool`, for waiters to help without pool_mutex
// Three (a bundle's signature check, its statement's fields, and the statement's duplicate-key
// walk or second half of entries, beside the caller), fewer with fewer cores: on two, a third
// busy thread made a first open slower, not faster.
int default_threads() {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(0, std::min(3, cores - 1));
}
int pool_threads = default_threads();

void lock_for_fork() { pool_mutex.lock(); }
void unlock_after_fork() { pool_mutex.unlock(); }
void reset_in_child() {
  pool = nullptr;  // leaked: its mutex may be held by a thread the child does not have
  current_pool.store(nullptr);
  pool_mutex.unlock();
}
const int fork_handlers = pthread_atfork(lock_for_fork, unlock_after_fork, reset_in_child);

}  // namespace

bool Job::claim_and_run() {
  int pending = kPending;
  if (!phase.compare_exchange_strong(pending, kRunning)) return false;
  work();
  {
    std::lock_guard<std::mutex> lock(mutex);
    phase.store(kDone);
  }
  done.notify_all();
  return true;
}

void Job::finish() {
  if (claim_and_run()) return;
  // While it waits, the caller runs queued work (jobs are a fraction of a millisecond), which
  // may be what the awaited job is itself waiting for.
  const auto give_up = std::chrono::steady_clock::now() + kSpin;
  while (phase.load() != kDone && std::chrono::steady_clock::now() < give_up) {
    Pool* helped = current_pool.load();
    if (std::shared_ptr<Job> other = helped ? helped->try_next() : nullptr) {
      other->claim_and_run();
    } else {
      std::this_thread::yield();
    }
  }
  std::unique_lock<std::mutex> lock(mutex);
  done.wait(lock, [this] { return phase.load() == kDone; });
}

bool submit(std::shared_ptr<Job> job) {
  Pool* target;
  {
    std::lock_guard<std::mutex> lock(pool_mutex);
    (void)fork_handlers;
    if (pool_threads == 0) return false;
    if (!pool) {
      pool = new Pool(pool_threads);
      current_pool.store(pool);
    }
    target = pool;
  }
  target->push(std::move(job));
  return true;
}

}  // namespace background

void set_background_threads(int threads) {
  std::lock_guard<std::mutex> lock(background::pool_mutex);
  threads = std::max(0, std::min(threads, 64));
  if (threads == background::pool_threads) return;
  background::pool_threads = threads;
  if (background::Pool* old = background::pool) {
    {
      std::lock_guard<std::mutex> pool_lock(old->mutex);
      old->retired = true;
    }
    old->wake.notify_all();
    background::pool = nullptr;
    background::current_pool.store(nullptr);
  }
}

int background_threads() {
  std::lock_guard<std::mutex> lock(background::pool_mutex);
  return background::pool_threads;
}

}  // namespace sentry
