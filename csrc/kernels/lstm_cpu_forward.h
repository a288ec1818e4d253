// CPU forward of the reset-LSTM (one build per instruction set, inside its namespace): the
// plan and workspace layout, one step's fused elementwise pass for a row, the time loop of a
// row slab and of the column split, and forward() itself.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
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
struct ForwardPlan : ForwardArgs<T> {
  using A = acc_t<T>;
  PackedB<T> rk;        // recurrent kernel, packed once
  A* z = nullptr;       // [B,T,4H] pre-activations; for float training, the gates output itself
  A* h = nullptr;       // [B,H] running state (post-reset); float: h_final itself
  A* c = nullptr;       // [B,H]                            float: c_final itself
  T* h_gemm = nullptr;  // [B,H] the recurrent GEMM's input: (m *) h as T; float without
                        // dropout: h itself
  T* h_gemm2 = nullptr;  // [2,B,H] the column-split loop's GEMM inputs (even, odd steps)
  A* zr = nullptr;       // [B,4H] the current step's recurrent part h R, kept apart from z
  // Per-step input projection (small weights): z stays null, each step computes x_t W into zr
  // with the packed kernel, and the cell reads `zeros` in place of z.
  PackedB<T> k;
  const A* zeros = nullptr;  // [4H]
};

// Workspace: the packed recurrent kernel; the pre-activations unless they are the gates output
// (float training); widened types: the float state; GEMM input buffers (used when the GEMM
// input differs from the state, recurrent dropout or a widened type, and by the column split);
// one step's recurrent products [B,4H]; the packed input kernel and a zero row (per-step input
// projection; its z is then left untouched, so the pages are never faulted in).
template <typename T>
void forward_layout(const Dims& d, bool training, bool dropout, void* base, ForwardPlan<T>* plan,
                    int64_t* bytes) {
  using A = acc_t<T>;
  Carver w(base);
  T* packed = w.take<T>(packed_b_size<T>(d.H, 4 * d.H));
  A* z = w.take<A>(d.B * d.T * 4 * d.H, !training || kWidened<T>);
  A* h = w.take<A>(d.B * d.H, kWidened<T>);
  A* c = w.take<A>(d.B * d.H, kWidened<T>);
  // two buffers: the column-split loop reads one step's input while writing the next's
  T* h_gemm = w.take<T>(2 * d.B * d.H);
  A* zr = w.take<A>(d.B * 4 * d.H);
  T* k_packed = w.take<T>(packed_b_size<T>(d.I, 4 * d.H));
  A* zeros = w.take<A>(4 * d.H);
  *bytes = w.bytes();
  if (!plan) return;
  plan->h_gemm2 = h_gemm;
  plan->zr = zr;
  plan->k.data = k_packed;
  plan->zeros = zeros;
  plan->rk.data = packed;
  if constexpr (kWidened<T>) {
    plan->z = z, plan->h = h, plan->c = c;
  } else {
    plan->z = training ? plan->gates : z;
    plan->h = plan->h_final, plan->c = plan->c_final;
  }
  plan->h_gemm = h_gemm;
  if constexpr (!kWidened<T>)
    if (!dropout) plan->h_gemm = plan->h;
}

template <typename T>
int64_t forward_workspace_size(const Dims& d, bool training) {
  int64_t bytes;
  forward_layout<T>(d, training, /*dropout=*/true, nullptr, nullptr, &bytes);
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
template <typename T, bool kHasResets>
inline void init_state_row(const ForwardPlan<T>& a, const RowIndex& row, int64_t b,
                           T* gemm_input) {
  using A = acc_t<T>;
  const int64_t H = a.dims.H;
  const bool reset0 = kHasResets && a.dims.T > 0 && a.resets[row(b, 0)];
  for (int64_t j = b * H; j < (b + 1) * H; ++j) {
    a.h[j] = a.h0 && !reset0 ? to_acc(a.h0[j]) : A(0);
    a.c[j] = a.c0 && !reset0 ? to_acc(a.c0[j]) : A(0);
  }
  const T* m = a.recurrent_dropout_mask;
  if (gemm_input) gemm_input_row(m ? m + b * H : nullptr, a.h + b * H, H, gemm_input + b * H);
}

// Widened types: the float state [i0, i1) rounded into h_final / c_final (float and double run
// in those outputs directly).
template <typename T>
inline void store_final_state(const ForwardPlan<T>& a, int64_t i0, int64_t i1) {
  if constexpr (kWidened<T>)
    for (int64_t i = i0; i < i1; ++i) {
      a.h_final[i] = from_acc<T>(a.h[i]);
      a.c_final[i] = from_acc<T>(a.c[i]);
    }
}

// One step's elementwise pass for row b, hidden units [j0, j1): z (x W + h R) -> gates, c, h,
// y; then the state for the next step, with the next step's reset already applied.
template <typename T, bool kHasResets, bool kHasMask, bool kTraining>
inline void forward_row_step(const ForwardPlan<T>& a, const RowIndex& row, int64_t b, int64_t t,
                             acc_t<T>* h, acc_t<T>* c, int64_t j0, int64_t j1) {
  using A = acc_t<T>;
  const int64_t H = a.dims.H;
  const int64_t r = row(b, t);
  // z = x W (all steps, computed up front) + this step's h R (zr, still in cache): the GEMM
  // writes zr rather than accumulating into z, which saves z a round trip through memory.
  const A* z = a.z ? a.z + r * 4 * H : a.zeros;
  const A* zr = a.zr + b * 4 * H;
  T* y = a.outputs + r * H;
  const bool active = step_active<kHasMask>(a, row, b, t);
  const bool reset_next = kHasResets && t + 1 < a.dims.T && a.resets[row(b, t + 1)];
  if (active) {
    const T* bias = a.bias;
    // For float training the gates overwrite z in place (same index, read first).
    T* g = kTraining ? a.gates + r * 4 * H : nullptr;
    T* cells = kTraining ? a.cells + r * H : nullptr;
    int64_t j = j0;
    if constexpr (std::is_same_v<A, float>) {  // whole vectors, then the scalar loop below
      constexpr int L = kFloatLanes;
      for (; j + L <= j1; j += L) {
        VecF gi, gf, gg, go, cn, hn;
        cell_forward<VecF, VecActivations>(
            vload(z + j) + vload(zr + j) + vload(bias + j),
            vload(z + H + j) + vload(zr + H + j) + vload(bias + H + j),
            vload(z + 2 * H + j) + vload(zr + 2 * H + j) + vload(bias + 2 * H + j),
            vload(z + 3 * H + j) + vload(zr + 3 * H + j) + vload(bias + 3 * H + j), vload(c + j),
            &gi, &gf, &gg, &go, &cn, &hn);
        if (kTraining) {
          vstore(g + j, gi);
          vstore(g + H + j, gf);
          vstore(g + 2 * H + j, gg);
          vstore(g + 3 * H + j, go);
          vstore(cells + j, cn);
        }
        vstore(y + j, hn);
        vstore(h + j, hn);
        vstore(c + j, cn);
      }
    }
#pragma GCC ivdep
    for (; j < j1; ++j) {
      A gi, gf, gg, go, cn, hn;
      cell_forward(z[j] + zr[j] + to_acc(bias[j]), z[H + j] + zr[H + j] + to_acc(bias[H + j]),
                   z[2 * H + j] + zr[2 * H + j] + to_acc(bias[2 * H + j]),
                   z[3 * H + j] + zr[3 * H + j] + to_acc(bias[3 * H + j]), c[j], &gi, &gf, &gg,
                   &go, &cn, &hn);
      if (kTraining) {
        g[j] = from_acc<T>(gi);
        g[H + j] = from_acc<T>(gf);
        g[2 * H + j] = from_acc<T>(gg);
        g[3 * H + j] = from_acc<T>(go);
        cells[j] = from_acc<T>(cn);
      }
      y[j] = from_acc<T>(hn);
      h[j] = hn;
      c[j] = cn;
    }
    // Applied after the loop: a select on a loop-invariant flag inside it kept GCC from
    // vectorizing the whole cell (1.6x slower forward with any resets on Zen 5).
    if (reset_next) {
      std::fill(h + j0, h + j1, A(0));
      std::fill(c + j0, c + j1, A(0));
    }
  } else {  // masked: state carried, output repeats the previous output (zeros before any)
    const T* y_prev = t > 0 ? a.outputs + row(b, t - 1) * H : nullptr;
    for (int64_t j = j0; j < j1; ++j) {
      y[j] = y_prev ? y_prev[j] : T{};
      if (kTraining) a.cells[r * H + j] = from_acc<T>(c[j]);
      if (reset_next) h[j] = c[j] = A(0);
    }
    // Backward never reads a masked step's gates; they hold the pre-activations without bias,
    // x W + h R, as the CUDA kernels leave them (tests/test_cuda_replay.py compares all outputs).
    if (kTraining)
      for (int gate = 0; gate < 4; ++gate) {
        T* g = a.gates + r * 4 * H + gate * H;
        for (int64_t j = j0; j < j1; ++j) g[j] = from_acc<T>(z[gate * H + j] + zr[gate * H + j]);
      }
  }
}

// Steps [t0, t1) of rows [b0, b1) (a chunk of the row split: run_slabs); the first chunk starts
// the rows from their initial state, the last leaves their final state.
template <typename T, bool kHasResets, bool kHasMask, bool kTraining>
void forward_slab(const ForwardPlan<T>& a, int64_t b0, int64_t b1, int64_t t0, int64_t t1,
                  bool first, bool last) {
  using A = acc_t<T>;
  const Dims& d = a.dims;
  const int64_t H = d.H;
  const RowIndex row{d.B, d.T, d.time_major};
  A* h = a.h;
  A* c = a.c;
  const T* m = a.recurrent_dropout_mask;
  const bool separate_input = static_cast<void*>(a.h_gemm) != static_cast<void*>(h);
  if (first)
    for (int64_t b = b0; b < b1; ++b)
      init_state_row<T, kHasResets>(a, row, b, separate_input ? a.h_gemm : nullptr);
  const bool per_step_input = a.z == nullptr;
  for (int64_t t = t0; t < t1; ++t) {
    // zr[b0:b1] = (x_t[b0:b1] @ kernel if per step +) (m *) h[b0:b1] @ recurrent_kernel
    if (per_step_input)
      gemm_packed_serial(b1 - b0, a.inputs + row(b0, t) * d.I, row.batch_stride() * d.I, a.k,
                         a.zr + b0 * 4 * H, 4 * H, /*accumulate=*/false);
    gemm_packed_serial(b1 - b0, a.h_gemm + b0 * H, H, a.rk, a.zr + b0 * 4 * H, 4 * H,
                       /*accumulate=*/per_step_input);
    for (int64_t b = b0; b < b1; ++b) {
      forward_row_step<T, kHasResets, kHasMask, kTraining>(a, row, b, t, h + b * H, c + b * H, 0,
                                                           H);
      if (separate_input) gemm_input_row(m ? m + b * H : nullptr, h + b * H, H, a.h_gemm + b * H);
    }
  }
  if (last) store_final_state(a, b0 * H, b1 * H);
}

// Column split of the forward time loop (lstm_cpu_split.h): item (t, u) computes step t's
// recurrent products for unit block u (every gate), then its cell pass; the GEMM inputs of
// even and odd steps alternate between two buffers.
template <typename T, bool kHasResets, bool kHasMask, bool kTraining>
void forward_columns(const TaskRunner& runner, const ForwardPlan<T>& a, int64_t units) {
  const Dims& d = a.dims;
  const int64_t B = d.B, H = d.H;
  const RowIndex row{d.B, d.T, d.time_major};
  const T* m = a.recurrent_dropout_mask;
  T* in[2] = {a.h_gemm2, a.h_gemm2 + B * H};
  for (int64_t b = 0; b < B; ++b) init_state_row<T, kHasResets>(a, row, b, in[0]);
  const int64_t blocks = ceil_div(H, units);
  StepQueue queue(d.T, blocks);
  runner.run(runner.num_threads(), [&](int64_t) {
    for (int64_t item = queue.claim(); item >= 0; item = queue.claim()) {
      const int64_t t = item / blocks, j0 = (item % blocks) * units, j1 = std::min(H, j0 + units);
      queue.wait_for_step(t);
      for (int gate = 0; gate < 4; ++gate)  // zr[:, gate, j0:j1] = in_t @ R[:, gate, j0:j1]
        gemm_packed_serial(B, in[t % 2], H, a.rk, a.zr, 4 * H, /*accumulate=*/false,
                           gate * H + j0, j1 - j0);
      T* next = in[(t + 1) % 2];
      for (int64_t b = 0; b < B; ++b) {
        forward_row_step<T, kHasResets, kHasMask, kTraining>(a, row, b, t, a.h + b * H,
                                                             a.c + b * H, j0, j1);
        gemm_input_row(m ? m + b * H + j0 : nullptr, a.h + b * H + j0, j1 - j0,
                       next + b * H + j0);
      }
      queue.finish();
    }
  });
  store_final_state(a, 0, B * H);
}

template <typename T>
void forward(const TaskRunner& runner, const ForwardArgs<T>& args, T* workspace) {
  const Dims& d = args.dims;
  const int64_t B = d.B, T_ = d.T, I = d.I, H = d.H;
  const bool training = args.gates != nullptr;
  ForwardPlan<T> plan;
  static_cast<ForwardArgs<T>&>(plan) = args;
  int64_t bytes;
  forward_layout<T>(d, training, args.recurrent_dropout_mask != nullptr, workspace, &plan, &bytes);
  const int64_t rows = slab_rows<T>(B, runner.num_threads());
  const Split split = choose_split<T>(d, runner.num_threads());
  if (!split.columns && per_step_input_projection<T>(d, rows)) {
    plan.z = nullptr;
    plan.k = pack_b_full(runner, false, args.kernel, 4 * H, I, 4 * H, const_cast<T*>(plan.k.data));
    std::fill(const_cast<acc_t<T>*>(plan.zeros), const_cast<acc_t<T>*>(plan.zeros) + 4 * H,
              acc_t<T>(0));
  } else {
    // Hoisted input projection: z = inputs @ kernel for all B*T rows in one GEMM.
    gemm(runner, false, false, B * T_, 4 * H, I, args.inputs, I, args.kernel, 4 * H, plan.z,
         4 * H, /*accumulate=*/false);
  }
  plan.rk = pack_b_full(runner, false, args.recurrent_kernel, 4 * H, H, 4 * H,
                        const_cast<T*>(plan.rk.data));
  RLSTM_BOOL_SWITCH(args.resets != nullptr, kHasResets, [&] {
    RLSTM_BOOL_SWITCH(args.mask != nullptr, kHasMask, [&] {
      RLSTM_BOOL_SWITCH(training, kTraining, [&] {
        if (split.columns) {
          forward_columns<T, kHasResets, kHasMask, kTraining>(runner, plan, split.units);
          return;
        }
        run_slabs(runner, B, T_, rows,
                  [&](int64_t b0, int64_t b1, int64_t t0, int64_t t1, bool first, bool last) {
                    forward_slab<T, kHasResets, kHasMask, kTraining>(plan, b0, b1, t0, t1,
                                                                     first, last);
                  });
      });
    });
  });
}

}  // namespace RLSTM_ISA
}  // namespace cpu
}  // namespace resetlstm
