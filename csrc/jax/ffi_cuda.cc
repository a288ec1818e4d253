// XLA FFI handlers of the CUDA kernels (built with the CUDA path): the same validation as the
// CPU handlers (ffi_args.h), then cuda::forward / cuda::backward enqueued on the stream
// XLA gives the call, on its device, with the workspace XLA allocated as the call's last result
// (device memory; it also holds cuBLAS's workspace). No host synchronisation, no allocation.
//
// Compiled and linked on the CPU-only development machine; never executed there (no GPU). Its
// host-side checks are the CPU handlers' (shared code), which the CPU tests run.
#include <cstdint>
#include <string>

#include "ffi_handlers.h"
#include "ffi_args.h"

#include "../kernels/recurrence_cuda.h"

namespace resetlstm {
namespace jaxffi {
namespace {

ffi::Error Report(const cuda::Status& status, const char* what) {
  if (status.ok) return ffi::Error::Success();
  return ffi::Error::Internal(std::string(what) + ": " + status.message);
}

cuda::LaunchOptions Options(void* stream, int32_t device, bool allow_tf32) {
  cuda::LaunchOptions options;
  options.stream = stream;
  options.device = device;
  options.allow_tf32 = allow_tf32;
  return options;
}

ffi::Error Forward(const cuda::LaunchOptions& options, ForwardCall call) {
  return Run</*kHalf=*/true, cpu::ForwardArgs>(
      call,
      [&](auto tag, const cpu::Dims& d) {
        return cuda::forward_workspace_size<decltype(tag)>(d, call.training);
      },
      [&](const auto& args, auto* workspace) {
        return Report(cuda::forward(args, workspace, options),
                      call.flags.cell == cpu::CellType::kLstm ? "reset_lstm (CUDA)"
                                                              : "reset_gru (CUDA)");
      });
}

ffi::Error Backward(const cuda::LaunchOptions& options, BackwardCall call) {
  return Run</*kHalf=*/true, cpu::BackwardArgs>(
      call,
      [&](auto tag, const cpu::Dims& d) {
        return cuda::backward_workspace_size<decltype(tag)>(d, call.flags.has_mask);
      },
      [&](const auto& args, auto* workspace) {
        return Report(cuda::backward(args, workspace, options),
                      call.flags.cell == cpu::CellType::kLstm ? "reset_lstm gradient (CUDA)"
                                                              : "reset_gru gradient (CUDA)");
      });
}

// Context first: the call's stream (a cudaStream_t, as void*: no CUDA header needed) and device,
// then allow_tf32 (float32 GEMMs may use TF32 tensor cores; the lowering passes JAX's
// default matmul precision), then the shared layout.
auto CudaBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::PlatformStream<void*>>()
      .Ctx<ffi::DeviceOrdinal>()
      .Attr<bool>("allow_tf32");
}

XLA_FFI_DEFINE_HANDLER(kForward,
                       [](void* stream, int32_t device, bool allow_tf32, auto... a) {
                         return Forward(Options(stream, device, allow_tf32),
                                        MakeForwardCall(a...));
                       },
                       BindForward(CudaBinding()));
XLA_FFI_DEFINE_HANDLER(kBackward,
                       [](void* stream, int32_t device, bool allow_tf32, auto... a) {
                         return Backward(Options(stream, device, allow_tf32),
                                         MakeBackwardCall(a...));
                       },
                       BindBackward(CudaBinding()));

}  // namespace

XLA_FFI_Handler* cuda_forward_handler() { return kForward; }
XLA_FFI_Handler* cuda_backward_handler() { return kBackward; }

int64_t cuda_workspace_bytes(Direction direction, const char* dtype, const cpu::Dims& dims,
                             bool flag) {
  return WorkspaceBytes</*kHalf=*/true>(dtype, [&](auto tag) {
    using T = decltype(tag);
    return direction == Direction::kForward ? cuda::forward_workspace_size<T>(dims, flag)
                                            : cuda::backward_workspace_size<T>(dims, flag);
  });
}

}  // namespace jaxffi
}  // namespace resetlstm
