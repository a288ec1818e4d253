// How the CPU kernels get parallelism: the binding supplies a TaskRunner (the TF op wraps the
// OpKernelContext's intra-op thread pool; the pybind11 module its own small pool). The kernels
// never create threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <thread>
#include <type_traits>
#include <utility>

#if defined(__linux__)
#include <sched.h>
#endif

namespace resetlstm {
namespace cpu {

// A non-owning reference to a callable, so passing work to the runner never allocates.
template <typename Signature>
class FunctionRef;

template <typename R, typename... Args>
class FunctionRef<R(Args...)> {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F&& f)  // NOLINT: implicit by design, like absl::FunctionRef
      : obj_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* obj, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(obj))(std::forward<Args>(args)...);
        }) {}
  R operator()(Args... args) const { return call_(obj_, std::forward<Args>(args)...); }

 private:
  void* obj_;
  R (*call_)(void*, Args...);
};

class TaskRunner {
 public:
  virtual ~TaskRunner() = default;
  // How many tasks can usefully run at once.
  virtual int num_threads() const = 0;
  // Runs task(i) for every i in [0, num_tasks), possibly concurrently, and returns when all
  // have finished. Tasks never wait on each other.
  virtual void run(int64_t num_tasks, FunctionRef<void(int64_t)> task) const = 0;
};

// A buffer of at least `bytes` bytes, 64-byte aligned, kept by the calling thread for `Tag`
// (one buffer per thread and tag) and grown when a call needs more, so scratch memory is
// allocated (and faulted in) rarely rather than per call; freed when the thread exits.
template <typename Tag>
void* thread_buffer(size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffer;
  if (buffer.size < bytes || buffer.data == nullptr) {
    std::free(buffer.data);
    const size_t rounded = (std::max<size_t>(bytes, 1) + 63) & ~size_t(63);
    buffer.data = std::aligned_alloc(64, rounded);
    buffer.size = buffer.data ? rounded : 0;
    if (buffer.data == nullptr) throw std::bad_alloc();
  }
  return buffer.data;
}

// Waits until `counter` reaches n (acquire: the writes before each increment are visible):
// spins briefly, then yields, since whoever will increment it may share this CPU.
inline void wait_for_count(const std::atomic<int64_t>& counter, int64_t n) {
  for (int spins = 0; counter.load(std::memory_order_acquire) < n; ++spins) {
    if (spins < 4096) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }
}

// Runs task(i) for i in [0, num_tasks) on the calling thread and on up to `helpers` helpers,
// each started by schedule(fn) (a pool's Schedule, a new thread), all claiming indices in
// order from one counter. The caller never sleeps on a helper that has not started: a helper
// that starts late (its thread was woken onto the caller's CPU, or its pool is busy) finds
// nothing left and returns, so a call costs at most the time of running every task on the
// caller. The caller then waits only for indices already claimed, whose claimants are
// running (wait_for_count). A helper that finds itself on the caller's CPU would only take
// turns with it, so it yields until the scheduler moves it or nothing is left. The claim state
// is shared with the helpers and freed by the last one out, since a late helper may run after
// this call has returned; `task` is only called for claimed indices, while the caller is still
// waiting.
template <typename Schedule>
void run_claimed(int64_t num_tasks, int64_t helpers, FunctionRef<void(int64_t)> task,
                 Schedule&& schedule) {
  if (num_tasks <= 1 || helpers <= 0) {
    for (int64_t i = 0; i < num_tasks; ++i) task(i);
    return;
  }
  struct Claims {
    Claims(int64_t n, FunctionRef<void(int64_t)> f, int cpu)
        : num_tasks(n), task(f), caller_cpu(cpu) {}
    static int this_cpu() {
#if defined(__linux__)
      return sched_getcpu();
#else
      return -1;
#endif
    }
    void work() {
      for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < num_tasks;
           i = next.fetch_add(1, std::memory_order_relaxed)) {
        task(i);
        done.fetch_add(1, std::memory_order_release);
      }
    }
    void help() {
      while (caller_cpu >= 0 && this_cpu() == caller_cpu) {
        if (next.load(std::memory_order_relaxed) >= num_tasks) return;
        std::this_thread::yield();
      }
      work();
    }
    const int64_t num_tasks;
    const FunctionRef<void(int64_t)> task;
    const int caller_cpu;
    alignas(64) std::atomic<int64_t> next{0};  // own cache lines: claims do not disturb the wait
    alignas(64) std::atomic<int64_t> done{0};
  };
  auto claims = std::make_shared<Claims>(num_tasks, task, Claims::this_cpu());
  for (int64_t w = 0; w < helpers; ++w) {
    try {
      schedule([claims] { claims->help(); });
    } catch (...) {  // out of memory: the helpers scheduled so far and the caller run the tasks
      break;
    }
  }
  claims->work();
  wait_for_count(claims->done, num_tasks);
}

}  // namespace cpu
}  // namespace resetlstm
