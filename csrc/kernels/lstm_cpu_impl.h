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
//
// Storage type T (float, double, bf16) vs compute type A = acc_t<T> (bf16 computes in float):
// GEMMs take T operands and accumulate into A; the running state, the pre-activations and the
// gate math are A; what the op returns or saves (outputs, gates, cells, gradients) is T.
// For float and double T == A and the A buffers alias the outputs, as they always did.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <atomic>
#include <cstdlib>
#include <thread>
#include <type_traits>

#include <unistd.h>

#include "cpu_gemm_impl.h"
#include "cpu_numeric.h"
#include "cpu_vector.h"
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

// Rows per slab: split B evenly over the threads, no slab under a micro-tile's MR rows. Not in
// whole micro-tiles: the GEMM tiles a slab evenly and a short tile costs only its rows (B = 16
// on 2 threads with AVX2's MR = 6 used to be slabs of 12 and 4 rows, one thread idle a third of
// each step).
template <typename T>
int64_t slab_rows(int64_t B, int threads) {
  constexpr int MR = Blocking<T>::MR;
  if (B <= 0) return 1;  // no slabs at all
  const int64_t slabs = std::max<int64_t>(1, std::min<int64_t>(threads, ceil_div(B, MR)));
  return ceil_div(B, slabs);
}

// Carves typed, 64-byte aligned arrays out of a workspace; with a null base it only counts
// the bytes, so the size functions and the kernels share one layout.
class Carver {
 public:
  explicit Carver(void* base) : base_(static_cast<char*>(base)) {}
  template <typename U>
  U* take(int64_t n, bool wanted = true) {
    if (!wanted) return nullptr;
    U* p = base_ ? reinterpret_cast<U*>(base_ + used_) : nullptr;
    used_ += round_up(n * static_cast<int64_t>(sizeof(U)), 64);
    return p;
  }
  int64_t bytes() const { return used_; }

 private:
  char* base_;
  int64_t used_ = 0;
};

// ---- forward --------------------------------------------------------------------------------

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

// Whether step t of row b runs the cell (it does unless the mask skips it); `a` is a forward
// or backward plan.
template <bool kHasMask, typename Plan>
inline bool step_active(const Plan& a, const RowIndex& row, int64_t b, int64_t t) {
  return !kHasMask || a.mask[row(b, t)];
}

// out[j] = m[j] * h[j] for one row (recurrent dropout: a separate pass keeps the cell loop free
// of the extra stream), in the types each side needs.
template <typename M, typename H, typename O>
inline void scale_row(const M* m, const H* h, int64_t n, O* out) {
#pragma GCC ivdep
  for (int64_t j = 0; j < n; ++j) out[j] = from_acc<O>(to_acc(m[j]) * to_acc(h[j]));
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

template <typename T, bool kHasResets, bool kHasMask, bool kTraining>
void forward_slab(const ForwardPlan<T>& a, int64_t b0, int64_t b1) {
  using A = acc_t<T>;
  const Dims& d = a.dims;
  const int64_t H = d.H;
  const RowIndex row{d.B, d.T, d.time_major};
  A* h = a.h;
  A* c = a.c;
  const T* m = a.recurrent_dropout_mask;
  const bool separate_input = static_cast<void*>(a.h_gemm) != static_cast<void*>(h);
  for (int64_t b = b0; b < b1; ++b)
    init_state_row<T, kHasResets>(a, row, b, separate_input ? a.h_gemm : nullptr);
  const bool per_step_input = a.z == nullptr;
  for (int64_t t = 0; t < d.T; ++t) {
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
  store_final_state(a, b0 * H, b1 * H);
}

// ---- small batches: hidden units split across threads, one barrier per step --------------
//
// With few rows per thread, the row-slab loops stream the whole recurrent kernel through each
// core every step for a handful of rows. Splitting the hidden units instead gives each thread
// all rows and a 1/threads share of the recurrent kernel (its 4 gate columns of a unit block,
// packed side by side), which stays in its L2; the price is a barrier per step, since the next
// step's GEMM reads every unit of h.
//
// Work items (s, u): step s, unit block u, claimed in order from one counter; an item of step s
// waits until every item of step s-1 is done. The earliest unfinished item never waits, so the
// loop finishes with any number of the runner's tasks actually running (one is enough): a busy
// or single-threaded pool cannot deadlock it.
class StepQueue {
 public:
  StepQueue(int64_t steps, int64_t per_step) : per_step_(per_step), total_(steps * per_step) {}
  // The next item, or -1 when all are claimed.
  int64_t claim() {
    const int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
    return i < total_ ? i : -1;
  }
  // Blocks until every item of steps < s is done (their writes visible).
  void wait_for_step(int64_t s) const { wait_for_count(done_, s * per_step_); }
  void finish() { done_.fetch_add(1, std::memory_order_release); }

 private:
  const int64_t per_step_, total_;
  alignas(64) std::atomic<int64_t> next_{0};  // own cache lines: claims do not disturb waiters
  alignas(64) std::atomic<int64_t> done_{0};
};

// How to split the time loop over the runner's threads.
struct Split {
  bool columns = false;  // units across threads (else rows)
  int64_t units = 0;     // units per block when columns
};

// RESETLSTM_CPU_SPLIT=rows|columns forces a split where both are possible (tests, bench);
// read at every call.
inline const char* split_override() {
  static const char* const kAllowed[] = {"rows", "columns", nullptr};
  return env_choice("RESETLSTM_CPU_SPLIT", kAllowed);
}

// Bytes of L2 cache per core (sysconf; 1 MiB when the system does not say).
inline int64_t l2_bytes() {
  static const int64_t bytes = [] {
    const long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return v > 0 ? static_cast<int64_t>(v) : int64_t{1} << 20;
  }();
  return bytes;
}

template <typename T>
Split choose_split(const Dims& d, int threads) {
  constexpr int NR = Blocking<T>::NR, MR = Blocking<T>::MR;
  Split split;
  // Unit blocks must start on a panel of the packed kernels: H a multiple of NR.
  if (threads < 2 || d.H % NR != 0 || d.T == 0 || d.B == 0) return split;
  const char* forced = split_override();
  if (forced && std::strcmp(forced, "rows") == 0) return split;
  const bool force_columns = forced && std::strcmp(forced, "columns") == 0;
  // Columns only pay for their per-step barrier when the recurrent kernel does not fit a
  // core's L2 (rows then stream all of it from L3 every step, for few rows per thread).
  // Measured with bench/kernel_bench on an AMD EPYC (Zen 5, 2 threads, 1 MiB L2 per core),
  // fwd+bwd: B = 16, H = 1024: columns 46.3-49.2 ms, rows 50.5-52.5; H = 512: 26.8 / 26.5;
  // H <= 256 (kernel <= L2): rows as fast or faster at B = 8-64 (the barrier costs more than
  // it saves; before the two counters got their own cache lines, much more).
  const int64_t kernel_bytes = 4 * d.H * d.H * static_cast<int64_t>(sizeof(T));
  const bool small_batch = d.B <= static_cast<int64_t>(threads) * 2 * MR;
  if (!force_columns && !(small_batch && kernel_bytes > 2 * l2_bytes())) return split;
  // About 4 blocks per thread for balance, at least one panel each.
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(d.H / NR, 4 * threads));
  split.columns = true;
  split.units = round_up(ceil_div(d.H, blocks), NR);
  return split;
}

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

// The input projection x W: hoisted (one GEMM over all B*T rows before the time loop, into z)
// or per step (each slab computes x_t W for its rows right before h R, into the same cached
// buffer). Per step saves z's trips through memory (and, in inference, faulting in the whole
// [B,T,4H] scratch) but streams the packed kernel through every thread every step: each
// streamed byte then serves `rows` rows, cheap when the kernel stays in the core's L2, and
// from L3 once a slab has 8 rows or more. Measured through the TF op on an AMD EPYC (Zen 5,
// 2 threads, 1 MiB L2/core), per step vs hoisted: fwd 3-18 % faster from (16,50,128,128) to
// (1024,20,512,512), fwd+bwd -20 % .. +1 %; at B = 4, I = 2048 (4-row slab, 8 MiB kernel) per
// step was 2.6x slower, at B = 16 (8-row slabs) 15 % faster. RESETLSTM_CPU_INPUT=hoisted|
// per_step forces either.
template <typename T>
bool per_step_input_projection(const Dims& d, int64_t rows_per_slab) {
  static const char* const kAllowed[] = {"hoisted", "per_step", nullptr};
  if (const char* forced = env_choice("RESETLSTM_CPU_INPUT", kAllowed))
    return std::strcmp(forced, "per_step") == 0;
  const int64_t kernel_bytes = d.I * 4 * d.H * static_cast<int64_t>(sizeof(T));
  return kernel_bytes <= l2_bytes() / 2 || std::min(d.B, rows_per_slab) >= 8;
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
        runner.run(ceil_div(B, rows), [&](int64_t s) {
          forward_slab<T, kHasResets, kHasMask, kTraining>(plan, s * rows,
                                                           std::min(B, (s + 1) * rows));
        });
      });
    });
  });
}

// ---- backward -------------------------------------------------------------------------------

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

template <typename T, bool kHasResets, bool kHasMask, bool kHasDy>
void backward_slab(const BackwardPlan<T>& a, int64_t b0, int64_t b1) {
  const Dims& d = a.dims;
  const int64_t H = d.H;
  const RowIndex row{d.B, d.T, d.time_major};
  for (int64_t b = b0; b < b1; ++b) backward_init_row<T, kHasMask>(a, b, 0, H);
  const int64_t ldz = row.batch_stride() * 4 * H;
  for (int64_t t = d.T - 1; t >= 0; --t) {
    for (int64_t b = b0; b < b1; ++b)
      backward_row_step<T, kHasResets, kHasMask, kHasDy>(a, row, b, t, 0, H);
    // dh[b0:b1] += dz[b0:b1, t] @ recurrent_kernel^T
    gemm_packed_serial(b1 - b0, a.dz + row(b0, t) * 4 * H, ldz, a.rk_t, a.dh + b0 * H, H,
                       /*accumulate=*/true);
  }
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
        runner.run(ceil_div(B, rows), [&](int64_t s) {
          const int64_t b0 = s * rows, b1 = std::min(B, (s + 1) * rows);
          rebuild_recurrent_inputs<T, kHasResets, kHasMask>(plan, b0, b1);
          if (!split.columns) backward_slab<T, kHasResets, kHasMask, kHasDy>(plan, b0, b1);
        });
        if (split.columns)
          backward_columns<T, kHasResets, kHasMask, kHasDy>(runner, plan, split.units);
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

#define RLSTM_INSTANTIATE(T)                                                                \
  template int64_t forward_workspace_size<T>(const Dims&, bool);                            \
  template int64_t backward_workspace_size<T>(const Dims&, bool);                           \
  template void forward<T>(const TaskRunner&, const ForwardArgs<T>&, T*);                   \
  template void backward<T>(const TaskRunner&, const BackwardArgs<T>&, T*);

#if !defined(RLSTM_ONLY_BF16)
RLSTM_INSTANTIATE(float)
RLSTM_INSTANTIATE(double)
#endif
RLSTM_INSTANTIATE(bf16)
#undef RLSTM_INSTANTIATE

}  // namespace RLSTM_ISA
}  // namespace cpu
}  // namespace resetlstm
