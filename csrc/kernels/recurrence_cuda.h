// CUDA forward and backward of the recurrence engine over a whole sequence, for every cell of
// cpu::CellType (Dims::cell). Framework-free: the same argument structs as the CPU kernels
// (cpu::ForwardArgs / cpu::BackwardArgs, every pointer a device pointer, the bool resets/mask
// included), a caller-provided device workspace, and the caller's stream. No CUDA header is
// needed to use this file; the TF ops, the pybind11 module and the XLA FFI handlers are thin
// bindings over it.
//
// Shape legend: recurrence_cpu.h's (B, T, I, H, G gates, S saved per unit). "[B,T,*]" arrays
// are "[T,B,*]" when Dims::time_major is set.
//
// Runtime requirements: the CUDA runtime is linked statically (CUDA 13 here, so an NVIDIA driver
// R580 or newer); cuBLAS (libcublas.so.13 or .so.12) is loaded with dlopen on first use, so a
// machine without a GPU or without CUDA libraries still loads the module and runs the CPU path.
#pragma once

#include <cstddef>
#include <cstdint>

#include "recurrence_cpu.h"

namespace resetlstm {
namespace cuda {

// Result of a CUDA entry point: ok, or a message saying what failed (plain chars so the struct
// crosses between the nvcc-built library and any C++ binding without ABI questions).
struct Status {
  bool ok = true;
  char message[512] = {0};

  static Status Ok() { return Status(); }
  static Status Error(const char* format, ...) __attribute__((format(printf, 1, 2)));
};

struct LaunchOptions {
  void* stream = nullptr;   // cudaStream_t the work is enqueued on (nullptr: legacy default)
  int device = -1;          // CUDA device of the arrays; -1: the calling thread's current device
  bool allow_tf32 = false;  // float32 GEMMs may use TF32 tensor cores (cuBLAS math mode)
};

// Device scratch memory the caller provides, in elements of T (the launchers align it to 256
// bytes themselves). It also holds cuBLAS's workspace, so nothing is allocated behind the
// caller's allocator.
template <typename T>
int64_t forward_workspace_size(const cpu::Dims& dims, bool training);
template <typename T>
int64_t backward_workspace_size(const cpu::Dims& dims, bool has_mask);

// Enqueue the whole forward / backward on options.stream; no host synchronisation and no
// allocation. Training (args.gates and args.cells non-null) saves what backward needs.
// args.h_final / c_final (forward) and args.d_h0 / d_c0 (backward) are required (c_final, d_c0
// for cells with a cell state): they hold the running state. A returned error means nothing more was enqueued after the failing call.
template <typename T>
Status forward(const cpu::ForwardArgs<T>& args, void* workspace, const LaunchOptions& options);
template <typename T>
Status backward(const cpu::BackwardArgs<T>& args, void* workspace, const LaunchOptions& options);

// Storage types: float, double, bf16 and f16 (recurrence_cpu.h). The half types keep inputs, weights,
// outputs, saved activations and gradients in 16 bits and compute in float32: every GEMM runs
// on tensor cores with float32 accumulation (cublasGemmEx), the pre-activations, the cell state,
// the running gradients and the gate math are float32 for the whole sequence, and values are
// rounded to nearest even where they are stored. bf16 needs compute capability 8.0 or newer
// (an error Status says so on older GPUs); see dtype_unsupported_reason.

// Why storage type `dtype` ("float16", "bfloat16", "float32", "float64") cannot run on a GPU of
// compute capability major.minor; "" when it can. A pure function (no GPU needed), so callers
// can decide before launching and tests can check every architecture.
const char* dtype_unsupported_reason(const char* dtype, int major, int minor);

// Whether the CUDA path can run here: a driver new enough for this build's CUDA runtime, at
// least one device, and cuBLAS loadable. On false, *reason (if given) says why.
bool available(const char** reason);

// Extra places to look for libcublas (full file paths), tried before the default search;
// call before the first CUDA entry point (later calls have no effect once cuBLAS is loaded).
void add_cublas_candidates(const char* const* paths, int count);

// The cuBLAS library that was loaded ("" when none yet) and the CUDA runtime version linked in.
const char* cublas_library();
int runtime_version();

}  // namespace cuda
}  // namespace resetlstm
