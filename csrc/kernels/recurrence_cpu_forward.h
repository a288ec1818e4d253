// CPU forward of the recurrence engine (one build per instruction set, inside its namespace),
// generic over the cell (lstm_cell.h, gru_cell.h): the plan and workspace layout, one step's
// fused elementwise pass for a row, the time loop of a row slab and of the column split, and
// forward() itself.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu_gemm_impl.h"
#include "cpu_numeric.h"
#include "cpu_vector.h"
#include "recurrence_cpu.h"
#include "recurrence_cpu_common.h"
#include "recurrence_cpu_split.h"
#include "static_switch.h"

namespace resetlstm {
namespace cpu {
namespace RLSTM_ISA {

// Columns of the recurrent kernel in the first (or only) GEMM of a step; a two-stage cell's last
// gate reads r * h in a second GEMM.
template <typename Cell>
constexpr int kFirstStageGates = Cell::kTwoStage ? Cell::kGates - 1 : Cell::kGates;

template <typename Cell, typename T>
struct ForwardPlan : ForwardArgs<T> {
  using A = acc_t<T>;
  PackedB<T> rk;        // the recurrent kernel's first-stage columns, packed once
  PackedB<T> rk_last;   // two-stage cells: the last gate's columns, packed once
  A* z = nullptr;       // [B,T,G*H] the input projection x W; for the LSTM in float training
                        // the saved gates output itself (overwritten in place)
  A* h = nullptr;       // [B,H] running state (post-reset); float: h_final itself
  A* c = nullptr;       // [B,H]                            float: c_final itself (cell state)
  T* h_gemm = nullptr;  // [B,H] the recurrent GEMM's input: (m *) h as T; float without
                        // dropout: h itself
  T* h_gemm2 = nullptr;  // [2,B,H] the column-split loop's GEMM inputs (even, odd steps)
  A* zr = nullptr;       // [B,G*H] the current step's recurrent products h R, kept apart from z
  A* zx = nullptr;       // [B,G*H] per step, cells that keep the projections apart: x_t W
  T* gated = nullptr;    // [B,H] two-stage cells: the second GEMM's input r * (m *) h
  // Per-step input projection (small weights): z stays null, each step computes x_t W (into zr
  // for cells that read only the sum, else into zx) with the packed kernel.
  PackedB<T> k;
  const A* zeros = nullptr;  // [G*H]
};

// Whether the LSTM's pre-activations may live in the gates output (float training): each unit
// reads its G values before writing its saved ones at the same places.
template <typename Cell, typename T>
constexpr bool kZInGates = !kWidened<T> && Cell::kSumsProjections && Cell::kSaved == Cell::kGates;

// Workspace: the packed recurrent kernel; the input projection unless it is the gates output;
// widened types: the float state; GEMM input buffers (used when the GEMM input differs from the
// state, recurrent dropout or a widened type, and by the column split); one step's recurrent
// products [B,G*H] and, for cells that keep them apart, input projections; the second GEMM's
// input; the packed input kernel and a zero row (per-step input projection; its z is then left
// untouched, so the pages are never faulted in).
template <typename Cell, typename T>
void forward_layout(const Dims& d, bool training, bool dropout, void* base,
                    ForwardPlan<Cell, T>* plan, int64_t* bytes) {
  using A = acc_t<T>;
  constexpr int G = Cell::kGates;
  const int64_t GH = G * d.H;
  Carver w(base);
  T* packed = w.take<T>(packed_b_size<T>(d.H, kFirstStageGates<Cell> * d.H));
  T* packed_last = w.take<T>(packed_b_size<T>(d.H, d.H), Cell::kTwoStage);
  A* z = w.take<A>(d.B * d.T * GH, !(training && kZInGates<Cell, T>));
  A* h = w.take<A>(d.B * d.H, kWidened<T>);
  A* c = w.take<A>(d.B * d.H, kWidened<T> && Cell::kCellState);
  // two buffers: the column-split loop reads one step's input while writing the next's
  T* h_gemm = w.take<T>(2 * d.B * d.H);
  A* zr = w.take<A>(d.B * GH);
  A* zx = w.take<A>(d.B * GH, !Cell::kSumsProjections);
  T* gated = w.take<T>(d.B * d.H, Cell::kTwoStage);
  T* k_packed = w.take<T>(packed_b_size<T>(d.I, GH));
  A* zeros = w.take<A>(GH);
  *bytes = w.bytes();
  if (!plan) return;
  plan->h_gemm2 = h_gemm;
  plan->zr = zr;
  plan->gated = gated;
  plan->k.data = k_packed;
  plan->zeros = zeros;
  plan->rk.data = packed;
  plan->rk_last.data = packed_last;
  plan->z = training && kZInGates<Cell, T> ? reinterpret_cast<A*>(plan->gates) : z;
  plan->zx = zx;  // used only with a per-step input projection
  if constexpr (kWidened<T>) {
    plan->h = h, plan->c = c;
  } else {
    plan->h = plan->h_final, plan->c = plan->c_final;
  }
  plan->h_gemm = h_gemm;
  if constexpr (!kWidened<T>)
    if (!dropout) plan->h_gemm = plan->h;
}

template <typename Cell, typename T>
int64_t cell_forward_workspace_size(const Dims& d, bool training) {
  int64_t bytes;
  forward_layout<Cell, T>(d, training, /*dropout=*/true, nullptr, nullptr, &bytes);
  return ceil_div(bytes, sizeof(T));
}

// The recurrent GEMM's input for one row when it is not the state itself: (m *) h as T.
template <typename T>
inline void gemm_input_row(const T* m, const acc_t<T>* h, int64_t n, T* out) {
  if (m) {
    scale_row(m, h, n, out);
  } else {
#pragma GCC ivdep
    for (int64_t j = 0; j < n; ++j) out[j] = from_acc<T>(h[j]);
  }
}

// Row b's state entering step 0 (h0/c0, or zero when absent or reset at step 0), and, when
// `gemm_input` is given, the recurrent GEMM's input derived from it.
template <typename Cell, typename T, bool kHasResets>
inline void init_state_row(const ForwardPlan<Cell, T>& a, const RowIndex& row, int64_t b,
                           T* gemm_input) {
  using A = acc_t<T>;
  const int64_t H = a.dims.H;
  const bool reset0 = kHasResets && a.dims.T > 0 && a.resets[row(b, 0)];
  for (int64_t j = b * H; j < (b + 1) * H; ++j) {
    a.h[j] = a.h0 && !reset0 ? to_acc(a.h0[j]) : A(0);
    if constexpr (Cell::kCellState) a.c[j] = a.c0 && !reset0 ? to_acc(a.c0[j]) : A(0);
  }
  const T* m = a.recurrent_dropout_mask;
  if (gemm_input) gemm_input_row(m ? m + b * H : nullptr, a.h + b * H, H, gemm_input + b * H);
}

// Widened types: the float state [i0, i1) rounded into h_final / c_final (float and double run
// in those outputs directly).
template <typename Cell, typename T>
inline void store_final_state(const ForwardPlan<Cell, T>& a, int64_t i0, int64_t i1) {
  if constexpr (kWidened<T>)
    for (int64_t i = i0; i < i1; ++i) {
      a.h_final[i] = from_acc<T>(a.h[i]);
      if constexpr (Cell::kCellState) a.c_final[i] = from_acc<T>(a.c[i]);
    }
}

// The input projection row of (b, t) the cell reads: z (hoisted), zx (per step, kept apart),
// or zeros (per step, summed into zr).
template <typename Cell, typename T>
inline const acc_t<T>* input_projection(const ForwardPlan<Cell, T>& a, int64_t r, int64_t b) {
  const int64_t GH = Cell::kGates * a.dims.H;
  return a.z ? a.z + r * GH : (Cell::kSumsProjections ? a.zeros : a.zx + b * GH);
}

// Loads the cell's operands for units [j, j + width) (V: float/double, or a vector of floats)
// and runs its forward: x W, h R and the biases per gate, the state.
template <typename Cell, typename V, typename Act, typename T, typename Load>
inline void cell_step(const acc_t<T>* x, const acc_t<T>* hh, const T* bias, int64_t H, int64_t j,
                      V h_prev, V c_prev, V* saved, V* h, V* c, Load load) {
  constexpr int G = Cell::kGates;
  V xs[G], hs[G], bs[G], brs[G];
  for (int g = 0; g < G; ++g) {
    xs[g] = load(x + g * H + j);
    hs[g] = load(hh + g * H + j);
    bs[g] = load(bias + g * H + j);
    brs[g] = Cell::kBiasRows > 1 ? load(bias + (G + g) * H + j) : V{};
  }
  Cell::template forward<V, Act>(xs, hs, bs, brs, h_prev, c_prev, saved, h, c);
}

// One step's elementwise pass for row b, hidden units [j0, j1): the cell from x W (z), h R (zr)
// and the biases, its saved activations, the output, then the state for the next step with the
// next step's reset already applied.
template <typename Cell, typename T, bool kHasResets, bool kHasMask, bool kTraining>
inline void forward_row_step(const ForwardPlan<Cell, T>& a, const RowIndex& row, int64_t b,
                             int64_t t, acc_t<T>* h, acc_t<T>* c, int64_t j0, int64_t j1) {
  using A = acc_t<T>;
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  const int64_t H = a.dims.H;
  const int64_t r = row(b, t);
  // x W (all steps, computed up front, or this step's) + this step's h R (zr, still in cache):
  // the GEMM writes zr rather than accumulating into z, which saves z a round trip to memory.
  const A* z = input_projection(a, r, b);
  const A* zr = a.zr + b * G * H;
  T* y = a.outputs + r * H;
  const bool active = step_active<kHasMask>(a, row, b, t);
  const bool reset_next = kHasResets && t + 1 < a.dims.T && a.resets[row(b, t + 1)];
  if (active) {
    // For the LSTM in float training the gates overwrite z in place (same index, read first).
    T* saved_out = kTraining ? a.gates + r * S * H : nullptr;
    T* cells = kTraining && Cell::kCellState ? a.cells + r * H : nullptr;
    int64_t j = j0;
    if constexpr (std::is_same_v<A, float>) {  // whole vectors, then the scalar loop below
      constexpr int L = kFloatLanes;
      const auto load = [](const auto* p) { return vload(p); };
      for (; j + L <= j1; j += L) {
        VecF saved[S], hn, cn{};
        cell_step<Cell, VecF, VecActivations, T>(z, zr, a.bias, H, j, vload(h + j),
                                                 Cell::kCellState ? vload(c + j) : VecF{},
                                                 saved, &hn, &cn, load);
        if (kTraining) {
          for (int k = 0; k < S; ++k) vstore(saved_out + k * H + j, saved[k]);
          if constexpr (Cell::kCellState) vstore(cells + j, cn);
        }
        vstore(y + j, hn);
        vstore(h + j, hn);
        if constexpr (Cell::kCellState) vstore(c + j, cn);
      }
    }
    const auto load = [](const auto* p) { return to_acc(*p); };
#pragma GCC ivdep
    for (; j < j1; ++j) {
      A saved[S], hn, cn{};
      cell_step<Cell, A, Activations<A>, T>(z, zr, a.bias, H, j, h[j],
                                            Cell::kCellState ? c[j] : A(0), saved, &hn, &cn,
                                            load);
      if (kTraining) {
        for (int k = 0; k < S; ++k) saved_out[k * H + j] = from_acc<T>(saved[k]);
        if constexpr (Cell::kCellState) cells[j] = from_acc<T>(cn);
      }
      y[j] = from_acc<T>(hn);
      h[j] = hn;
      if constexpr (Cell::kCellState) c[j] = cn;
    }
    // Applied after the loop: a select on a loop-invariant flag inside it kept GCC from
    // vectorizing the whole cell (1.6x slower forward with any resets on Zen 5).
    if (reset_next) {
      std::fill(h + j0, h + j1, A(0));
      if constexpr (Cell::kCellState) std::fill(c + j0, c + j1, A(0));
    }
  } else {  // masked: state carried, output repeats the previous output (zeros before any)
    const T* y_prev = t > 0 ? a.outputs + row(b, t - 1) * H : nullptr;
    for (int64_t j = j0; j < j1; ++j) {
      y[j] = y_prev ? y_prev[j] : T{};
      if constexpr (Cell::kCellState)
        if (kTraining) a.cells[r * H + j] = from_acc<T>(c[j]);
      if (reset_next) {
        h[j] = A(0);
        if constexpr (Cell::kCellState) c[j] = A(0);
      }
    }
    // Backward never reads a masked step's saved activations; the first G hold x W + h R
    // without bias (the rest zero), as the CUDA kernels leave them (tests/test_cuda_replay.py
    // compares all outputs).
    if (kTraining)
      for (int k = 0; k < S; ++k) {
        T* g = a.gates + r * S * H + k * H;
        for (int64_t j = j0; j < j1; ++j)
          g[j] = k < G ? from_acc<T>(z[k * H + j] + zr[k * H + j]) : T{};
      }
  }
}

// Two-stage cells, after the first GEMM of a step: row b's input of the second, r * g (g what
// the first GEMM read), for all its units.
template <typename Cell, typename T>
inline void second_stage_input_row(const ForwardPlan<Cell, T>& a, const RowIndex& row,
                                   int64_t b, int64_t t) {
  using A = acc_t<T>;
  const int64_t H = a.dims.H;
  const A* x = input_projection(a, row(b, t), b) + H;  // the reset gate's columns
  const A* hh = a.zr + b * Cell::kGates * H + H;
  const T* bias = a.bias + H;
  const T* g = a.h_gemm + b * H;
  T* out = a.gated + b * H;
  int64_t j = 0;
  if constexpr (std::is_same_v<A, float>) {
    constexpr int L = kFloatLanes;
    for (; j + L <= H; j += L)
      vstore(out + j, Cell::template stage_operand<VecF, VecActivations>(
                          vload(x + j), vload(hh + j), vload(bias + j), vload(g + j)));
  }
  for (; j < H; ++j)
    out[j] = from_acc<T>(Cell::template stage_operand<A, Activations<A>>(
        x[j], hh[j], to_acc(bias[j]), to_acc(g[j])));
}

// Steps [t0, t1) of rows [b0, b1) (a chunk of the row split: run_slabs); the first chunk starts
// the rows from their initial state, the last leaves their final state.
template <typename Cell, typename T, bool kHasResets, bool kHasMask, bool kTraining>
void forward_slab(const ForwardPlan<Cell, T>& a, int64_t b0, int64_t b1, int64_t t0, int64_t t1,
                  bool first, bool last) {
  using A = acc_t<T>;
  constexpr int G = Cell::kGates;
  const Dims& d = a.dims;
  const int64_t H = d.H, GH = G * H;
  const RowIndex row{d.B, d.T, d.time_major};
  A* h = a.h;
  A* c = a.c;
  const T* m = a.recurrent_dropout_mask;
  const bool separate_input = static_cast<void*>(a.h_gemm) != static_cast<void*>(h);
  if (first)
    for (int64_t b = b0; b < b1; ++b)
      init_state_row<Cell, T, kHasResets>(a, row, b, separate_input ? a.h_gemm : nullptr);
  const bool per_step_input = a.z == nullptr;
  for (int64_t t = t0; t < t1; ++t) {
    // zr[b0:b1] = (x_t[b0:b1] @ kernel if per step, for cells that sum +) (m *) h[b0:b1] @ R;
    // cells that keep them apart get x_t W in zx.
    if (per_step_input)
      gemm_packed_serial(b1 - b0, a.inputs + row(b0, t) * d.I, row.batch_stride() * d.I, a.k,
                         Cell::kSumsProjections ? a.zr + b0 * GH : a.zx + b0 * GH, GH,
                         /*accumulate=*/false);
    gemm_packed_serial(b1 - b0, a.h_gemm + b0 * H, H, a.rk, a.zr + b0 * GH, GH,
                       /*accumulate=*/per_step_input && Cell::kSumsProjections);
    if constexpr (Cell::kTwoStage) {  // zr[:, last gate] = (r * (m *) h) @ R[:, last gate]
      for (int64_t b = b0; b < b1; ++b) second_stage_input_row(a, row, b, t);
      gemm_packed_serial(b1 - b0, a.gated + b0 * H, H, a.rk_last, a.zr + b0 * GH + (G - 1) * H,
                         GH, /*accumulate=*/false);
    }
    for (int64_t b = b0; b < b1; ++b) {
      forward_row_step<Cell, T, kHasResets, kHasMask, kTraining>(a, row, b, t, h + b * H,
                                                                 c ? c + b * H : nullptr, 0, H);
      if (separate_input) gemm_input_row(m ? m + b * H : nullptr, h + b * H, H, a.h_gemm + b * H);
    }
  }
  if (last) store_final_state(a, b0 * H, b1 * H);
}

// Column split of the forward time loop (recurrence_cpu_split.h; not two-stage cells): item
// (t, u) computes step t's recurrent products for unit block u (every gate), then its cell
// pass; the GEMM inputs of even and odd steps alternate between two buffers.
template <typename Cell, typename T, bool kHasResets, bool kHasMask, bool kTraining>
void forward_columns(const TaskRunner& runner, const ForwardPlan<Cell, T>& a, int64_t units) {
  const Dims& d = a.dims;
  const int64_t B = d.B, H = d.H, GH = Cell::kGates * H;
  const RowIndex row{d.B, d.T, d.time_major};
  const T* m = a.recurrent_dropout_mask;
  T* in[2] = {a.h_gemm2, a.h_gemm2 + B * H};
  for (int64_t b = 0; b < B; ++b) init_state_row<Cell, T, kHasResets>(a, row, b, in[0]);
  const int64_t blocks = ceil_div(H, units);
  StepQueue queue(d.T, blocks);
  runner.run(runner.num_threads(), [&](int64_t) {
    for (int64_t item = queue.claim(); item >= 0; item = queue.claim()) {
      const int64_t t = item / blocks, j0 = (item % blocks) * units, j1 = std::min(H, j0 + units);
      queue.wait_for_step(t);
      for (int gate = 0; gate < Cell::kGates; ++gate)  // zr[:, gate, j0:j1] = in_t @ R[...]
        gemm_packed_serial(B, in[t % 2], H, a.rk, a.zr, GH, /*accumulate=*/false,
                           gate * H + j0, j1 - j0);
      T* next = in[(t + 1) % 2];
      for (int64_t b = 0; b < B; ++b) {
        forward_row_step<Cell, T, kHasResets, kHasMask, kTraining>(
            a, row, b, t, a.h + b * H, a.c ? a.c + b * H : nullptr, j0, j1);
        gemm_input_row(m ? m + b * H + j0 : nullptr, a.h + b * H + j0, j1 - j0,
                       next + b * H + j0);
      }
      queue.finish();
    }
  });
  store_final_state(a, 0, B * H);
}

template <typename Cell, typename T>
void cell_forward(const TaskRunner& runner, const ForwardArgs<T>& args, T* workspace) {
  constexpr int G = Cell::kGates;
  const Dims& d = args.dims;
  const int64_t B = d.B, T_ = d.T, I = d.I, H = d.H, GH = G * H;
  const bool training = args.gates != nullptr;
  ForwardPlan<Cell, T> plan;
  static_cast<ForwardArgs<T>&>(plan) = args;
  int64_t bytes;
  forward_layout<Cell, T>(d, training, args.recurrent_dropout_mask != nullptr, workspace, &plan,
                          &bytes);
  const int64_t rows = slab_rows<T>(B, runner.num_threads());
  const Split split = choose_split<Cell, T>(d, runner.num_threads());
  if (!split.columns && per_step_input_projection<Cell, T>(d, rows)) {
    plan.z = nullptr;
    plan.k = pack_b_full(runner, false, args.kernel, GH, I, GH, const_cast<T*>(plan.k.data));
    std::fill(const_cast<acc_t<T>*>(plan.zeros), const_cast<acc_t<T>*>(plan.zeros) + GH,
              acc_t<T>(0));
  } else {
    // Hoisted input projection: z = inputs @ kernel for all B*T rows in one GEMM.
    gemm(runner, false, false, B * T_, GH, I, args.inputs, I, args.kernel, GH, plan.z, GH,
         /*accumulate=*/false);
  }
  plan.rk = pack_b_full(runner, false, args.recurrent_kernel, GH, H, kFirstStageGates<Cell> * H,
                        const_cast<T*>(plan.rk.data));
  if constexpr (Cell::kTwoStage)
    plan.rk_last = pack_b_full(runner, false, args.recurrent_kernel + (G - 1) * H, GH, H, H,
                               const_cast<T*>(plan.rk_last.data));
  RLSTM_BOOL_SWITCH(args.resets != nullptr, kHasResets, [&] {
    RLSTM_BOOL_SWITCH(args.mask != nullptr, kHasMask, [&] {
      RLSTM_BOOL_SWITCH(training, kTraining, [&] {
        if (split.columns) {
          forward_columns<Cell, T, kHasResets, kHasMask, kTraining>(runner, plan, split.units);
          return;
        }
        run_slabs(runner, B, T_, rows,
                  [&](int64_t b0, int64_t b1, int64_t t0, int64_t t1, bool first, bool last) {
                    forward_slab<Cell, T, kHasResets, kHasMask, kTraining>(plan, b0, b1, t0, t1,
                                                                           first, last);
                  });
      });
    });
  });
}

}  // namespace RLSTM_ISA
}  // namespace cpu
}  // namespace resetlstm
