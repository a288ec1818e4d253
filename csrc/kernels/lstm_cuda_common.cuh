// Pieces shared by the CUDA forward and backward kernels (lstm_cuda_forward.cu,
// lstm_cuda_backward.cu): row indexing, launch shapes, the compile-time flag switch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_support.h"
#include "lstm_cell.h"
#include "lstm_cpu.h"
#include "lstm_cuda.h"
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

// Checks the launch of the kernel just enqueued.
#define RLSTM_LAUNCH_TRY() RLSTM_CUDA_TRY(cudaGetLastError())

}  // namespace cuda
}  // namespace resetlstm
