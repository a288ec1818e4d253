// CPU forward and backward of a recurrent layer whose state can be reset per batch row at any
// step, for each cell the engine knows (CellType: the LSTM, lstm_cell.h; the GRU in both of
// Keras' forms, gru_cell.h). Framework-free: raw pointers, sizes and a TaskRunner for
// parallelism. The TF ops, the pybind11 module and the XLA FFI handlers are thin bindings.
//
// Shape legend: B batch, T time steps, I input size, H hidden size, G the cell's gates per unit
// (LSTM 4: i, f, c, o; GRU 3: z, r, h, Keras' orders), S its saved activations per unit. "[B,T,*]"
// arrays are "[T,B,*]" when Dims::time_major is set.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cpu_parallel.h"
#include "gru_cell.h"
#include "lstm_cell.h"

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
// of the CUDA kernels only (recurrence_cuda.h), with the same contract as bf16 there: half inputs,
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

// The cells of the engine.
enum class CellType : int32_t {
  kLstm = 0,
  kGru = 1,             // reset_after=True: Keras' default, cuDNN's and torch.nn.GRU's form
  kGruResetBefore = 2,  // reset_after=False: the reset gate multiplies h before U_n
};

// Calls f(Cell{}) with the cell struct of `cell` (compile-time dispatch on a run-time type).
template <typename F>
decltype(auto) with_cell(CellType cell, F&& f) {
  switch (cell) {
    case CellType::kGru: return f(GruResetAfterCell{});
    case CellType::kGruResetBefore: return f(GruResetBeforeCell{});
    default: return f(LstmCell{});
  }
}

// A cell's shape, for the bindings' checks and allocations.
struct CellShape {
  int gates;        // G: kernel columns G * H
  int saved;        // S: the saved activations `gates` are [B, T, S * H]
  int bias_rows;    // bias [bias_rows * G * H] (GRU with reset_after: input, recurrent)
  bool cell_state;  // the state is (h, c): c0, c_final, cells, d_c_final, d_c0 exist
};

inline CellShape cell_shape(CellType cell) {
  return with_cell(cell, [](auto c) {
    using C = decltype(c);
    return CellShape{C::kGates, C::kSaved, C::kBiasRows, C::kCellState};
  });
}

struct Dims {
  int64_t B = 0, T = 0, I = 0, H = 0;
  bool time_major = false;
  CellType cell = CellType::kLstm;
};

// The arrays marked (c) exist only for cells with a cell state (the LSTM); they are null for
// the GRU.
template <typename T>
struct ForwardArgs {
  Dims dims;
  const T* inputs = nullptr;            // [B,T,I]
  const T* kernel = nullptr;            // [I,G*H]
  const T* recurrent_kernel = nullptr;  // [H,G*H]
  const T* bias = nullptr;              // [bias_rows*G*H]
  const bool* resets = nullptr;         // [B,T] or null: true zeroes the state before the step
  const bool* mask = nullptr;           // [B,T] or null: false skips the step (Keras masking)
  const T* h0 = nullptr;                // [B,H] or null (zeros)
  const T* c0 = nullptr;                // [B,H] or null (zeros) (c)
  const T* recurrent_dropout_mask = nullptr;  // [B,H] or null: scales h where the recurrent
                                              // GEMM reads it, at every step
  T* outputs = nullptr;                 // [B,T,H]
  T* h_final = nullptr;                 // [B,H]
  T* c_final = nullptr;                 // [B,H] (c)
  T* gates = nullptr;                   // [B,T,S*H] saved for backward, or null (inference)
  T* cells = nullptr;                   // [B,T,H]  saved for backward, or null (inference) (c)
};

template <typename T>
struct BackwardArgs {
  Dims dims;
  const T* inputs = nullptr;            // [B,T,I]
  const T* kernel = nullptr;            // [I,G*H]
  const T* recurrent_kernel = nullptr;  // [H,G*H]
  const bool* resets = nullptr;         // [B,T] or null
  const bool* mask = nullptr;           // [B,T] or null
  const T* h0 = nullptr;                // [B,H] or null
  const T* c0 = nullptr;                // [B,H] or null (c)
  const T* recurrent_dropout_mask = nullptr;  // [B,H] or null: the forward's mask
  const T* outputs = nullptr;           // [B,T,H]  forward result
  const T* gates = nullptr;             // [B,T,S*H] saved by forward
  const T* cells = nullptr;             // [B,T,H]  saved by forward (c)
  const T* d_outputs = nullptr;         // [B,T,H] or null (zeros)
  const T* d_h_final = nullptr;         // [B,H] or null (zeros)
  const T* d_c_final = nullptr;         // [B,H] or null (zeros) (c)
  T* d_inputs = nullptr;                // [B,T,I]
  T* d_kernel = nullptr;                // [I,G*H]
  T* d_recurrent_kernel = nullptr;      // [H,G*H]
  T* d_bias = nullptr;                  // [bias_rows*G*H]
  T* d_h0 = nullptr;                    // [B,H]
  T* d_c0 = nullptr;                    // [B,H] (c)
};

// Recurrent dropout: with a mask m, every step's recurrent GEMM reads m * h_in, where h_in is
// the (post-reset) state entering the step (LSTM: z = x_t K + (m * h_in) R + b; GRU: the same
// for z and r, and (r * (m * h_in)) U_n without reset_after); h itself, the outputs and the
// carried state are not scaled. m holds 0 or 1/(1-rate) for inverted dropout, but any values
// are allowed; it gets no gradient.
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
