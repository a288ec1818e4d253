// CPU backward of the recurrence engine (one build per instruction set, inside its namespace),
// generic over the cell: the plan and workspace layout, the rebuilt recurrent inputs, one
// step's fused elementwise pass for a row, the time loop of a row slab and of the column split,
// and backward() itself (the weight and input gradients as large GEMMs after the loop).
//
// The running gradient dh is wrt the state h leaving the step being processed, in h's own
// space: a step's cell pass writes what reaches h_prev directly (the GRU's z * h_prev; nothing
// for the LSTM), the recurrent GEMM adds d_rec @ R^T, and with recurrent dropout (the GEMM read
// m * h) a pass after the GEMM makes it m * (GEMM) + direct.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cpu_gemm_impl.h"
#include "cpu_numeric.h"
#include "cpu_vector.h"
#include "recurrence_cpu.h"
#include "recurrence_cpu_common.h"
#include "recurrence_cpu_forward.h"
#include "recurrence_cpu_split.h"
#include "static_switch.h"

namespace resetlstm {
namespace cpu {
namespace RLSTM_ISA {

template <typename Cell, typename T>
struct BackwardPlan : BackwardArgs<T> {
  using A = acc_t<T>;
  PackedB<T> rk_t;        // the first-stage columns of recurrent_kernel, transposed, packed
  PackedB<T> rk_last_t;   // two-stage cells: the last gate's, transposed, packed
  T* dz = nullptr;        // [B,T,G*H] the recurrent side's pre-activation gradients (the input
                          // side's too, unless the cell splits them)
  T* dz_x = nullptr;      // [B,T,G*H] kSplitInputGrad: the input side's (its last gate differs)
  T* h_in = nullptr;      // [B,T,H]  the state entering each step (post-reset)
  T* h_op = nullptr;      // [B,T,H]  what the recurrent GEMM read: m * h_in (h_in itself
                          //          without dropout, or in place when the cell needs no h_in)
  T* gated_in = nullptr;  // [B,T,H]  two-stage cells: what the second GEMM read, r * h_op
  A* dh = nullptr;        // [B,H]    running gradients; float: d_h0 / d_c0 themselves
  A* dc = nullptr;
  A* dh_direct = nullptr;  // [B,H]   with dropout: a step's direct gradient, until the GEMM is in
  A* d_op = nullptr;      // [B,H]    two-stage cells: the second GEMM's backward
  A* dy_carry = nullptr;  // [B,H]    with a mask: gradient reaching the previous output
  A* d_kernel = nullptr;  // widened types: float results of the weight and input GEMMs,
  A* d_rk = nullptr;      //   rounded into the outputs at the end; float: the outputs
  A* d_inputs = nullptr;
  A* weight_partials = nullptr;  // gemm_tn_pair's partial sums
};

template <typename Cell, typename T>
void backward_layout(const Dims& d, bool has_mask, bool dropout, void* base,
                     BackwardPlan<Cell, T>* plan, int64_t* bytes) {
  using A = acc_t<T>;
  constexpr int G = Cell::kGates;
  const int64_t BT = d.B * d.T, GH = G * d.H;
  constexpr bool wide = kWidened<T>;
  // The GRU's cell reads h_in itself, so the GEMM's m * h_in needs its own array.
  const bool separate_op = dropout && Cell::kDirectGrad;
  Carver w(base);
  T* packed = w.take<T>(packed_b_size<T>(kFirstStageGates<Cell> * d.H, d.H));
  T* packed_last = w.take<T>(packed_b_size<T>(d.H, d.H), Cell::kTwoStage);
  T* dz = w.take<T>(BT * GH);
  T* dz_x = w.take<T>(BT * GH, Cell::kSplitInputGrad);
  T* h_in = w.take<T>(BT * d.H);
  T* h_op = w.take<T>(BT * d.H, separate_op);
  T* gated_in = w.take<T>(BT * d.H, Cell::kTwoStage);
  A* dy_carry = w.take<A>(d.B * d.H, has_mask);
  A* dh = w.take<A>(d.B * d.H, wide);
  A* dc = w.take<A>(d.B * d.H, wide && Cell::kCellState);
  A* dh_direct = w.take<A>(d.B * d.H, dropout);
  A* d_op = w.take<A>(d.B * d.H, Cell::kTwoStage);
  A* dk = w.take<A>(d.I * GH, wide);
  A* drk = w.take<A>(d.H * GH, wide);
  A* dx = w.take<A>(BT * d.I, wide);
  A* partials = w.take<A>((kMaxKSplits - 1) * (d.I + d.H) * GH);
  *bytes = w.bytes();
  if (!plan) return;
  plan->weight_partials = partials;
  plan->rk_t.data = packed;
  plan->rk_last_t.data = packed_last;
  plan->dz = dz, plan->dz_x = Cell::kSplitInputGrad ? dz_x : dz;
  plan->h_in = h_in, plan->dy_carry = dy_carry;
  plan->h_op = separate_op ? h_op : h_in;
  plan->gated_in = gated_in, plan->dh_direct = dh_direct, plan->d_op = d_op;
  if constexpr (wide) {
    plan->dh = dh, plan->dc = dc, plan->d_kernel = dk, plan->d_rk = drk, plan->d_inputs = dx;
  } else {
    plan->dh = plan->d_h0, plan->dc = plan->d_c0;
    plan->d_kernel = plan->BackwardArgs<T>::d_kernel;
    plan->d_rk = plan->d_recurrent_kernel;
    plan->d_inputs = plan->BackwardArgs<T>::d_inputs;
  }
}

template <typename Cell, typename T>
int64_t cell_backward_workspace_size(const Dims& d, bool has_mask) {
  int64_t bytes;
  backward_layout<Cell, T>(d, has_mask, /*dropout=*/true, nullptr, nullptr, &bytes);
  return ceil_div(bytes, sizeof(T));
}

// Rebuilds the state entering every step, h_in (post-reset), for rows [b0, b1): h0 (or zero)
// at step 0; after an active step that step's output (the state it left), after a masked one the
// state it carried. With recurrent dropout also what the recurrent GEMM read, m * h_in (in
// place when the cell needs no h_in of its own: the LSTM).
template <typename Cell, typename T, bool kHasResets, bool kHasMask>
void rebuild_recurrent_inputs(const BackwardPlan<Cell, T>& a, int64_t b0, int64_t b1) {
  const Dims& d = a.dims;
  const int64_t H = d.H;
  const RowIndex row{d.B, d.T, d.time_major};
  if (d.T == 0) return;
  for (int64_t b = b0; b < b1; ++b) {
    const bool reset0 = kHasResets && a.resets[row(b, 0)];
    T* first = a.h_in + row(b, 0) * H;
    for (int64_t j = 0; j < H; ++j) first[j] = a.h0 && !reset0 ? a.h0[b * H + j] : T{};
    for (int64_t t = 0; t + 1 < d.T; ++t) {
      const int64_t r = row(b, t), rn = row(b, t + 1);
      T* next = a.h_in + rn * H;
      const T* from = step_active<kHasMask>(a, row, b, t) ? a.outputs + r * H : a.h_in + r * H;
      if (kHasResets && a.resets[rn]) {
        for (int64_t j = 0; j < H; ++j) next[j] = T{};
      } else {
        std::copy(from, from + H, next);
      }
    }
    if (const T* m = a.recurrent_dropout_mask)  // after the row: masked steps read h_in above
      for (int64_t t = 0; t < d.T; ++t) {
        const int64_t r = row(b, t);
        scale_row(m + b * H, a.h_in + r * H, H, a.h_op + r * H);
      }
  }
}

// Row b, units [j0, j1): the running gradients start from d_h_final / d_c_final.
template <typename Cell, typename T, bool kHasMask>
inline void backward_init_row(const BackwardPlan<Cell, T>& a, int64_t b, int64_t j0,
                              int64_t j1) {
  using A = acc_t<T>;
  const int64_t H = a.dims.H;
  for (int64_t j = b * H + j0; j < b * H + j1; ++j) {
    a.dh[j] = a.d_h_final ? to_acc(a.d_h_final[j]) : A(0);
    if constexpr (Cell::kCellState) a.dc[j] = a.d_c_final ? to_acc(a.d_c_final[j]) : A(0);
    if (kHasMask) a.dy_carry[j] = A(0);
  }
}

// Step t's backward for row b, units [j0, j1): dh holds the gradient wrt the state leaving the
// step (from step t+1, cut by its reset), dc the cell state's. Writes the step's pre-activation
// gradients and leaves in dh what reaches h_prev directly (in dh_direct with dropout, dh then
// zero), for the GEMM to add to.
template <typename Cell, typename T, bool kHasResets, bool kHasMask, bool kHasDy>
inline void backward_row_step(const BackwardPlan<Cell, T>& a, const RowIndex& row, int64_t b,
                              int64_t t, int64_t j0, int64_t j1) {
  using A = acc_t<T>;
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  const Dims& d = a.dims;
  const int64_t H = d.H;
  const int64_t r = row(b, t);
  const bool reset_next = kHasResets && t + 1 < d.T && a.resets[row(b, t + 1)];
  const bool reset = kHasResets && a.resets[r];
  A* dhb = a.dh + b * H;
  A* dcb = Cell::kCellState ? a.dc + b * H : nullptr;
  A* direct = a.recurrent_dropout_mask ? a.dh_direct + b * H : dhb;
  T* dz = a.dz + r * G * H;
  const T* dy = kHasDy ? a.d_outputs + r * H : nullptr;
  A* dyc = kHasMask ? a.dy_carry + b * H : nullptr;
  if (step_active<kHasMask>(a, row, b, t)) {
    const T* saved = a.gates + r * S * H;
    const T* cell = Cell::kCellState ? a.cells + r * H : nullptr;
    const T* c_prev = nullptr;
    if constexpr (Cell::kCellState) {
      c_prev = t > 0 ? a.cells + row(b, t - 1) * H : a.c0 ? a.c0 + b * H : nullptr;
      if (kHasResets && reset) c_prev = nullptr;  // the step starts from c = 0
    }
    const T* h_prev = a.h_in + r * H;
    T* dz_x = Cell::kSplitInputGrad ? a.dz_x + r * G * H : nullptr;
    if (reset_next) std::fill(dhb + j0, dhb + j1, A(0));  // kept out of the loop: see forward
    // Two instantiations rather than a select on c_prev in the loop, so both vectorize.
    auto cell_loop = [&](auto has_c_in) {
      int64_t j = j0;
      if constexpr (std::is_same_v<A, float>) {  // whole vectors, then the scalar loop below
        constexpr int L = kFloatLanes;
        for (; j + L <= j1; j += L) {
          VecF dh_t = vload(dhb + j);
          if (kHasDy) dh_t += vload(dy + j);
          if (kHasMask) dh_t += vload(dyc + j);
          VecF sv[S], d_rec[G], d_in{}, dh_dir{}, dc_in{};
          for (int k = 0; k < S; ++k) sv[k] = vload(saved + k * H + j);
          const VecF c_in = has_c_in ? vload(c_prev + j) : VecF{};
          Cell::template backward<VecF, VecActivations>(
              sv, vload(h_prev + j), c_in, Cell::kCellState ? vload(cell + j) : VecF{}, dh_t,
              Cell::kCellState ? vload(dcb + j) : VecF{}, d_rec, &d_in, &dh_dir, &dc_in);
          for (int g = 0; g < G; ++g) vstore(dz + g * H + j, d_rec[g]);
          if constexpr (Cell::kSplitInputGrad) {
            for (int g = 0; g + 1 < G; ++g) vstore(dz_x + g * H + j, d_rec[g]);
            vstore(dz_x + (G - 1) * H + j, d_in);
          }
          if constexpr (Cell::kCellState) vstore(dcb + j, dc_in);
          if (direct != dhb) vstore(dhb + j, VecF{});  // the GEMM accumulates here next
          vstore(direct + j, dh_dir);
          if (kHasMask) vstore(dyc + j, VecF{});
        }
      }
#pragma GCC ivdep
      for (; j < j1; ++j) {
        A dh_t = dhb[j];
        if (kHasDy) dh_t += to_acc(dy[j]);
        if (kHasMask) dh_t += dyc[j];
        A sv[S], d_rec[G], d_in = A(0), dh_dir = A(0), dc_in = A(0);
        for (int k = 0; k < S; ++k) sv[k] = to_acc(saved[k * H + j]);
        const A c_in = has_c_in ? to_acc(c_prev[j]) : A(0);
        Cell::template backward<A, Activations<A>>(
            sv, to_acc(h_prev[j]), c_in, Cell::kCellState ? to_acc(cell[j]) : A(0), dh_t,
            Cell::kCellState ? dcb[j] : A(0), d_rec, &d_in, &dh_dir, &dc_in);
        for (int g = 0; g < G; ++g) dz[g * H + j] = from_acc<T>(d_rec[g]);
        if constexpr (Cell::kSplitInputGrad) {
          for (int g = 0; g + 1 < G; ++g) dz_x[g * H + j] = from_acc<T>(d_rec[g]);
          dz_x[(G - 1) * H + j] = from_acc<T>(d_in);
        }
        if constexpr (Cell::kCellState) dcb[j] = dc_in;
        if (direct != dhb) dhb[j] = A(0);  // the GEMM accumulates here next
        direct[j] = dh_dir;
        if (kHasMask) dyc[j] = A(0);
      }
    };
    if (c_prev) cell_loop(std::true_type{});
    else cell_loop(std::false_type{});
    if constexpr (Cell::kCellState)
      if (reset) std::fill(dcb + j0, dcb + j1, A(0));  // no gradient crosses a reset
  } else if constexpr (kHasMask) {
    // Masked step: the state passes through, the output gradient goes to y_{t-1}.
    for (int gate = 0; gate < G; ++gate) {
      std::fill(dz + gate * H + j0, dz + gate * H + j1, T{});
      if constexpr (Cell::kSplitInputGrad)
        std::fill(a.dz_x + r * G * H + gate * H + j0, a.dz_x + r * G * H + gate * H + j1, T{});
    }
    for (int64_t j = j0; j < j1; ++j) {
      if (reset_next) dhb[j] = A(0);
      if constexpr (Cell::kCellState)
        if (reset) dcb[j] = A(0);
      if (kHasDy) dyc[j] += to_acc(dy[j]);
    }
  }
}

// Two-stage cells, row b of step t after the second GEMM's backward (d_op): the reset gate's
// gradient, what reaches h_prev through r * g, and what the second GEMM read (for its weight
// gradient).
template <typename Cell, typename T, bool kHasMask>
inline void second_stage_backward_row(const BackwardPlan<Cell, T>& a, const RowIndex& row,
                                      int64_t b, int64_t t) {
  using A = acc_t<T>;
  const int64_t H = a.dims.H;
  const int64_t r = row(b, t);
  T* gated = a.gated_in + r * H;
  if (!step_active<kHasMask>(a, row, b, t)) {  // its dz are zero; what it read must be finite
    std::fill(gated, gated + H, T{});
    return;
  }
  const T* saved = a.gates + r * Cell::kSaved * H;
  const T* g = a.h_op + r * H;
  const T* m = a.recurrent_dropout_mask ? a.recurrent_dropout_mask + b * H : nullptr;
  A* direct = (a.recurrent_dropout_mask ? a.dh_direct : a.dh) + b * H;
  const A* d_op = a.d_op + b * H;
  T* dz_r = a.dz + r * Cell::kGates * H + H;
  for (int64_t j = 0; j < H; ++j) {
    const A sv[2] = {A(0), to_acc(saved[H + j])};  // stage_backward reads saved[1] (r)
    A dir = direct[j];
    dz_r[j] = from_acc<T>(Cell::stage_backward(sv, to_acc(g[j]), m ? to_acc(m[j]) : A(1),
                                               d_op[j], &dir));
    direct[j] = dir;
    gated[j] = from_acc<T>(sv[1] * to_acc(g[j]));
  }
}

// With recurrent dropout, after a step's GEMM (which accumulated the gradient wrt m * h_prev)
// for row b, units [j0, j1) of an active step: dh = m * dh + the direct gradient.
template <typename T, bool kHasMask, typename Plan>
inline void apply_dropout_row(const Plan& a, const RowIndex& row, int64_t b, int64_t t,
                              int64_t j0, int64_t j1) {
  using A = acc_t<T>;
  if (!a.recurrent_dropout_mask || !step_active<kHasMask>(a, row, b, t)) return;
  const int64_t H = a.dims.H;
  const T* m = a.recurrent_dropout_mask + b * H;
  A* dh = a.dh + b * H;
  const A* direct = a.dh_direct + b * H;
#pragma GCC ivdep
  for (int64_t j = j0; j < j1; ++j) dh[j] = to_acc(m[j]) * dh[j] + direct[j];
}

// Row b, units [j0, j1), after step 0: dh is wrt the state entering step 0, which is h0, or
// zero after a reset (then nothing reaches h0).
template <typename Cell, typename T, bool kHasResets>
inline void backward_finish_row(const BackwardPlan<Cell, T>& a, const RowIndex& row, int64_t b,
                                int64_t j0, int64_t j1) {
  using A = acc_t<T>;
  const Dims& d = a.dims;
  const int64_t H = d.H;
  A* dhb = a.dh + b * H;
  if (kHasResets && d.T > 0 && a.resets[row(b, 0)]) std::fill(dhb + j0, dhb + j1, A(0));
  if constexpr (kWidened<T>)
    for (int64_t j = b * H + j0; j < b * H + j1; ++j) {
      a.d_h0[j] = from_acc<T>(a.dh[j]);
      if constexpr (Cell::kCellState) a.d_c0[j] = from_acc<T>(a.dc[j]);
    }
}

// Rows [b0, b1), the steps s0 <= s < s1 of the backward loop, which runs time backwards (step s
// is t = T-1-s): a chunk of the row split (run_slabs). The first chunk rebuilds the rows'
// recurrent inputs and starts from the final state's gradients; the last leaves the initial
// state's.
template <typename Cell, typename T, bool kHasResets, bool kHasMask, bool kHasDy>
void backward_slab(const BackwardPlan<Cell, T>& a, int64_t b0, int64_t b1, int64_t s0,
                   int64_t s1, bool first, bool last) {
  constexpr int G = Cell::kGates;
  const Dims& d = a.dims;
  const int64_t H = d.H, GH = G * H;
  const RowIndex row{d.B, d.T, d.time_major};
  if (first) {
    rebuild_recurrent_inputs<Cell, T, kHasResets, kHasMask>(a, b0, b1);
    for (int64_t b = b0; b < b1; ++b) backward_init_row<Cell, T, kHasMask>(a, b, 0, H);
  }
  const int64_t ldz = row.batch_stride() * GH;
  for (int64_t t = d.T - 1 - s0; t >= d.T - s1; --t) {
    for (int64_t b = b0; b < b1; ++b)
      backward_row_step<Cell, T, kHasResets, kHasMask, kHasDy>(a, row, b, t, 0, H);
    const T* dz = a.dz + row(b0, t) * GH;
    if constexpr (Cell::kTwoStage) {  // d_op = dz[:, last gate] @ R[:, last gate]^T
      gemm_packed_serial(b1 - b0, dz + (G - 1) * H, ldz, a.rk_last_t, a.d_op + b0 * H, H,
                         /*accumulate=*/false);
      for (int64_t b = b0; b < b1; ++b) second_stage_backward_row<Cell, T, kHasMask>(a, row, b, t);
    }
    // dh[b0:b1] += dz[b0:b1, first-stage gates] @ recurrent_kernel[:, first-stage gates]^T
    gemm_packed_serial(b1 - b0, dz, ldz, a.rk_t, a.dh + b0 * H, H, /*accumulate=*/true);
    for (int64_t b = b0; b < b1; ++b) apply_dropout_row<T, kHasMask>(a, row, b, t, 0, H);
  }
  if (last)
    for (int64_t b = b0; b < b1; ++b) backward_finish_row<Cell, T, kHasResets>(a, row, b, 0, H);
}

// Column split of the backward time loop (see forward_columns; not two-stage cells). Item
// (s, u), t = T-1-s: dh[:, u] += dz_{t+1} @ R^T[:, u] (every unit of dz_{t+1} is ready: the
// barrier) and its dropout pass, then step t's cell backward for units u. A last step s = T
// runs only the GEMM with dz_0.
template <typename Cell, typename T, bool kHasResets, bool kHasMask, bool kHasDy>
void backward_columns(const TaskRunner& runner, const BackwardPlan<Cell, T>& a, int64_t units) {
  const Dims& d = a.dims;
  const int64_t B = d.B, H = d.H, T_ = d.T, GH = Cell::kGates * H;
  const RowIndex row{d.B, d.T, d.time_major};
  for (int64_t b = 0; b < B; ++b) backward_init_row<Cell, T, kHasMask>(a, b, 0, H);
  const int64_t blocks = ceil_div(H, units), ldz = row.batch_stride() * GH;
  StepQueue queue(T_ + 1, blocks);
  runner.run(runner.num_threads(), [&](int64_t) {
    for (int64_t item = queue.claim(); item >= 0; item = queue.claim()) {
      const int64_t s = item / blocks, t = T_ - 1 - s;
      const int64_t j0 = (item % blocks) * units, j1 = std::min(H, j0 + units);
      queue.wait_for_step(s);
      if (s > 0) {
        gemm_packed_serial(B, a.dz + row(0, t + 1) * GH, ldz, a.rk_t, a.dh, H,
                           /*accumulate=*/true, j0, j1 - j0);
        for (int64_t b = 0; b < B; ++b) apply_dropout_row<T, kHasMask>(a, row, b, t + 1, j0, j1);
      }
      if (t >= 0) {
        for (int64_t b = 0; b < B; ++b)
          backward_row_step<Cell, T, kHasResets, kHasMask, kHasDy>(a, row, b, t, j0, j1);
      } else {
        for (int64_t b = 0; b < B; ++b)
          backward_finish_row<Cell, T, kHasResets>(a, row, b, j0, j1);
      }
      queue.finish();
    }
  });
}

// out[i] = from_acc(in[i]) over n values, in parallel (widened types' GEMM results).
template <typename T>
void round_into(const TaskRunner& runner, const acc_t<T>* in, int64_t n, T* out) {
  const int64_t block = 1 << 16;
  runner.run(ceil_div(n, block), [&](int64_t task) {
    const int64_t i1 = std::min(n, (task + 1) * block);
    for (int64_t i = task * block; i < i1; ++i) out[i] = from_acc<T>(in[i]);
  });
}

// out[j] = sum over `rows` rows of src[r * ld + j], j < cols, in parallel over column blocks.
template <typename T>
void column_sums(const TaskRunner& runner, const T* src, int64_t ld, int64_t rows, int64_t cols,
                 T* out) {
  using A = acc_t<T>;
  const int64_t col_block = 256;
  runner.run(ceil_div(cols, col_block), [&](int64_t task) {
    const int64_t j0 = task * col_block, j1 = std::min(cols, j0 + col_block);
    A sums[col_block] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = src + r * ld;
      for (int64_t j = j0; j < j1; ++j) sums[j - j0] += to_acc(row[j]);
    }
    for (int64_t j = j0; j < j1; ++j) out[j] = from_acc<T>(sums[j - j0]);
  });
}

// The weight, input and bias gradients from the step gradients, over all B*T rows:
//   d_kernel = inputs^T dz_x,   d_inputs = dz_x kernel^T,   d_bias[:G*H] = column sums of dz_x
//   d_recurrent_kernel = h_op^T dz (a two-stage cell's last gate: gated_in^T dz, what its
//   second GEMM read),   d_bias[G*H:] = column sums of dz (cells with a recurrent bias)
// (dz_x is dz unless the cell splits the two sides.) Where both weight gradients read the same
// dz columns, one pass over them serves both (gemm_tn_pair).
template <typename Cell, typename T>
void weight_and_input_gradients(const TaskRunner& runner, const BackwardPlan<Cell, T>& a) {
  constexpr int G = Cell::kGates;
  const Dims& d = a.dims;
  const int64_t BT = d.B * d.T, I = d.I, H = d.H, GH = G * H;
  acc_t<T>* part = a.weight_partials;
  if constexpr (Cell::kSplitInputGrad) {
    gemm_tn_pair<T>(runner, BT, GH, a.inputs, I, nullptr, 0, a.dz_x, GH, a.d_kernel, nullptr, GH,
                    part);
    gemm_tn_pair<T>(runner, BT, GH, a.h_op, H, nullptr, 0, a.dz, GH, a.d_rk, nullptr, GH, part);
  } else if constexpr (Cell::kTwoStage) {
    const int64_t first = (G - 1) * H;
    gemm_tn_pair(runner, BT, first, a.inputs, I, a.h_op, H, a.dz, GH, a.d_kernel, a.d_rk, GH,
                 part);
    gemm_tn_pair(runner, BT, H, a.inputs, I, a.gated_in, H, a.dz + first, GH, a.d_kernel + first,
                 a.d_rk + first, GH, part);
  } else {
    gemm_tn_pair(runner, BT, GH, a.inputs, I, a.h_op, H, a.dz, GH, a.d_kernel, a.d_rk, GH, part);
  }
  gemm(runner, false, true, BT, I, GH, a.dz_x, GH, a.kernel, GH, a.d_inputs, I, false);
  if constexpr (kWidened<T>) {
    round_into(runner, a.d_kernel, I * GH, a.BackwardArgs<T>::d_kernel);
    round_into(runner, a.d_rk, H * GH, a.d_recurrent_kernel);
    round_into(runner, a.d_inputs, BT * I, a.BackwardArgs<T>::d_inputs);
  }
  column_sums(runner, a.dz_x, GH, BT, GH, a.d_bias);
  if constexpr (Cell::kBiasRows > 1) column_sums(runner, a.dz, GH, BT, GH, a.d_bias + GH);
}

template <typename Cell, typename T>
void cell_backward(const TaskRunner& runner, const BackwardArgs<T>& args, T* workspace) {
  constexpr int G = Cell::kGates;
  const Dims& d = args.dims;
  const int64_t B = d.B, H = d.H, GH = G * H;
  BackwardPlan<Cell, T> plan;
  static_cast<BackwardArgs<T>&>(plan) = args;
  int64_t bytes;
  backward_layout<Cell, T>(d, args.mask != nullptr, args.recurrent_dropout_mask != nullptr,
                           workspace, &plan, &bytes);
  plan.rk_t = pack_b_full(runner, true, args.recurrent_kernel, GH, kFirstStageGates<Cell> * H, H,
                          const_cast<T*>(plan.rk_t.data));
  if constexpr (Cell::kTwoStage)
    plan.rk_last_t = pack_b_full(runner, true, args.recurrent_kernel + (G - 1) * H, GH, H, H,
                                 const_cast<T*>(plan.rk_last_t.data));

  const int64_t rows = slab_rows<T>(B, runner.num_threads());
  const Split split = choose_split<Cell, T>(d, runner.num_threads());
  RLSTM_BOOL_SWITCH(args.resets != nullptr, kHasResets, [&] {
    RLSTM_BOOL_SWITCH(args.mask != nullptr, kHasMask, [&] {
      RLSTM_BOOL_SWITCH(args.d_outputs != nullptr, kHasDy, [&] {
        if (split.columns) {
          runner.run(ceil_div(B, rows), [&](int64_t s) {
            rebuild_recurrent_inputs<Cell, T, kHasResets, kHasMask>(plan, s * rows,
                                                                    std::min(B, (s + 1) * rows));
          });
          backward_columns<Cell, T, kHasResets, kHasMask, kHasDy>(runner, plan, split.units);
          return;
        }
        run_slabs(runner, B, d.T, rows,
                  [&](int64_t b0, int64_t b1, int64_t s0, int64_t s1, bool first, bool last) {
                    backward_slab<Cell, T, kHasResets, kHasMask, kHasDy>(plan, b0, b1, s0, s1,
                                                                         first, last);
                  });
      });
    });
  });
  weight_and_input_gradients(runner, plan);
}

}  // namespace RLSTM_ISA
}  // namespace cpu
}  // namespace resetlstm
