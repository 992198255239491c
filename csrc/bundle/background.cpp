// The background threads of background.h.
#include "background.h"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <system_error>
#include <thread>

namespace sentry {

namespace background {

namespace {

// Waking a sleeping thread took 0.3-1 ms on the H200 machine (a virtual machine), as long as the
// steps handed to it. So every worker wakes when work arrives, and a worker spins this long
// after its last work before it sleeps again, to be awake for the next step of the same call; a
// thread waiting for a task spins as long before it sleeps.
constexpr auto kSpin = std::chrono::milliseconds(1);

// The call of the job this thread runs (0: none; a task made then starts a new call).
thread_local std::uint64_t running_call = 0;
std::atomic<std::uint64_t> calls{0};

struct Pool {
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::shared_ptr<Job>> queue;
  std::atomic<std::size_t> queued{0};  // queue.size(), read without the lock while spinning
  std::uint64_t pushes = 0;            // jobs ever queued: a change wakes every worker
  bool retired = false;                // replaced: its threads end once its queue is empty
  int threads = 0;                     // started (fewer than asked when the system refused)

  // Never freed (its threads are detached), so a thread that fails to start leaves nothing
  // dangling; with none started, jobs run on their callers.
  explicit Pool(int wanted) {
    for (int i = 0; i < wanted; ++i) {
      try {
        std::thread([this] { serve(); }).detach();
        ++threads;
      } catch (const std::system_error&) {
        break;
      }
    }
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

  // A queued job of `call`, if there is one, without waiting.
  std::shared_ptr<Job> try_next(std::uint64_t call) {
    if (queued.load() == 0) return nullptr;
    std::lock_guard<std::mutex> lock(mutex);
    for (auto it = queue.begin(); it != queue.end(); ++it) {
      if ((*it)->call != call) continue;
      std::shared_ptr<Job> job = std::move(*it);
      queue.erase(it);
      queued.store(queue.size());
      return job;
    }
    return nullptr;
  }

  void serve() {
    while (std::shared_ptr<Job> job = next()) job->claim_and_run();
  }
};

// The pool is made on first use and never freed; a forked child drops its parent's, whose
// threads it does not have.
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

std::uint64_t current_call() { return running_call ? running_call : ++calls; }

bool Job::claim_and_run() {
  // Set before the claim, by any thread that tries: all of one process share its pid.
  claimed_by.store(static_cast<int>(getpid()));
  int pending = kPending;
  if (!phase.compare_exchange_strong(pending, kRunning)) return false;
  const std::uint64_t outer = running_call;
  running_call = call;
  work();
  running_call = outer;
  {
    std::lock_guard<std::mutex> lock(mutex);
    phase.store(kDone);
  }
  done.notify_all();
  return true;
}

bool Job::finish() {
  if (claim_and_run()) return true;
  // While it waits, the thread runs its own call's queued jobs (a fraction of a millisecond
  // each), which may be what the awaited job is itself waiting for.
  const auto give_up = std::chrono::steady_clock::now() + kSpin;
  while (phase.load() != kDone && std::chrono::steady_clock::now() < give_up) {
    Pool* helped = current_pool.load();
    if (std::shared_ptr<Job> other = helped ? helped->try_next(call) : nullptr) {
      other->claim_and_run();
    } else {
      std::this_thread::yield();
    }
  }
  if (phase.load() != kDone && claimed_by.load() != static_cast<int>(getpid())) return false;
  std::unique_lock<std::mutex> lock(mutex);
  done.wait(lock, [this] { return phase.load() == kDone; });
  return true;
}

bool submit(std::shared_ptr<Job> job) {
  // Pushed under pool_mutex: a pool retired meanwhile could have no thread left to serve it.
  std::lock_guard<std::mutex> lock(pool_mutex);
  (void)fork_handlers;
  if (pool_threads == 0) return false;
  if (!pool) {
    pool = new Pool(pool_threads);
    current_pool.store(pool);
  }
  if (pool->threads == 0) return false;
  pool->push(std::move(job));
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
