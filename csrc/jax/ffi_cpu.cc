// XLA FFI handlers of the CPU kernels: validate (ffi_args.h), then cpu::forward /
// cpu::backward on XLA's intra-op thread pool, with the workspace XLA allocated as the call's
// last result. Nothing here allocates memory for the kernels; the pool's Schedule allocates one
// small closure per helper per hand-off, as TF's pool does for the TF op.
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "ffi_handlers.h"
#include "ffi_args.h"

namespace resetlstm {
namespace jaxffi {
namespace {

// XLA's intra-op thread pool (the FFI execution context's) as a TaskRunner: the caller and up
// to one helper per pool thread claim the tasks (cpu::run_claimed), as the TF op's runner does
// over TF's pool. Without a pool (num_threads() == 0) the caller runs every task: helpers are
// only ever scheduled on a pool that exists, since the FFI's Schedule would otherwise run the
// helper inline on the caller, which run_claimed's helpers must never be.
class XlaTaskRunner final : public cpu::TaskRunner {
 public:
  explicit XlaTaskRunner(ffi::ThreadPool& pool) : pool_(pool), threads_(pool.num_threads()) {}
  int num_threads() const override { return static_cast<int>(std::max<int64_t>(1, threads_)); }
  void run(int64_t num_tasks, cpu::FunctionRef<void(int64_t)> task) const override {
    cpu::run_claimed(num_tasks, std::min(num_tasks, threads_), task,
                     [this](auto fn) { pool_.Schedule(std::move(fn)); });
  }

 private:
  ffi::ThreadPool& pool_;
  const int64_t threads_;
};

ffi::Error Forward(ffi::ThreadPool& pool, ForwardCall call) {
  return Run</*kHalf=*/false, cpu::ForwardArgs>(
      call,
      [&](auto tag, const cpu::Dims& d) {
        return cpu::forward_workspace_size<decltype(tag)>(d, call.training);
      },
      [&](const auto& args, auto* workspace) {
        cpu::forward(XlaTaskRunner(pool), args, workspace);
        return ffi::Error::Success();
      });
}

ffi::Error Backward(ffi::ThreadPool& pool, BackwardCall call) {
  return Run</*kHalf=*/false, cpu::BackwardArgs>(
      call,
      [&](auto tag, const cpu::Dims& d) {
        return cpu::backward_workspace_size<decltype(tag)>(d, call.flags.has_mask);
      },
      [&](const auto& args, auto* workspace) {
        cpu::backward(XlaTaskRunner(pool), args, workspace);
        return ffi::Error::Success();
      });
}

XLA_FFI_DEFINE_HANDLER(kForward,
                       [](ffi::ThreadPool pool, auto... a) {
                         return Forward(pool, MakeForwardCall(a...));
                       },
                       BindForward(ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()));
XLA_FFI_DEFINE_HANDLER(kBackward,
                       [](ffi::ThreadPool pool, auto... a) {
                         return Backward(pool, MakeBackwardCall(a...));
                       },
                       BindBackward(ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()));

}  // namespace

XLA_FFI_Handler* cpu_forward_handler() { return kForward; }
XLA_FFI_Handler* cpu_backward_handler() { return kBackward; }

int64_t cpu_workspace_bytes(Direction direction, const char* dtype, const cpu::Dims& dims,
                            bool flag) {
  return WorkspaceBytes</*kHalf=*/false>(dtype, [&](auto tag) {
    using T = decltype(tag);
    return direction == Direction::kForward ? cpu::forward_workspace_size<T>(dims, flag)
                                            : cpu::backward_workspace_size<T>(dims, flag);
  });
}

}  // namespace jaxffi
}  // namespace resetlstm
