// The LSTM cell for the recurrence engine (recurrence_cpu_*.h, recurrence_cuda_*.cu): its shape
// and the gate math of one hidden unit, shared by the CPU loops and the CUDA kernels.
//
// Gate order and layout follow Keras: kernels [I, 4H] and [H, 4H], gates i, f, c, o; bias [4H].
// Forward:   i = sigmoid(z_i), f = sigmoid(z_f), g = tanh(z_c), o = sigmoid(z_o)
//            c = f * c_in + i * g,  h = o * tanh(c),  where z = x W + h R + b
// What a cell tells the engine (the GRU in gru_cell.h answers the same questions):
//   kGates            gates per hidden unit (kernel columns kGates * H)
//   kCellState        whether the state is (h, c) rather than h alone
//   kSaved            activations saved per unit for backward: `gates` is [B, T, kSaved * H]
//                     (and c goes to `cells` [B, T, H] when kCellState)
//   kBiasRows         bias [kBiasRows, kGates * H]: row 0 the input side's, row 1 the
//                     recurrent side's
//   kSumsProjections  the gates read x W and h R only summed, so both may accumulate in one
//                     buffer (the input projection computed per step into the recurrent one)
//   kTwoStage         the last gate's recurrent product reads r * h rather than h: the engine
//                     multiplies by the last gate's columns in a second GEMM (stage_operand)
//   kDirectGrad       h_prev reaches the new h otherwise than through the recurrent GEMM (and c)
//   kSplitInputGrad   the input side's gradient of the last gate differs from the recurrent
//                     side's (backward returns it in d_in_last)
//   forward(x, hh, b, b_rec, h_prev, c_prev, saved, h, c): one unit's step from the input
//                     projection x[g], the recurrent product hh[g], the biases and the state
//   backward(saved, h_prev, c_prev, c, dh, dc, d_rec, d_in_last, dh_direct, dc_prev): the
//                     pre-activation gradients d_rec[g] (recurrent side, also the input side
//                     unless kSplitInputGrad), and the gradients reaching h_prev directly and c_prev
// V is the compute type (float, double, or a GCC vector of floats on the CPU, whose lanes are
// computed alike); Act its activations. Everything here is branch-free.
#pragma once

#include "activations.h"

namespace resetlstm {

struct LstmCell {
  static constexpr int kGates = 4;
  static constexpr bool kCellState = true;
  static constexpr int kSaved = 4;  // i, f, g, o (c in `cells`)
  static constexpr int kBiasRows = 1;
  static constexpr bool kSumsProjections = true;
  static constexpr bool kTwoStage = false;
  static constexpr bool kDirectGrad = false;
  static constexpr bool kSplitInputGrad = false;

  template <typename V, typename Act = Activations<V>>
  RLSTM_HD static void forward(const V* x, const V* hh, const V* b, const V* /*b_rec*/,
                               V /*h_prev*/, V c_prev, V* saved, V* h, V* c) {
    const V i = Act::sigmoid(x[0] + hh[0] + b[0]);
    const V f = Act::sigmoid(x[1] + hh[1] + b[1]);
    const V g = Act::tanh(x[2] + hh[2] + b[2]);
    const V o = Act::sigmoid(x[3] + hh[3] + b[3]);
    saved[0] = i, saved[1] = f, saved[2] = g, saved[3] = o;
    *c = f * c_prev + i * g;
    *h = o * Act::tanh(*c);
  }

  // dh: wrt h of this step; dc: wrt c of this step (from the future). c_prev: the cell state
  // entering the step (zero after a reset), c: the step's own.
  template <typename V, typename Act = Activations<V>>
  RLSTM_HD static void backward(const V* saved, V /*h_prev*/, V c_prev, V c, V dh, V dc,
                                V* d_rec, V* /*d_in_last*/, V* /*dh_direct*/, V* dc_prev) {
    const V i = saved[0], f = saved[1], g = saved[2], o = saved[3];
    const V tc = Act::tanh(c);
    const V one = V{} + 1.0f;  // (a splat when V is a vector)
    // h = o * tanh(c):  dc += dh * o * (1 - tanh(c)^2),  do = dh * tanh(c)
    const V dc_total = dc + dh * o * (one - tc * tc);
    const V d_o = dh * tc;
    // c = f * c_prev + i * g
    const V d_i = dc_total * g;
    const V d_f = dc_total * c_prev;
    const V d_g = dc_total * i;
    *dc_prev = dc_total * f;
    // sigmoid'(z) = s (1 - s), tanh'(z) = 1 - t^2
    d_rec[0] = d_i * i * (one - i);
    d_rec[1] = d_f * f * (one - f);
    d_rec[2] = d_g * (one - g * g);
    d_rec[3] = d_o * o * (one - o);
  }
};

}  // namespace resetlstm
