#include "openmp_team.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <functional>
#include <mutex>

namespace resetlstm {
namespace openmp {
namespace {

using GompParallel = void (*)(void (*fn)(void*), void* data, unsigned num_threads,
                              unsigned flags);

struct Attachment {
  std::mutex mu;  // attach() and attached() only; run_region() reads the atomics
  std::string path;
  std::atomic<GompParallel> parallel{nullptr};
  std::atomic<pid_t> owner{0};
};

Attachment& state() {
  static Attachment* s = new Attachment;  // never destroyed: a region may race interpreter exit
  return *s;
}

// One parallel region per kernel call. The first thread of the team to arrive runs the call
// (forward or backward), whose runner posts the helpers of each step of work (run_claimed) to
// the region; the other threads serve them until the call is done. The team's barrier then
// comes once per call, not once per step of work: at that barrier every thread of the team must
// arrive, and under load one whose core is shared with another process can take a time slice
// to get there.
class Region final : public cpu::TaskRunner {
 public:
  Region(int team, cpu::FunctionRef<void(const cpu::TaskRunner&)> body)
      : team_(team), body_(body) {}

  int num_threads() const override { return team_; }
  void run(int64_t num_tasks, cpu::FunctionRef<void(int64_t)> task) const override {
    cpu::run_claimed(num_tasks, std::min<int64_t>(team_ - 1, num_tasks - 1), task,
                     [this](std::function<void()> job) { post(std::move(job)); });
  }

  // What every thread of the team runs.
  void enter() {
    if (!body_taken_.exchange(true, std::memory_order_acq_rel)) {
      body_(*this);
      finished_.store(true, std::memory_order_release);
      posted_.add();  // wakes the servers, which leave
      return;
    }
    for (int64_t seen = posted_.load();;) {
      std::function<void()> job;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (!jobs_.empty()) {
          job = std::move(jobs_.front());
          jobs_.pop_front();
        }
      }
      if (job) {
        job();  // a helper of run_claimed: it claims what is left of that step
        continue;
      }
      if (finished_.load(std::memory_order_acquire)) return;
      posted_.wait_for(seen + 1);
      seen = posted_.load();
    }
  }

 private:
  void post(std::function<void()> job) const {
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(std::move(job));
    }
    posted_.add();
  }

  const int team_;
  const cpu::FunctionRef<void(const cpu::TaskRunner&)> body_;
  std::atomic<bool> body_taken_{false}, finished_{false};
  mutable std::mutex mu_;
  mutable std::deque<std::function<void()>> jobs_;  // helpers left over at the end: no-ops
  mutable cpu::WaitableCount posted_;
};

void enter(void* data) { static_cast<Region*>(data)->enter(); }

}  // namespace

std::string attach(const std::string& path) {
  Attachment& s = state();
  if (path.empty()) {  // detach: back to _native's own pool
    std::lock_guard<std::mutex> lock(s.mu);
    s.parallel.store(nullptr, std::memory_order_release);
    s.path.clear();
    return "";
  }
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
  if (handle == nullptr)
    return "`" + path + "` is not loaded in this process (only a runtime already in use is "
           "attached)";
  auto parallel = reinterpret_cast<GompParallel>(dlsym(handle, "GOMP_parallel"));
  if (parallel == nullptr) {
    dlclose(handle);
    return "`" + path + "` has no GOMP_parallel (not an OpenMP runtime with the GNU ABI)";
  }
  // the handle stays open: the library must outlive every call through `parallel`
  std::lock_guard<std::mutex> lock(s.mu);
  s.path = path;
  s.owner.store(getpid(), std::memory_order_relaxed);
  s.parallel.store(parallel, std::memory_order_release);
  return "";
}

std::string attached() {
  Attachment& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.owner.load(std::memory_order_relaxed) == getpid() ? s.path : std::string();
}

bool run_region(int threads, cpu::FunctionRef<void(const cpu::TaskRunner&)> body) {
  Attachment& s = state();
  const GompParallel parallel = s.parallel.load(std::memory_order_acquire);
  if (parallel == nullptr || s.owner.load(std::memory_order_relaxed) != getpid()) return false;
  Region region(std::max(1, threads), body);
  parallel(&enter, &region, static_cast<unsigned>(std::max(1, threads)), 0);
  return true;
}

}  // namespace openmp
}  // namespace resetlstm
