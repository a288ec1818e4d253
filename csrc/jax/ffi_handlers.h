// The XLA FFI handlers of resetlstm._jax_ffi (CPU in ffi_cpu.cc; CUDA in ffi_cuda.cc when the
// CUDA path is built) and the workspace sizes the Python lowering gives their workspace result.
#pragma once

#include <cstdint>

#include "xla/ffi/api/c_api.h"

#include "../kernels/recurrence_cpu.h"

namespace resetlstm {
namespace jaxffi {

// Direction of a call, for the workspace sizes.
enum class Direction { kForward, kBackward };

XLA_FFI_Handler* cpu_forward_handler();
XLA_FFI_Handler* cpu_backward_handler();
// Bytes of the workspace result for kernel storage type `dtype` ("float32", "float64",
// "bfloat16"; "float16" on CUDA only), alignment slack included; `flag` is `training` for the
// forward, `has_mask` for the backward. -1 for a dtype the device has no kernels for.
int64_t cpu_workspace_bytes(Direction direction, const char* dtype, const cpu::Dims& dims,
                            bool flag);

#if RLSTM_WITH_CUDA
XLA_FFI_Handler* cuda_forward_handler();
XLA_FFI_Handler* cuda_backward_handler();
int64_t cuda_workspace_bytes(Direction direction, const char* dtype, const cpu::Dims& dims,
                             bool flag);
#endif

}  // namespace jaxffi
}  // namespace resetlstm
