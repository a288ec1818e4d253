#include "openmp_team.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>

namespace resetlstm {
namespace openmp {
namespace {

using GompParallel = void (*)(void (*fn)(void*), void* data, unsigned num_threads,
                              unsigned flags);

struct Attachment {
  std::mutex mu;  // attach() and attached() only; run() reads the atomics
  std::string path;
  std::atomic<GompParallel> parallel{nullptr};
  std::atomic<pid_t> owner{0};
};

Attachment& state() {
  static Attachment* s = new Attachment;  // never destroyed: run() may race interpreter exit
  return *s;
}

struct Team {
  Team(int64_t n, cpu::FunctionRef<void(int64_t)> f) : num_tasks(n), task(f) {}
  const int64_t num_tasks;
  const cpu::FunctionRef<void(int64_t)> task;
  alignas(64) std::atomic<int64_t> next{0};
};

// What every thread of the team runs: claim indices until none is left. The parallel region
// ends with the team's barrier, so every task has finished when GOMP_parallel returns.
void work(void* data) {
  Team& team = *static_cast<Team*>(data);
  for (int64_t i = team.next.fetch_add(1, std::memory_order_relaxed); i < team.num_tasks;
       i = team.next.fetch_add(1, std::memory_order_relaxed))
    team.task(i);
}

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

bool run(int64_t num_tasks, int threads, cpu::FunctionRef<void(int64_t)> task) {
  Attachment& s = state();
  const GompParallel parallel = s.parallel.load(std::memory_order_acquire);
  if (parallel == nullptr || s.owner.load(std::memory_order_relaxed) != getpid()) return false;
  Team team(num_tasks, task);
  const int64_t team_size = std::min<int64_t>(threads, num_tasks);
  parallel(&work, &team, static_cast<unsigned>(team_size), 0);
  return true;
}

}  // namespace openmp
}  // namespace resetlstm
