// CPU forward/backward of the reset-LSTM, compiled once per instruction set (see lstm_cpu_*.cc).
//
// Work split: batch rows never interact, so each task owns a slab of rows and runs the whole
// time loop for it: per step one GEMM (slab rows of h times the pre-packed recurrent kernel,
// accumulated onto the hoisted input projection) and one fused elementwise pass. No barrier per
// step, no allocation in the loop. The large GEMMs (input projection, weight and input
// gradients) run over all B*T rows at once on the whole runner.
//
// Row (b, t) of any [B,T,*] array is at b*T + t (batch-major) or t*B + b (time-major).
//
// A reset selects zero for the state (and for the gradient crossing it); it never multiplies by
// zero, so a NaN or Inf in one document cannot leak into the next one of the same row.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu_gemm_impl.h"
#include "lstm_cell.h"
#include "lstm_cpu.h"
#include "static_switch.h"

namespace resetlstm {
namespace cpu {
namespace RLSTM_ISA {

struct RowIndex {
  int64_t B, T;
  bool time_major;
  int64_t operator()(int64_t b, int64_t t) const { return time_major ? t * B + b : b * T + t; }
  // Distance in rows between (b, t) and (b + 1, t).
  int64_t batch_stride() const { return time_major ? 1 : T; }
};

// Rows per slab: split B evenly over the threads, in whole micro-tiles.
template <typename T>
int64_t slab_rows(int64_t B, int threads) {
  constexpr int MR = Blocking<T>::MR;
  if (B <= 0) return 1;  // no slabs at all
  const int64_t slabs = std::max<int64_t>(1, std::min<int64_t>(threads, ceil_div(B, MR)));
  return round_up(ceil_div(B, slabs), MR);
}

// Forward workspace: the packed recurrent kernel, then the pre-activations when they are not
// kept (inference), then the dropout-scaled recurrent input m * h [B,H] (used only with a
// recurrent dropout mask; reserved always, it is small).
template <typename T>
int64_t forward_workspace_size(const Dims& d, bool training) {
  const int64_t align = 64 / sizeof(T);
  const int64_t packed = round_up(packed_b_size<T>(d.H, 4 * d.H), align);
  return packed + (training ? 0 : round_up(d.B * d.T * 4 * d.H, align)) + d.B * d.H;
}

template <typename T>
int64_t backward_workspace_size(const Dims& d, bool has_mask) {
  const int64_t align = 64 / sizeof(T);
  const int64_t BT = d.B * d.T;
  return round_up(packed_b_size<T>(4 * d.H, d.H), align) + round_up(BT * 4 * d.H, align) +
         round_up(BT * d.H, align) + (has_mask ? d.B * d.H : 0);
}

// ---- forward --------------------------------------------------------------------------------

template <typename T>
struct ForwardPlan : ForwardArgs<T> {
  T* gates_or_workspace = nullptr;  // [B,T,4H]
  T* h_dropped = nullptr;           // [B,H] m * h, the recurrent GEMM's input (dropout only)
};

// Whether step t of row b runs the cell (it does unless the mask skips it); `a` is a forward
// or backward plan.
template <bool kHasMask, typename Plan>
inline bool step_active(const Plan& a, const RowIndex& row, int64_t b, int64_t t) {
  return !kHasMask || a.mask[row(b, t)];
}

// h_dropped[j] = m[j] * h[j] for one row (recurrent dropout only; a separate pass keeps the
// cell loop free of the extra stream).
template <typename T>
inline void scale_row(const T* m, const T* h, int64_t H, T* out) {
#pragma GCC ivdep
  for (int64_t j = 0; j < H; ++j) out[j] = m[j] * h[j];
}

// One step's elementwise pass for row b: z (in `gates`, holding x W + h R) -> gates, c, h, y;
// then the state for the next step, with the next step's reset already applied.
template <typename T, bool kHasResets, bool kHasMask, bool kTraining>
inline void forward_row_step(const ForwardPlan<T>& a, const RowIndex& row, int64_t b, int64_t t,
                             T* h, T* c) {
  const int64_t H = a.dims.H;
  const int64_t r = row(b, t);
  T* z = a.gates_or_workspace + r * 4 * H;
  T* y = a.outputs + r * H;
  const bool active = step_active<kHasMask>(a, row, b, t);
  const bool reset_next = kHasResets && t + 1 < a.dims.T && a.resets[row(b, t + 1)];
  if (active) {
    const T* bias = a.bias;
    T* cells = kTraining ? a.cells + r * H : nullptr;
#pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
      T gi, gf, gg, go, cn, hn;
      cell_forward(z[j] + bias[j], z[H + j] + bias[H + j], z[2 * H + j] + bias[2 * H + j],
                   z[3 * H + j] + bias[3 * H + j], c[j], &gi, &gf, &gg, &go, &cn, &hn);
      z[j] = gi;
      z[H + j] = gf;
      z[2 * H + j] = gg;
      z[3 * H + j] = go;
      if (kTraining) cells[j] = cn;
      y[j] = hn;
      h[j] = reset_next ? T(0) : hn;
      c[j] = reset_next ? T(0) : cn;
    }
  } else {  // masked: state carried, output repeats the previous output (zeros before any)
    const T* y_prev = t > 0 ? a.outputs + row(b, t - 1) * H : nullptr;
    for (int64_t j = 0; j < H; ++j) {
      y[j] = y_prev ? y_prev[j] : T(0);
      if (kTraining) a.cells[r * H + j] = c[j];
      if (reset_next) h[j] = c[j] = T(0);
    }
  }
}

template <typename T, bool kHasResets, bool kHasMask, bool kTraining>
void forward_slab(const ForwardPlan<T>& a, const PackedB<T>& rk, int64_t b0, int64_t b1) {
  const Dims& d = a.dims;
  const int64_t H = d.H;
  const RowIndex row{d.B, d.T, d.time_major};
  // h_final / c_final hold the running state: the state entering the next step (post-reset).
  T* h = a.h_final;
  T* c = a.c_final;
  // With recurrent dropout the GEMM reads m * h, kept beside the state.
  const T* m = a.recurrent_dropout_mask;
  T* h_gemm = m ? a.h_dropped : h;
  for (int64_t b = b0; b < b1; ++b) {
    const bool reset0 = kHasResets && d.T > 0 && a.resets[row(b, 0)];
    for (int64_t j = 0; j < H; ++j) {
      h[b * H + j] = a.h0 && !reset0 ? a.h0[b * H + j] : T(0);
      c[b * H + j] = a.c0 && !reset0 ? a.c0[b * H + j] : T(0);
    }
    if (m) scale_row(m + b * H, h + b * H, H, h_gemm + b * H);
  }
  const int64_t ldz = row.batch_stride() * 4 * H;
  for (int64_t t = 0; t < d.T; ++t) {
    // z[b0:b1, t] += (m *) h[b0:b1] @ recurrent_kernel
    gemm_packed_serial(b1 - b0, h_gemm + b0 * H, H, rk, a.gates_or_workspace + row(b0, t) * 4 * H,
                       ldz, /*accumulate=*/true);
    for (int64_t b = b0; b < b1; ++b) {
      forward_row_step<T, kHasResets, kHasMask, kTraining>(a, row, b, t, h + b * H, c + b * H);
      if (m) scale_row(m + b * H, h + b * H, H, h_gemm + b * H);
    }
  }
}

template <typename T>
void forward(const TaskRunner& runner, const ForwardArgs<T>& args, T* workspace) {
  const Dims& d = args.dims;
  const int64_t B = d.B, T_ = d.T, I = d.I, H = d.H;
  const bool training = args.gates != nullptr;
  ForwardPlan<T> plan;
  static_cast<ForwardArgs<T>&>(plan) = args;
  const int64_t align = 64 / sizeof(T);
  T* packed = workspace;
  T* w = workspace + round_up(packed_b_size<T>(H, 4 * H), align);
  if (training) {
    plan.gates_or_workspace = args.gates;
  } else {
    plan.gates_or_workspace = w;
    w += round_up(B * T_ * 4 * H, align);
  }
  plan.h_dropped = w;
  // Hoisted input projection: z = inputs @ kernel for all B*T rows in one GEMM.
  gemm(runner, false, false, B * T_, 4 * H, I, args.inputs, I, args.kernel, 4 * H,
       plan.gates_or_workspace, 4 * H, /*accumulate=*/false);
  const PackedB<T> rk = pack_b_full(runner, false, args.recurrent_kernel, 4 * H, H, 4 * H, packed);
  const int64_t rows = slab_rows<T>(B, runner.num_threads());
  RLSTM_BOOL_SWITCH(args.resets != nullptr, kHasResets, [&] {
    RLSTM_BOOL_SWITCH(args.mask != nullptr, kHasMask, [&] {
      RLSTM_BOOL_SWITCH(training, kTraining, [&] {
        runner.run(ceil_div(B, rows), [&](int64_t s) {
          forward_slab<T, kHasResets, kHasMask, kTraining>(plan, rk, s * rows,
                                                           std::min(B, (s + 1) * rows));
        });
      });
    });
  });
}

// ---- backward -------------------------------------------------------------------------------

template <typename T>
struct BackwardPlan : BackwardArgs<T> {
  PackedB<T> rk_t;        // recurrent_kernel^T, packed
  T* dz = nullptr;        // [B,T,4H] gradient wrt the pre-activations
  T* h_in = nullptr;      // [B,T,H]  recurrent input of each step (post-reset)
  T* dy_carry = nullptr;  // [B,H]    with a mask: gradient reaching the previous output
};


// Rebuilds the recurrent input h_in (post-reset h entering the step) of every step for rows
// [b0, b1). Without a mask the state after a step is that step's output; with one, masked
// steps repeat the previous output rather than the state, so active steps recompute
// h = o * tanh(c) from the saved gates exactly as the forward did. With recurrent dropout the
// result is what the recurrent GEMM read, m * h_in (the d_recurrent_kernel GEMM's input).
template <typename T, bool kHasResets, bool kHasMask>
void rebuild_recurrent_inputs(const BackwardPlan<T>& a, int64_t b0, int64_t b1) {
  const Dims& d = a.dims;
  const int64_t H = d.H;
  const RowIndex row{d.B, d.T, d.time_major};
  if (d.T == 0) return;
  for (int64_t b = b0; b < b1; ++b) {
    const bool reset0 = kHasResets && a.resets[row(b, 0)];
    T* first = a.h_in + row(b, 0) * H;
    for (int64_t j = 0; j < H; ++j) first[j] = a.h0 && !reset0 ? a.h0[b * H + j] : T(0);
    for (int64_t t = 0; t + 1 < d.T; ++t) {
      const int64_t r = row(b, t), rn = row(b, t + 1);
      T* next = a.h_in + rn * H;
      if (kHasResets && a.resets[rn]) {
        for (int64_t j = 0; j < H; ++j) next[j] = T(0);
      } else if (!kHasMask) {
        const T* y = a.outputs + r * H;
        for (int64_t j = 0; j < H; ++j) next[j] = y[j];
      } else if (a.mask[r]) {
        const T* o = a.gates + r * 4 * H + 3 * H;
        const T* cell = a.cells + r * H;
        for (int64_t j = 0; j < H; ++j) next[j] = cell_hidden(o[j], cell[j]);
      } else {
        const T* cur = a.h_in + r * H;
        for (int64_t j = 0; j < H; ++j) next[j] = cur[j];
      }
    }
    if (const T* m = a.recurrent_dropout_mask)  // after the row: masked steps read h_in above
      for (int64_t t = 0; t < d.T; ++t) {
        T* h_in = a.h_in + row(b, t) * H;
        scale_row(m + b * H, h_in, H, h_in);
      }
  }
}

template <typename T, bool kHasResets, bool kHasMask, bool kHasDy>
void backward_slab(const BackwardPlan<T>& a, int64_t b0, int64_t b1) {
  const Dims& d = a.dims;
  const int64_t H = d.H;
  const RowIndex row{d.B, d.T, d.time_major};
  // d_h0 / d_c0 hold the running gradients wrt the state leaving the current step.
  T* dh = a.d_h0;
  T* dc = a.d_c0;
  for (int64_t b = b0; b < b1; ++b)
    for (int64_t j = 0; j < H; ++j) {
      dh[b * H + j] = a.d_h_final ? a.d_h_final[b * H + j] : T(0);
      dc[b * H + j] = a.d_c_final ? a.d_c_final[b * H + j] : T(0);
      if (kHasMask) a.dy_carry[b * H + j] = T(0);
    }
  const int64_t ldz = row.batch_stride() * 4 * H;
  for (int64_t t = d.T - 1; t >= 0; --t) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r = row(b, t);
      // dh holds dz_{t+1} @ R^T (+ carried gradient); the step t+1 reset cut it if set.
      const bool reset_next = kHasResets && t + 1 < d.T && a.resets[row(b, t + 1)];
      const bool reset = kHasResets && a.resets[r];
      T* dhb = dh + b * H;
      T* dcb = dc + b * H;
      T* dz = a.dz + r * 4 * H;
      // dh holds dz_{t+1} @ R^T when step t+1 ran the cell: the gradient wrt m * h, so wrt h it
      // is m times that. (After a skipped step it is already wrt h; at t = T-1 it is d_h_final.)
      if (a.recurrent_dropout_mask && t + 1 < d.T && step_active<kHasMask>(a, row, b, t + 1))
        scale_row(a.recurrent_dropout_mask + b * H, dhb, H, dhb);
      const T* dy = kHasDy ? a.d_outputs + r * H : nullptr;
      T* dyc = kHasMask ? a.dy_carry + b * H : nullptr;
      if (step_active<kHasMask>(a, row, b, t)) {
        const T* g = a.gates + r * 4 * H;
        const T* cell = a.cells + r * H;
        const T* c_prev = t > 0 ? a.cells + row(b, t - 1) * H : a.c0 ? a.c0 + b * H : nullptr;
#pragma GCC ivdep
        for (int64_t j = 0; j < H; ++j) {
          T dh_t = reset_next ? T(0) : dhb[j];
          if (kHasDy) dh_t += dy[j];
          if (kHasMask) dh_t += dyc[j];
          const T c_in = c_prev && !reset ? c_prev[j] : T(0);
          T dc_in;
          cell_backward(g[j], g[H + j], g[2 * H + j], g[3 * H + j], c_in, cell[j], dh_t, dcb[j],
                        &dz[j], &dz[H + j], &dz[2 * H + j], &dz[3 * H + j], &dc_in);
          dcb[j] = reset ? T(0) : dc_in;  // no gradient crosses a reset
          dhb[j] = T(0);          // the GEMM below accumulates dz @ R^T here
          if (kHasMask) dyc[j] = T(0);
        }
      } else if constexpr (kHasMask) {
        // Masked step: the state passes through, the output gradient goes to y_{t-1}.
        for (int64_t j = 0; j < 4 * H; ++j) dz[j] = T(0);
        for (int64_t j = 0; j < H; ++j) {
          if (reset_next) dhb[j] = T(0);
          if (reset) dcb[j] = T(0);
          if (kHasDy) dyc[j] += dy[j];
        }
      }
    }
    // dh[b0:b1] += dz[b0:b1, t] @ recurrent_kernel^T
    gemm_packed_serial(b1 - b0, a.dz + row(b0, t) * 4 * H, ldz, a.rk_t, dh + b0 * H, H,
                       /*accumulate=*/true);
  }
  // Gradient wrt the initial state: dh is wrt h_in of step 0 (times m if step 0 ran the cell
  // with recurrent dropout), and h_in of step 0 is h0, or zero after a reset.
  for (int64_t b = b0; b < b1; ++b) {
    if (kHasResets && d.T > 0 && a.resets[row(b, 0)]) {
      for (int64_t j = 0; j < H; ++j) dh[b * H + j] = T(0);
    } else if (a.recurrent_dropout_mask && d.T > 0 && step_active<kHasMask>(a, row, b, 0)) {
      scale_row(a.recurrent_dropout_mask + b * H, dh + b * H, H, dh + b * H);
    }
  }
}

template <typename T>
void backward(const TaskRunner& runner, const BackwardArgs<T>& args, T* workspace) {
  const Dims& d = args.dims;
  const int64_t B = d.B, T_ = d.T, I = d.I, H = d.H, BT = B * T_;
  const int64_t align = 64 / sizeof(T);
  BackwardPlan<T> plan;
  static_cast<BackwardArgs<T>&>(plan) = args;
  T* w = workspace;
  plan.rk_t = pack_b_full(runner, true, args.recurrent_kernel, 4 * H, 4 * H, H, w);
  w += round_up(packed_b_size<T>(4 * H, H), align);
  plan.dz = w;
  w += round_up(BT * 4 * H, align);
  plan.h_in = w;
  w += round_up(BT * H, align);
  plan.dy_carry = args.mask ? w : nullptr;

  const int64_t rows = slab_rows<T>(B, runner.num_threads());
  RLSTM_BOOL_SWITCH(args.resets != nullptr, kHasResets, [&] {
    RLSTM_BOOL_SWITCH(args.mask != nullptr, kHasMask, [&] {
      RLSTM_BOOL_SWITCH(args.d_outputs != nullptr, kHasDy, [&] {
        runner.run(ceil_div(B, rows), [&](int64_t s) {
          const int64_t b0 = s * rows, b1 = std::min(B, (s + 1) * rows);
          rebuild_recurrent_inputs<T, kHasResets, kHasMask>(plan, b0, b1);
          backward_slab<T, kHasResets, kHasMask, kHasDy>(plan, b0, b1);
        });
      });
    });
  });

  // Weight and input gradients: a few large GEMMs over all B*T rows.
  gemm(runner, true, false, I, 4 * H, BT, args.inputs, I, plan.dz, 4 * H, args.d_kernel, 4 * H,
       false);
  gemm(runner, true, false, H, 4 * H, BT, plan.h_in, H, plan.dz, 4 * H, args.d_recurrent_kernel,
       4 * H, false);
  gemm(runner, false, true, BT, I, 4 * H, plan.dz, 4 * H, args.kernel, 4 * H, args.d_inputs, I,
       false);
  // d_bias = column sums of dz.
  const int64_t cols = 4 * H, col_block = 256;
  runner.run(ceil_div(cols, col_block), [&](int64_t task) {
    const int64_t j0 = task * col_block, j1 = std::min(cols, j0 + col_block);
    T* db = args.d_bias;
    for (int64_t j = j0; j < j1; ++j) db[j] = T(0);
    for (int64_t r = 0; r < BT; ++r) {
      const T* dz = plan.dz + r * cols;
      for (int64_t j = j0; j < j1; ++j) db[j] += dz[j];
    }
  });
}

#define RLSTM_INSTANTIATE(T)                                                                \
  template int64_t forward_workspace_size<T>(const Dims&, bool);                            \
  template int64_t backward_workspace_size<T>(const Dims&, bool);                           \
  template void forward<T>(const TaskRunner&, const ForwardArgs<T>&, T*);                   \
  template void backward<T>(const TaskRunner&, const BackwardArgs<T>&, T*);

RLSTM_INSTANTIATE(float)
RLSTM_INSTANTIATE(double)
#undef RLSTM_INSTANTIATE

}  // namespace RLSTM_ISA
}  // namespace cpu
}  // namespace resetlstm
