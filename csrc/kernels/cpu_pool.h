// A pool of worker threads kept alive between calls, for bindings whose framework hands the
// kernels no thread pool (the pybind11 module `_native`, which the PyTorch front end calls, and
// bench/kernel_bench). Threads started per call would add their start-up (tens of µs each) to
// every call, and a recurrent-RL call can be 100 µs. Driven by cpu::run_claimed: the caller
// claims tasks too and never waits for a worker that has not started, so a busy or empty pool
// costs time, never a deadlock.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "cpu_parallel.h"

namespace resetlstm {
namespace cpu {

class WorkerPool {
 public:
  // Starts up to `workers` threads; fewer when the system cannot start more (an address-space
  // or thread limit): the pool then runs with what it has, possibly none.
  explicit WorkerPool(int workers) {
    for (int i = 0; i < workers; ++i) {
      try {
        threads_.emplace_back([this] { work(); });
      } catch (const std::system_error&) {
        break;
      }
    }
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  int size() const { return static_cast<int>(threads_.size()); }

  // Queues `job` for the next idle worker.
  void schedule(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }

  // Runs task(i) for i in [0, num_tasks) on the caller and up to `threads` - 1 workers.
  void run(int64_t num_tasks, int threads, FunctionRef<void(int64_t)> task) {
    const int64_t helpers = std::min<int64_t>({int64_t(threads) - 1, size(), num_tasks - 1});
    run_claimed(num_tasks, helpers, task, [this](std::function<void()> fn) {
      schedule(std::move(fn));
    });
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopping, and nothing left
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace cpu
}  // namespace resetlstm
