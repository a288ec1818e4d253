// The GRU cells for the recurrence engine (what a cell declares: lstm_cell.h), both forms of
// Keras: kernels [I, 3H] and [H, 3H], gates z (update), r (reset), h (candidate n), state h.
//
//   z = sigmoid(x W_z + b_z + h U_z [+ bu_z]),   r = sigmoid(x W_r + b_r + h U_r [+ bu_r])
//   reset_after=true  (Keras' default, cuDNN and torch.nn.GRU): bias [2, 3H] (input, recurrent)
//                      n = tanh(x W_n + b_n + r * (h U_n + bu_n))
//   reset_after=false: bias [3H]
//                      n = tanh(x W_n + b_n + (r * h) U_n)
//   h' = z * h + (1 - z) * n
//
// With reset_after the recurrent products of all three gates come from one GEMM of h; without
// it the candidate's reads r * h, which needs this step's r: the engine runs a second GEMM of
// r * h (stage_operand) by the candidate's columns (kTwoStage).
#pragma once

#include "activations.h"

namespace resetlstm {

template <bool kResetAfter>
struct GruCell {
  static constexpr int kGates = 3;
  static constexpr bool kCellState = false;
  // saved: z, r, n, and with reset_after the candidate's recurrent term h U_n + bu_n
  static constexpr int kSaved = kResetAfter ? 4 : 3;
  static constexpr int kBiasRows = kResetAfter ? 2 : 1;
  static constexpr bool kSumsProjections = false;
  static constexpr bool kTwoStage = !kResetAfter;
  static constexpr bool kDirectGrad = true;  // h' = z * h + ...
  static constexpr bool kSplitInputGrad = kResetAfter;

  // x: the input projection (no bias); hh: the recurrent products (no bias; without
  // reset_after hh[2] is (r * g) U_n, from the second GEMM); b: the input bias; b_rec: the
  // recurrent bias (reset_after only).
  template <typename V, typename Act = Activations<V>>
  RLSTM_HD static void forward(const V* x, const V* hh, const V* b, const V* b_rec, V h_prev,
                               V /*c_prev*/, V* saved, V* h, V* /*c*/) {
    const V one = V{} + 1.0f;
    V z, r, n;
    if constexpr (kResetAfter) {
      z = Act::sigmoid((x[0] + b[0]) + (hh[0] + b_rec[0]));
      r = Act::sigmoid((x[1] + b[1]) + (hh[1] + b_rec[1]));
      const V hn = hh[2] + b_rec[2];
      n = Act::tanh((x[2] + b[2]) + r * hn);
      saved[3] = hn;
    } else {
      z = Act::sigmoid((x[0] + b[0]) + hh[0]);
      r = Act::sigmoid((x[1] + b[1]) + hh[1]);
      n = Act::tanh((x[2] + b[2]) + hh[2]);
    }
    saved[0] = z, saved[1] = r, saved[2] = n;
    *h = z * h_prev + (one - z) * n;
  }

  // Without reset_after: the second GEMM's input for one unit, r * g, where g is what the
  // first GEMM read (h, or m * h with a recurrent dropout mask m). x_r, hh_r, b_r: the reset
  // gate's input projection, recurrent product and bias.
  template <typename V, typename Act = Activations<V>>
  RLSTM_HD static V stage_operand(V x_r, V hh_r, V b_r, V g) {
    return Act::sigmoid((x_r + b_r) + hh_r) * g;
  }

  // dh: wrt h' of this step. d_rec: the recurrent side's pre-activation gradients [z, r, n]
  // (without reset_after d_rec[1] comes from stage_backward); d_in_last: the input side's
  // candidate gradient (reset_after); dh_direct: what reaches h_prev through z * h_prev.
  template <typename V, typename Act = Activations<V>>
  RLSTM_HD static void backward(const V* saved, V h_prev, V /*c_prev*/, V /*c*/, V dh,
                                V /*dc*/, V* d_rec, V* d_in_last, V* dh_direct, V* /*dc_prev*/) {
    const V one = V{} + 1.0f;
    const V z = saved[0], r = saved[1], n = saved[2];
    // h' = z * h_prev + (1 - z) * n
    const V dn = dh * (one - z);
    const V d_z = dh * (h_prev - n);
    *dh_direct = dh * z;
    const V da_n = dn * (one - n * n);  // n = tanh(a_n)
    d_rec[0] = d_z * z * (one - z);
    if constexpr (kResetAfter) {
      // a_n = x_n + b_n + r * hn: the recurrent side sees r * da_n, r sees hn * da_n
      const V hn = saved[3];
      d_rec[1] = (da_n * hn) * r * (one - r);
      d_rec[2] = da_n * r;
      *d_in_last = da_n;
    } else {
      d_rec[2] = da_n;  // a_n = x_n + b_n + (r * g) U_n; d_rec[1] from stage_backward
    }
  }

  // Without reset_after, after the second GEMM's backward: d_op = d_rec[2] U_n^T, the gradient
  // wrt r * g; g = m * h_prev what the first GEMM read (m = 1 without recurrent dropout).
  // Returns the reset gate's pre-activation gradient and adds r * m * d_op, what reaches h_prev
  // through the operand, to *dh_direct.
  template <typename V>
  RLSTM_HD static V stage_backward(const V* saved, V g, V m, V d_op, V* dh_direct) {
    const V one = V{} + 1.0f;
    const V r = saved[1];
    *dh_direct = *dh_direct + d_op * r * m;
    return (d_op * g) * r * (one - r);
  }
};

using GruResetAfterCell = GruCell<true>;
using GruResetBeforeCell = GruCell<false>;

}  // namespace resetlstm
