// CPU forward and backward of the reset-LSTM over a whole sequence. Framework-free: raw
// pointers, sizes and a TaskRunner for parallelism. The TF op and the pybind11 module are thin
// bindings over these functions.
//
// Shape legend: B batch, T time steps, I input size, H hidden size. "[B,T,*]" arrays are
// "[T,B,*]" when Dims::time_major is set. Gate order along 4H is Keras': i, f, c, o.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cpu_parallel.h"

namespace resetlstm {
namespace cpu {

// bfloat16 as stored by TensorFlow, Eigen and ml_dtypes: the upper 16 bits of a float32. The
// kernels take bf16 inputs, weights and outputs and compute in float32: float32 GEMM
// accumulation, float32 cell state within the sequence, float32 gate math; values are rounded
// to bf16 (to nearest even) where they are stored.
struct bf16 {
  uint16_t bits;
};

// IEEE float16 (binary16) as stored by TensorFlow (Eigen::half), numpy and torch. Storage type
// of the CUDA kernels only (lstm_cuda.h), with the same contract as bf16 there: half inputs,
// weights and outputs, float32 accumulation and cell state. The CPU kernels do not take it.
struct f16 {
  uint16_t bits;
};

// The type a T value is computed and accumulated in, by the CPU and the CUDA kernels alike:
// float and double in themselves, the 16-bit types in float32.
template <typename T>
struct AccOf {
  using type = T;
};
template <>
struct AccOf<bf16> {
  using type = float;
};
template <>
struct AccOf<f16> {
  using type = float;
};
template <typename T>
using acc_t = typename AccOf<T>::type;
// Whether T computes in a wider type (its running state then lives in workspace buffers).
template <typename T>
constexpr bool kWidened = !std::is_same_v<T, acc_t<T>>;

struct Dims {
  int64_t B = 0, T = 0, I = 0, H = 0;
  bool time_major = false;
};

template <typename T>
struct ForwardArgs {
  Dims dims;
  const T* inputs = nullptr;            // [B,T,I]
  const T* kernel = nullptr;            // [I,4H]
  const T* recurrent_kernel = nullptr;  // [H,4H]
  const T* bias = nullptr;              // [4H]
  const bool* resets = nullptr;         // [B,T] or null: true zeroes h, c before the step
  const bool* mask = nullptr;           // [B,T] or null: false skips the step (Keras masking)
  const T* h0 = nullptr;                // [B,H] or null (zeros)
  const T* c0 = nullptr;                // [B,H] or null (zeros)
  const T* recurrent_dropout_mask = nullptr;  // [B,H] or null: scales h before the recurrent
                                              // GEMM at every step (z = x K + (m * h) R + b)
  T* outputs = nullptr;                 // [B,T,H]
  T* h_final = nullptr;                 // [B,H]
  T* c_final = nullptr;                 // [B,H]
  T* gates = nullptr;                   // [B,T,4H] saved for backward, or null (inference)
  T* cells = nullptr;                   // [B,T,H]  saved for backward, or null (inference)
};

template <typename T>
struct BackwardArgs {
  Dims dims;
  const T* inputs = nullptr;            // [B,T,I]
  const T* kernel = nullptr;            // [I,4H]
  const T* recurrent_kernel = nullptr;  // [H,4H]
  const bool* resets = nullptr;         // [B,T] or null
  const bool* mask = nullptr;           // [B,T] or null
  const T* h0 = nullptr;                // [B,H] or null
  const T* c0 = nullptr;                // [B,H] or null
  const T* recurrent_dropout_mask = nullptr;  // [B,H] or null: the forward's mask
  const T* outputs = nullptr;           // [B,T,H]  forward result
  const T* gates = nullptr;             // [B,T,4H] saved by forward
  const T* cells = nullptr;             // [B,T,H]  saved by forward
  const T* d_outputs = nullptr;         // [B,T,H] or null (zeros)
  const T* d_h_final = nullptr;         // [B,H] or null (zeros)
  const T* d_c_final = nullptr;         // [B,H] or null (zeros)
  T* d_inputs = nullptr;                // [B,T,I]
  T* d_kernel = nullptr;                // [I,4H]
  T* d_recurrent_kernel = nullptr;      // [H,4H]
  T* d_bias = nullptr;                  // [4H]
  T* d_h0 = nullptr;                    // [B,H]
  T* d_c0 = nullptr;                    // [B,H]
};

// Recurrent dropout: with a mask m, every step computes z = x_t K + (m * h_in) R + b, where h_in
// is the (post-reset) state entering the step; h itself, the outputs and the carried state are
// not scaled. m holds 0 or 1/(1-rate) for inverted dropout, but any values are allowed; it gets
// no gradient.
//
// Scratch memory the caller provides, in elements of T (bf16: 2-byte units, part of it used
// as float32); the kernels allocate nothing.
// The workspace pointer must be 64-byte aligned.
template <typename T>
int64_t forward_workspace_size(const Dims& dims, bool training);
template <typename T>
int64_t backward_workspace_size(const Dims& dims, bool has_mask);

template <typename T>
void forward(const TaskRunner& runner, const ForwardArgs<T>& args, T* workspace);
template <typename T>
void backward(const TaskRunner& runner, const BackwardArgs<T>& args, T* workspace);

// The value of tuning switch `name` (an environment variable such as RESETLSTM_CPU_SPLIT) when
// it is one of `allowed` (a null-terminated list); null when unset or empty. Any other value is
// ignored (the automatic choice stands) with a warning on stderr, once per variable and value,
// naming the variable, the value and what is accepted: a typo never silently changes a path.
const char* env_choice(const char* name, const char* const* allowed);

// The instruction set the kernels dispatched to on this CPU ("avx512", "avx2" or "generic"),
// and the ones compiled in.
const char* selected_isa();
const char* compiled_isas();
// How bf16 GEMMs run on this CPU: "avx512_bf16" (vdpbf16ps: two bf16 products per float32 lane
// per instruction) or "emulated" (bf16 widened to float32, float32 FMAs: same results up to
// summation order, float32 speed, half the memory traffic).
const char* bf16_gemm();

}  // namespace cpu
}  // namespace resetlstm
