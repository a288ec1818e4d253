// How the CPU kernels get parallelism: the binding supplies a TaskRunner (the TF op wraps the
// OpKernelContext's intra-op thread pool; the pybind11 module its own small pool). The kernels
// never create threads.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

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

}  // namespace cpu
}  // namespace resetlstm
