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
#include <climits>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
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

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// A count that threads wait on until it reaches a value (work items done). wait_for() spins
// briefly, then sleeps in the kernel (a futex on Linux; elsewhere it yields) until add() brings
// the count there. Sleeping matters when the CPU is shared: the thread whose work is awaited
// may have been preempted by another process on its core, and a waiter that spins or yields
// keeps its own CPU busy, while one that sleeps leaves it idle, so the scheduler moves the
// preempted thread there at once. add() costs a syscall only while someone sleeps.
class WaitableCount {
 public:
  int64_t load() const { return value_.load(std::memory_order_acquire); }

  void add(int64_t k = 1) {
    value_.fetch_add(k, std::memory_order_seq_cst);  // release; seq_cst against sleepers_ below
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      seq_.fetch_add(1, std::memory_order_release);
      wake_all();
    }
  }

  // Returns once the count is at least n (acquire: the writes before those adds are visible).
  void wait_for(int64_t n) const {
    for (int spins = 0; spins < kSpins; ++spins) {
      if (value_.load(std::memory_order_acquire) >= n) return;
      cpu_relax();
    }
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    while (value_.load(std::memory_order_seq_cst) < n) {
      const int32_t seen = seq_.load(std::memory_order_acquire);
      if (value_.load(std::memory_order_acquire) >= n) break;
      sleep_while(seen);  // until add() changes seq_ (or spuriously)
    }
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  // ~0.1 ms of spinning (a pause is ~10-140 cycles) before sleeping: most waits in a quiet
  // machine end sooner, and a sleep costs a wake-up of tens of microseconds.
  static constexpr int kSpins = 2048;

  void sleep_while(int32_t seen) const {
#if defined(__linux__)
    syscall(SYS_futex, &seq_, FUTEX_WAIT_PRIVATE, seen, nullptr, nullptr, 0);
#else
    (void)seen;
    std::this_thread::yield();
#endif
  }
  void wake_all() {
#if defined(__linux__)
    syscall(SYS_futex, &seq_, FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
#endif
  }

  alignas(64) std::atomic<int64_t> value_{0};
  mutable std::atomic<int32_t> sleepers_{0};
  mutable std::atomic<int32_t> seq_{0};  // the futex word: changes whenever add() wakes
};
static_assert(sizeof(std::atomic<int32_t>) == 4, "a futex word is 32 bits");

// Runs task(i) for i in [0, num_tasks) on the calling thread and on up to `helpers` helpers,
// each started by schedule(fn) (a pool's Schedule, a new thread), all claiming indices in
// order from one counter. The caller never sleeps on a helper that has not started: a helper
// that starts late (its thread was woken onto the caller's CPU, or its pool is busy) finds
// nothing left and returns, so a call costs at most the time of running every task on the
// caller. The caller then waits only for indices already claimed, whose claimants are
// running (WaitableCount). A helper that finds itself on the caller's CPU would only take
// turns with it (under load the scheduler wakes helpers there half the time: on 2 cores beside
// one busy thread, 56 % of them), so it steps off that CPU for its tasks (AvoidCpu). The claim state
// is shared with the helpers and freed by the last one out, since a late helper may run after
// this call has returned; `task` is only called for claimed indices, while the caller is still
// waiting.
// While it lives, keeps the calling thread off CPU `cpu`: its affinity without that CPU (when
// another allowed CPU remains), which moves it at once; then restores the affinity it had.
class AvoidCpu {
 public:
  explicit AvoidCpu(int cpu) {
#if defined(__linux__)
    if (cpu < 0 || cpu >= CPU_SETSIZE || sched_getaffinity(0, sizeof saved_, &saved_) != 0 ||
        !CPU_ISSET(cpu, &saved_) || CPU_COUNT(&saved_) < 2)
      return;
    cpu_set_t without = saved_;
    CPU_CLR(cpu, &without);
    active_ = sched_setaffinity(0, sizeof without, &without) == 0;
#else
    (void)cpu;
#endif
  }
  ~AvoidCpu() {
#if defined(__linux__)
    if (active_) sched_setaffinity(0, sizeof saved_, &saved_);
#endif
  }
  AvoidCpu(const AvoidCpu&) = delete;
  AvoidCpu& operator=(const AvoidCpu&) = delete;

 private:
#if defined(__linux__)
  cpu_set_t saved_;
#endif
  bool active_ = false;
};

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
        done.add();
      }
    }
    void help() {
      if (caller_cpu >= 0 && this_cpu() == caller_cpu) {
        if (next.load(std::memory_order_relaxed) >= num_tasks) return;
        AvoidCpu away(caller_cpu);
        work();
        return;
      }
      work();
    }
    const int64_t num_tasks;
    const FunctionRef<void(int64_t)> task;
    const int caller_cpu;
    alignas(64) std::atomic<int64_t> next{0};  // own cache lines: claims do not disturb the wait
    WaitableCount done;
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
  claims->done.wait_for(num_tasks);
}

}  // namespace cpu
}  // namespace resetlstm
