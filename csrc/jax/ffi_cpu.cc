// XLA FFI handlers of the CPU kernels: validate (ffi_lstm_args.h), then cpu::forward /
// cpu::backward on XLA's intra-op thread pool, with the workspace XLA allocated as the call's
// last result. Nothing here allocates memory for the kernels; the pool's Schedule allocates one
// small closure per helper per hand-off, as TF's pool does for the TF op.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "ffi_handlers.h"
#include "ffi_lstm_args.h"

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
  return WithStorageType</*kHalf=*/false>(
      call.in.inputs.element_type(), [&](auto tag) -> ffi::Error {
        using T = decltype(tag);
        cpu::ForwardArgs<T> args;
        std::string error = DecodeForward(call.in, call.out, call.flags, call.training, &args);
        if (!error.empty()) return Invalid(error);
        T* workspace = Workspace<T>(
            call.out.workspace, cpu::forward_workspace_size<T>(args.dims, call.training), &error);
        if (!workspace) return Invalid(error);
        cpu::forward<T>(XlaTaskRunner(pool), args, workspace);
        return ffi::Error::Success();
      });
}

ffi::Error Backward(ffi::ThreadPool& pool, BackwardCall call) {
  return WithStorageType</*kHalf=*/false>(
      call.in.inputs.element_type(), [&](auto tag) -> ffi::Error {
        using T = decltype(tag);
        cpu::BackwardArgs<T> args;
        std::string error = DecodeBackward(call.in, call.out, call.flags, &args);
        if (!error.empty()) return Invalid(error);
        T* workspace = Workspace<T>(
            call.out.workspace,
            cpu::backward_workspace_size<T>(args.dims, call.flags.has_mask), &error);
        if (!workspace) return Invalid(error);
        cpu::backward<T>(XlaTaskRunner(pool), args, workspace);
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
  auto bytes = [&](auto tag) {
    using T = decltype(tag);
    const int64_t elements = direction == Direction::kForward
                                 ? cpu::forward_workspace_size<T>(dims, flag)
                                 : cpu::backward_workspace_size<T>(dims, flag);
    return elements * static_cast<int64_t>(sizeof(T)) + kWorkspaceAlign;
  };
  if (std::strcmp(dtype, "float32") == 0) return bytes(float{});
  if (std::strcmp(dtype, "float64") == 0) return bytes(double{});
  if (std::strcmp(dtype, "bfloat16") == 0) return bytes(cpu::bf16{});
  return -1;
}

}  // namespace jaxffi
}  // namespace resetlstm
