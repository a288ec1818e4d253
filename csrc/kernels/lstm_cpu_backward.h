// CPU backward of the reset-LSTM (one build per instruction set, inside its namespace): the
// plan and workspace layout, the rebuilt recurrent inputs, one step's fused elementwise pass
// for a row, the time loop of a row slab and of the column split, and backward() itself (the
// weight and input gradients as large GEMMs after the loop).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cpu_gemm_impl.h"
#include "cpu_numeric.h"
#include "cpu_vector.h"
#include "lstm_cell.h"
#include "lstm_cpu.h"
#include "lstm_cpu_common.h"
#include "lstm_cpu_split.h"
#include "static_switch.h"

namespace resetlstm {
namespace cpu {
namespace RLSTM_ISA {

template <typename T>
struct BackwardPlan : BackwardArgs<T> {
  using A = acc_t<T>;
  PackedB<T> rk_t;        // recurrent_kernel^T, packed
  T* dz = nullptr;        // [B,T,4H] gradient wrt the pre-activations (a GEMM operand: T)
  T* h_in = nullptr;      // [B,T,H]  recurrent input of each step (post-reset)
  A* dh = nullptr;        // [B,H]    running gradients; float: d_h0 / d_c0 themselves
  A* dc = nullptr;
  A* dy_carry = nullptr;  // [B,H]    with a mask: gradient reaching the previous output
  A* d_kernel = nullptr;  // widened types: float results of the weight and input GEMMs,
  A* d_rk = nullptr;      //   rounded into the outputs at the end; float: the outputs
  A* d_inputs = nullptr;
  A* weight_partials = nullptr;  // gemm_tn_pair's partial sums
};

template <typename T>
void backward_layout(const Dims& d, bool has_mask, void* base, BackwardPlan<T>* plan,
                     int64_t* bytes) {
  using A = acc_t<T>;
  const int64_t BT = d.B * d.T;
  constexpr bool wide = kWidened<T>;
  Carver w(base);
  T* packed = w.take<T>(packed_b_size<T>(4 * d.H, d.H));
  T* dz = w.take<T>(BT * 4 * d.H);
  T* h_in = w.take<T>(BT * d.H);
  A* dy_carry = w.take<A>(d.B * d.H, has_mask);
  A* dh = w.take<A>(d.B * d.H, wide);
  A* dc = w.take<A>(d.B * d.H, wide);
  A* dk = w.take<A>(d.I * 4 * d.H, wide);
  A* drk = w.take<A>(d.H * 4 * d.H, wide);
  A* dx = w.take<A>(BT * d.I, wide);
  A* partials = w.take<A>((kMaxKSplits - 1) * (d.I + d.H) * 4 * d.H);
  *bytes = w.bytes();
  if (!plan) return;
  plan->weight_partials = partials;
  plan->rk_t.data = packed;
  plan->dz = dz, plan->h_in = h_in, plan->dy_carry = dy_carry;
  if constexpr (wide) {
    plan->dh = dh, plan->dc = dc, plan->d_kernel = dk, plan->d_rk = drk, plan->d_inputs = dx;
  } else {
    plan->dh = plan->d_h0, plan->dc = plan->d_c0;
    plan->d_kernel = plan->BackwardArgs<T>::d_kernel;
    plan->d_rk = plan->d_recurrent_kernel;
    plan->d_inputs = plan->BackwardArgs<T>::d_inputs;
  }
}

template <typename T>
int64_t backward_workspace_size(const Dims& d, bool has_mask) {
  int64_t bytes;
  backward_layout<T>(d, has_mask, nullptr, nullptr, &bytes);
  return ceil_div(bytes, sizeof(T));
}

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
    for (int64_t j = 0; j < H; ++j) first[j] = a.h0 && !reset0 ? a.h0[b * H + j] : T{};
    for (int64_t t = 0; t + 1 < d.T; ++t) {
      const int64_t r = row(b, t), rn = row(b, t + 1);
      T* next = a.h_in + rn * H;
      if (kHasResets && a.resets[rn]) {
        for (int64_t j = 0; j < H; ++j) next[j] = T{};
      } else if (!kHasMask) {
        const T* y = a.outputs + r * H;
        for (int64_t j = 0; j < H; ++j) next[j] = y[j];
      } else if (a.mask[r]) {
        const T* o = a.gates + r * 4 * H + 3 * H;
        const T* cell = a.cells + r * H;
        for (int64_t j = 0; j < H; ++j)
          next[j] = from_acc<T>(cell_hidden(to_acc(o[j]), to_acc(cell[j])));
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

// Row b, units [j0, j1): the running gradients start from d_h_final / d_c_final.
template <typename T, bool kHasMask>
inline void backward_init_row(const BackwardPlan<T>& a, int64_t b, int64_t j0, int64_t j1) {
  using A = acc_t<T>;
  const int64_t H = a.dims.H;
  for (int64_t j = b * H + j0; j < b * H + j1; ++j) {
    a.dh[j] = a.d_h_final ? to_acc(a.d_h_final[j]) : A(0);
    a.dc[j] = a.d_c_final ? to_acc(a.d_c_final[j]) : A(0);
    if (kHasMask) a.dy_carry[j] = A(0);
  }
}

// Step t's backward for row b, units [j0, j1): dh holds dz_{t+1} @ R^T (+ carried gradient)
// for these units; writes dz of step t for them and leaves dh zeroed for the next GEMM.
template <typename T, bool kHasResets, bool kHasMask, bool kHasDy>
inline void backward_row_step(const BackwardPlan<T>& a, const RowIndex& row, int64_t b,
                              int64_t t, int64_t j0, int64_t j1) {
  using A = acc_t<T>;
  const Dims& d = a.dims;
  const int64_t H = d.H, n = j1 - j0;
  const int64_t r = row(b, t);
  // the step t+1 reset cuts dh if set
  const bool reset_next = kHasResets && t + 1 < d.T && a.resets[row(b, t + 1)];
  const bool reset = kHasResets && a.resets[r];
  A* dhb = a.dh + b * H;
  A* dcb = a.dc + b * H;
  T* dz = a.dz + r * 4 * H;
  // dh holds dz_{t+1} @ R^T when step t+1 ran the cell: the gradient wrt m * h, so wrt h it is
  // m times that. (After a skipped step it is already wrt h; at t = T-1 it is d_h_final.)
  if (a.recurrent_dropout_mask && t + 1 < d.T && step_active<kHasMask>(a, row, b, t + 1))
    scale_row(a.recurrent_dropout_mask + b * H + j0, dhb + j0, n, dhb + j0);
  const T* dy = kHasDy ? a.d_outputs + r * H : nullptr;
  A* dyc = kHasMask ? a.dy_carry + b * H : nullptr;
  if (step_active<kHasMask>(a, row, b, t)) {
    const T* g = a.gates + r * 4 * H;
    const T* cell = a.cells + r * H;
    const T* c_prev = t > 0 ? a.cells + row(b, t - 1) * H : a.c0 ? a.c0 + b * H : nullptr;
    if (kHasResets && reset) c_prev = nullptr;  // the step starts from c = 0
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
          const VecF c_in = has_c_in ? vload(c_prev + j) : VecF{};
          VecF dz_i, dz_f, dz_c, dz_o, dc_in;
          cell_backward<VecF, VecActivations>(vload(g + j), vload(g + H + j),
                                              vload(g + 2 * H + j), vload(g + 3 * H + j), c_in,
                                              vload(cell + j), dh_t, vload(dcb + j), &dz_i,
                                              &dz_f, &dz_c, &dz_o, &dc_in);
          vstore(dz + j, dz_i);
          vstore(dz + H + j, dz_f);
          vstore(dz + 2 * H + j, dz_c);
          vstore(dz + 3 * H + j, dz_o);
          vstore(dcb + j, dc_in);
          vstore(dhb + j, VecF{});  // the GEMM accumulates dz @ R^T here next
          if (kHasMask) vstore(dyc + j, VecF{});
        }
      }
#pragma GCC ivdep
      for (; j < j1; ++j) {
        A dh_t = dhb[j];
        if (kHasDy) dh_t += to_acc(dy[j]);
        if (kHasMask) dh_t += dyc[j];
        const A c_in = has_c_in ? to_acc(c_prev[j]) : A(0);
        A dz_i, dz_f, dz_c, dz_o, dc_in;
        cell_backward(to_acc(g[j]), to_acc(g[H + j]), to_acc(g[2 * H + j]), to_acc(g[3 * H + j]),
                      c_in, to_acc(cell[j]), dh_t, dcb[j], &dz_i, &dz_f, &dz_c, &dz_o, &dc_in);
        dz[j] = from_acc<T>(dz_i);
        dz[H + j] = from_acc<T>(dz_f);
        dz[2 * H + j] = from_acc<T>(dz_c);
        dz[3 * H + j] = from_acc<T>(dz_o);
        dcb[j] = dc_in;
        dhb[j] = A(0);  // the GEMM accumulates dz @ R^T here next
        if (kHasMask) dyc[j] = A(0);
      }
    };
    if (c_prev) cell_loop(std::true_type{});
    else cell_loop(std::false_type{});
    if (reset) std::fill(dcb + j0, dcb + j1, A(0));  // no gradient crosses a reset
  } else if constexpr (kHasMask) {
    // Masked step: the state passes through, the output gradient goes to y_{t-1}.
    for (int gate = 0; gate < 4; ++gate) std::fill(dz + gate * H + j0, dz + gate * H + j1, T{});
    for (int64_t j = j0; j < j1; ++j) {
      if (reset_next) dhb[j] = A(0);
      if (reset) dcb[j] = A(0);
      if (kHasDy) dyc[j] += to_acc(dy[j]);
    }
  }
}

// Row b, units [j0, j1), after step 0 and its GEMM: dh is wrt h_in of step 0 (times m if step
// 0 ran the cell with recurrent dropout), and h_in of step 0 is h0, or zero after a reset.
template <typename T, bool kHasResets, bool kHasMask>
inline void backward_finish_row(const BackwardPlan<T>& a, const RowIndex& row, int64_t b,
                                int64_t j0, int64_t j1) {
  using A = acc_t<T>;
  const Dims& d = a.dims;
  const int64_t H = d.H;
  A* dhb = a.dh + b * H;
  if (kHasResets && d.T > 0 && a.resets[row(b, 0)]) {
    std::fill(dhb + j0, dhb + j1, A(0));
  } else if (a.recurrent_dropout_mask && d.T > 0 && step_active<kHasMask>(a, row, b, 0)) {
    scale_row(a.recurrent_dropout_mask + b * H + j0, dhb + j0, j1 - j0, dhb + j0);
  }
  if constexpr (kWidened<T>)
    for (int64_t j = b * H + j0; j < b * H + j1; ++j) {
      a.d_h0[j] = from_acc<T>(a.dh[j]);
      a.d_c0[j] = from_acc<T>(a.dc[j]);
    }
}

// Rows [b0, b1), the steps s0 <= s < s1 of the backward loop, which runs time backwards (step s
// is t = T-1-s): a chunk of the row split (run_slabs). The first chunk rebuilds the rows'
// recurrent inputs and starts from the final state's gradients; the last leaves the initial
// state's.
template <typename T, bool kHasResets, bool kHasMask, bool kHasDy>
void backward_slab(const BackwardPlan<T>& a, int64_t b0, int64_t b1, int64_t s0, int64_t s1,
                   bool first, bool last) {
  const Dims& d = a.dims;
  const int64_t H = d.H;
  const RowIndex row{d.B, d.T, d.time_major};
  if (first) {
    rebuild_recurrent_inputs<T, kHasResets, kHasMask>(a, b0, b1);
    for (int64_t b = b0; b < b1; ++b) backward_init_row<T, kHasMask>(a, b, 0, H);
  }
  const int64_t ldz = row.batch_stride() * 4 * H;
  for (int64_t t = d.T - 1 - s0; t >= d.T - s1; --t) {
    for (int64_t b = b0; b < b1; ++b)
      backward_row_step<T, kHasResets, kHasMask, kHasDy>(a, row, b, t, 0, H);
    // dh[b0:b1] += dz[b0:b1, t] @ recurrent_kernel^T
    gemm_packed_serial(b1 - b0, a.dz + row(b0, t) * 4 * H, ldz, a.rk_t, a.dh + b0 * H, H,
                       /*accumulate=*/true);
  }
  if (last)
    for (int64_t b = b0; b < b1; ++b)
      backward_finish_row<T, kHasResets, kHasMask>(a, row, b, 0, H);
}

// Column split of the backward time loop (see forward_columns). Item (s, u), t = T-1-s:
// dh[:, u] += dz_{t+1} @ R^T[:, u] (every unit of dz_{t+1} is ready: the barrier), then step t's
// cell backward for units u. A last step s = T runs only the GEMM with dz_0.
template <typename T, bool kHasResets, bool kHasMask, bool kHasDy>
void backward_columns(const TaskRunner& runner, const BackwardPlan<T>& a, int64_t units) {
  const Dims& d = a.dims;
  const int64_t B = d.B, H = d.H, T_ = d.T;
  const RowIndex row{d.B, d.T, d.time_major};
  for (int64_t b = 0; b < B; ++b) backward_init_row<T, kHasMask>(a, b, 0, H);
  const int64_t blocks = ceil_div(H, units), ldz = row.batch_stride() * 4 * H;
  StepQueue queue(T_ + 1, blocks);
  runner.run(runner.num_threads(), [&](int64_t) {
    for (int64_t item = queue.claim(); item >= 0; item = queue.claim()) {
      const int64_t s = item / blocks, t = T_ - 1 - s;
      const int64_t j0 = (item % blocks) * units, j1 = std::min(H, j0 + units);
      queue.wait_for_step(s);
      if (s > 0)
        gemm_packed_serial(B, a.dz + row(0, t + 1) * 4 * H, ldz, a.rk_t, a.dh, H,
                           /*accumulate=*/true, j0, j1 - j0);
      if (t >= 0) {
        for (int64_t b = 0; b < B; ++b)
          backward_row_step<T, kHasResets, kHasMask, kHasDy>(a, row, b, t, j0, j1);
      } else {
        for (int64_t b = 0; b < B; ++b)
          backward_finish_row<T, kHasResets, kHasMask>(a, row, b, j0, j1);
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

template <typename T>
void backward(const TaskRunner& runner, const BackwardArgs<T>& args, T* workspace) {
  using A = acc_t<T>;
  const Dims& d = args.dims;
  const int64_t B = d.B, T_ = d.T, I = d.I, H = d.H, BT = B * T_;
  BackwardPlan<T> plan;
  static_cast<BackwardArgs<T>&>(plan) = args;
  int64_t bytes;
  backward_layout<T>(d, args.mask != nullptr, workspace, &plan, &bytes);
  plan.rk_t = pack_b_full(runner, true, args.recurrent_kernel, 4 * H, 4 * H, H,
                          const_cast<T*>(plan.rk_t.data));

  const int64_t rows = slab_rows<T>(B, runner.num_threads());
  const Split split = choose_split<T>(d, runner.num_threads());
  RLSTM_BOOL_SWITCH(args.resets != nullptr, kHasResets, [&] {
    RLSTM_BOOL_SWITCH(args.mask != nullptr, kHasMask, [&] {
      RLSTM_BOOL_SWITCH(args.d_outputs != nullptr, kHasDy, [&] {
        if (split.columns) {
          runner.run(ceil_div(B, rows), [&](int64_t s) {
            rebuild_recurrent_inputs<T, kHasResets, kHasMask>(plan, s * rows,
                                                              std::min(B, (s + 1) * rows));
          });
          backward_columns<T, kHasResets, kHasMask, kHasDy>(runner, plan, split.units);
          return;
        }
        run_slabs(runner, B, T_, rows,
                  [&](int64_t b0, int64_t b1, int64_t s0, int64_t s1, bool first, bool last) {
                    backward_slab<T, kHasResets, kHasMask, kHasDy>(plan, b0, b1, s0, s1, first,
                                                                   last);
                  });
      });
    });
  });

  // Weight and input gradients: large GEMMs over all B*T rows (the two weight gradients in one
  // pass over dz).
  gemm_tn_pair(runner, BT, 4 * H, args.inputs, I, plan.h_in, H, plan.dz, plan.d_kernel,
               plan.d_rk, plan.weight_partials);
  gemm(runner, false, true, BT, I, 4 * H, plan.dz, 4 * H, args.kernel, 4 * H, plan.d_inputs, I,
       false);
  if constexpr (kWidened<T>) {
    round_into(runner, plan.d_kernel, I * 4 * H, args.d_kernel);
    round_into(runner, plan.d_rk, H * 4 * H, args.d_recurrent_kernel);
    round_into(runner, plan.d_inputs, BT * I, args.d_inputs);
  }
  // d_bias = column sums of dz.
  const int64_t cols = 4 * H, col_block = 256;
  runner.run(ceil_div(cols, col_block), [&](int64_t task) {
    const int64_t j0 = task * col_block, j1 = std::min(cols, j0 + col_block);
    A sums[col_block] = {};
    for (int64_t r = 0; r < BT; ++r) {
      const T* dz = plan.dz + r * cols;
      for (int64_t j = j0; j < j1; ++j) sums[j - j0] += to_acc(dz[j]);
    }
    for (int64_t j = j0; j < j1; ++j) args.d_bias[j] = from_acc<T>(sums[j - j0]);
  });
}

}  // namespace RLSTM_ISA
}  // namespace cpu
}  // namespace resetlstm
