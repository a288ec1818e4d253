// Host-side support of the CUDA kernels: error checking, the device guard, cuBLAS loaded at
// run time (dlopen, no link-time dependency, so one build serves cuBLAS 12 and 13 and a machine
// without CUDA libraries still loads), a pool of cuBLAS handles, and a row-major GEMM on top.
// Internal to csrc/kernels; bindings use recurrence_cuda.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "recurrence_cuda.h"

namespace resetlstm {
namespace cuda {

// Returns the Status of `expr` from the enclosing function when it is an error.
#define RLSTM_TRY(expr)                        \
  do {                                         \
    ::resetlstm::cuda::Status rlstm_s_ = (expr); \
    if (!rlstm_s_.ok) return rlstm_s_;         \
  } while (0)

// Checks a CUDA runtime call, naming it in the message.
#define RLSTM_CUDA_TRY(expr) \
  RLSTM_TRY(::resetlstm::cuda::check_cuda((expr), #expr, __FILE__, __LINE__))

Status check_cuda(cudaError_t error, const char* what, const char* file, int line);

// cuBLAS workspace handed to cuBLAS out of the caller's workspace (the size NVIDIA recommends for
// Hopper; enough for every architecture).
constexpr int64_t kCublasWorkspaceBytes = int64_t(32) << 20;
constexpr int64_t kAlignBytes = 256;

inline int64_t round_up_bytes(int64_t n) {
  return (n + kAlignBytes - 1) / kAlignBytes * kAlignBytes;
}

// Carves 256-byte aligned pieces out of the caller's workspace.
class WorkspaceCarver {
 public:
  explicit WorkspaceCarver(void* base)
      : next_((reinterpret_cast<uintptr_t>(base) + kAlignBytes - 1) &
              ~uintptr_t(kAlignBytes - 1)) {}
  void* take_bytes(int64_t bytes) {
    void* p = reinterpret_cast<void*>(next_);
    next_ += static_cast<uintptr_t>(round_up_bytes(bytes));
    return p;
  }
  template <typename U>
  U* take(int64_t count) {
    return static_cast<U*>(take_bytes(count * static_cast<int64_t>(sizeof(U))));
  }

 private:
  uintptr_t next_;
};

// Workspace size in elements of T for a list of byte sizes carved in order (alignment slack
// included).
template <typename T>
int64_t workspace_elements(std::initializer_list<int64_t> byte_sizes) {
  int64_t total = kAlignBytes;  // the base pointer may need aligning
  for (int64_t b : byte_sizes) total += round_up_bytes(b);
  return (total + static_cast<int64_t>(sizeof(T)) - 1) / static_cast<int64_t>(sizeof(T));
}

// Makes `device` current for the guard's lifetime (device < 0: leaves the current one).
class DeviceGuard {
 public:
  DeviceGuard() = default;
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  Status set(int device);
  int device() const { return device_; }

 private:
  int previous_ = -1;
  int device_ = -1;
};

// One cuBLAS handle of the calling device for the session's lifetime, bound to the stream, the
// workspace and the math mode. Handles come from a per-device pool (a handle serves one caller at
// a time; creating one costs milliseconds), so concurrent callers never share one.
class BlasSession {
 public:
  BlasSession() = default;
  ~BlasSession();
  BlasSession(const BlasSession&) = delete;
  BlasSession& operator=(const BlasSession&) = delete;

  Status begin(int device, void* stream, void* workspace, int64_t workspace_bytes,
               bool allow_tf32);

  // Row-major C[M,N] = op(A)[M,K] @ op(B)[K,N] (+ C when `accumulate`), op = transpose when
  // trans_*; lda/ldb/ldc are row strides in elements. In -> Out: float -> float and double ->
  // double (cublasSgemm / Dgemm; float32 in the session's math mode), bf16 / f16 -> the same type
  // or float (cublasGemmEx, float32 accumulation, tensor cores; a half result is rounded once).
  template <typename In, typename Out>
  Status gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const In* A,
              int64_t lda, const In* B, int64_t ldb, bool accumulate, Out* C,
              int64_t ldc) const;

 private:
  void* handle_ = nullptr;
  void* stream_ = nullptr;
  int device_ = -1;
};

// Loads cuBLAS on first call; false with *reason when it cannot be loaded.
bool load_cublas(const char** reason);

// Whether the kernels of storage type T run on `device` (the current one when < 0): bfloat16
// needs compute capability 8.0 or newer (bf16 tensor-core GEMMs); float16, float32 and float64
// run on every architecture this library is built for.
template <typename T>
Status check_dtype_support(int device);

}  // namespace cuda
}  // namespace resetlstm
