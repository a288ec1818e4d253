// Pieces shared by the CUDA forward and backward kernels (recurrence_cuda_forward.cu,
// recurrence_cuda_backward.cu): row indexing, launch shapes, the compile-time flag switch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda_support.h"
#include "gru_cell.h"
#include "lstm_cell.h"
#include "recurrence_cpu.h"
#include "recurrence_cuda.h"
#include "static_switch.h"

namespace resetlstm {
namespace cuda {

// Row (b, t) of a [B,T,*] array: b*T + t, or t*B + b when time-major.
struct RowIndex {
  int64_t B, T;
  bool time_major;
  __host__ __device__ __forceinline__ int64_t operator()(int64_t b, int64_t t) const {
    return time_major ? t * B + b : b * T + t;
  }
  // Distance in rows between (b, t) and (b + 1, t).
  __host__ __device__ __forceinline__ int64_t batch_stride() const { return time_major ? 1 : T; }
};

// Elementwise kernels: one thread per (batch row b, hidden unit j), flat index b*H + j.
constexpr int kThreads = 256;

inline unsigned int blocks_for(int64_t n) {
  return static_cast<unsigned int>((n + kThreads - 1) / kThreads);
}

__device__ __forceinline__ int64_t flat_thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

// (b, j) of a flat index b*H + j; 32-bit division whenever it fits (it nearly always does).
__device__ __forceinline__ void split_index(int64_t idx, int64_t H, int64_t* b, int64_t* j) {
  if (idx <= 0xffffffffll && H <= 0xffffffffll) {
    const uint32_t q = static_cast<uint32_t>(idx) / static_cast<uint32_t>(H);
    *b = q;
    *j = idx - static_cast<int64_t>(q) * H;
  } else {
    *b = idx / H;
    *j = idx - *b * H;
  }
}

// ---- storage type T vs compute type acc_t<T> (recurrence_cpu.h) ------------------------------------
// float and double compute in themselves; bf16 and f16 are widened to float32 on load and rounded
// to nearest even on store.

using cpu::acc_t;
using cpu::kWidened;

__device__ __forceinline__ float to_acc(cpu::bf16 x) {
  return __bfloat162float(__ushort_as_bfloat16(x.bits));
}
__device__ __forceinline__ float to_acc(cpu::f16 x) {
  return __half2float(__ushort_as_half(x.bits));
}
__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }

// A computed value stored as T (half types: round to nearest even; NaN stays NaN).
template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> x) {
  if constexpr (std::is_same<T, cpu::bf16>::value) {
    return cpu::bf16{__bfloat16_as_ushort(__float2bfloat16_rn(x))};
  } else if constexpr (std::is_same<T, cpu::f16>::value) {
    return cpu::f16{__half_as_ushort(__float2half_rn(x))};
  } else {
    return x;
  }
}

// The recurrent GEMM's input for the state value h (of unit idx): round(m * h) with a recurrent
// dropout mask m, else round(h) — what the forward feeds the GEMM and the backward rebuilds.
template <typename T>
__device__ __forceinline__ T gemm_input(const T* dropout, int64_t idx, acc_t<T> h) {
  return from_acc<T>(dropout ? to_acc(dropout[idx]) * h : h);
}

// Checks the launch of the kernel just enqueued.
#define RLSTM_LAUNCH_TRY() RLSTM_CUDA_TRY(cudaGetLastError())

}  // namespace cuda
}  // namespace resetlstm
