// CUDA backward (BPTT) of the recurrence engine (see recurrence_cuda.h), generic over the cell,
// the same algorithm as the CPU backward (recurrence_cpu_backward.h):
//   rebuild the state entering every step, h_in, and what the recurrent GEMM read, m * h_in
//   (one kernel, threads over (b, j));
//   per step t, last to first: one fused elementwise kernel (the step's pre-activation
//   gradients, dc carried, the reset cut, the mask's pass-through, and what reaches h_prev
//   directly); a two-stage cell then runs its last gate's GEMM backward and a small kernel for
//   the reset gate; one GEMM dh += dz[:, t] @ recurrent_kernel^T; with recurrent dropout a
//   kernel makes dh = m * dh + direct;
//   then the weight and input gradients as large GEMMs over all B*T rows and the bias
//   gradients as deterministic column reductions.
// Half storage types (bf16, f16) compute in float32 (acc_t), as the CPU kernels do: dz and the
// rebuilt recurrent inputs are GEMM operands and so half; the running gradients dh, dc (and the
// mask's carried output gradient) are float32 workspace buffers; the weight and input
// gradients come out of float32-accumulating GEMMs rounded once, the bias gradient out of a
// float32 column sum.
// Nothing is allocated or synchronised in the time loop.
#include "recurrence_cuda_common.cuh"

namespace resetlstm {
namespace cuda {
namespace {

template <typename Cell>
constexpr int kFirstStageGates = Cell::kTwoStage ? Cell::kGates - 1 : Cell::kGates;

// ---- recurrent inputs ----------------------------------------------------------------------

template <typename T>
struct RebuildParams {
  RowIndex row;
  int64_t H;
  const bool* resets;  // [B,T] or null
  const bool* mask;    // [B,T] or null
  const T* h0;         // [B,H] or null
  const T* outputs;    // [B,T,H]
  const T* dropout;    // [B,H] recurrent dropout mask m, or null
  T* h_in;             // [B,T,H] out: post-reset h entering each step
  T* h_op;             // [B,T,H] out: what the recurrent GEMM read, m * h_in (may be h_in:
                       // in place, for cells that need no h_in of their own)
};

// After an active step the state entering the next one is that step's output; after a masked
// step the state it carried. Each thread walks its (b, j) through time.
template <typename T, bool kHasResets, bool kHasMask>
__global__ void __launch_bounds__(kThreads) rebuild_recurrent_inputs_kernel(RebuildParams<T> p) {
  const int64_t idx = flat_thread_index();
  const int64_t H = p.H;
  if (idx >= p.row.B * H || p.row.T == 0) return;
  int64_t b, j;
  split_index(idx, H, &b, &j);
  const bool reset0 = kHasResets && p.resets[p.row(b, 0)];
  T cur = p.h0 && !reset0 ? p.h0[idx] : T{};
  for (int64_t t = 0;; ++t) {
    const int64_t r = p.row(b, t);
    p.h_in[r * H + j] = cur;
    if (p.dropout) p.h_op[r * H + j] = gemm_input(p.dropout, idx, to_acc(cur));
    if (t + 1 == p.row.T) break;
    if (kHasResets && p.resets[p.row(b, t + 1)])
      cur = T{};
    else if (!kHasMask || p.mask[r])
      cur = p.outputs[r * H + j];
  }
}

// ---- the time loop -------------------------------------------------------------------------

// dh, dc = upstream gradients wrt the final state (zeros when absent); dy_carry = 0.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    init_grad_kernel(int64_t n, const T* d_h_final, const T* d_c_final, acc_t<T>* dh,
                     acc_t<T>* dc, acc_t<T>* dy_carry) {
  using A = acc_t<T>;
  const int64_t idx = flat_thread_index();
  if (idx >= n) return;
  dh[idx] = d_h_final ? to_acc(d_h_final[idx]) : A(0);
  if (dc) dc[idx] = d_c_final ? to_acc(d_c_final[idx]) : A(0);
  if (dy_carry) dy_carry[idx] = A(0);
}

template <typename T>
struct BackwardStepParams {
  using A = acc_t<T>;
  RowIndex row;
  int64_t H;
  const bool* resets;     // [B,T] or null
  const bool* mask;       // [B,T] or null
  const T* c0;            // [B,H] or null
  const T* gates;         // [B,T,S*H] saved activations
  const T* cells;         // [B,T,H] (cell state) or null
  const T* h_in;          // [B,T,H] the state entering each step
  const T* d_outputs;     // [B,T,H] or null
  T* dz;                  // [B,T,G*H] out: the recurrent side's pre-activation gradients
  T* dz_x;                // [B,T,G*H] out: the input side's (cells that split them), or null
  A* dh;                  // [B,H] in: wrt the state leaving the step; out: the direct part (or
                          // zero when `direct` holds it), for the GEMM to accumulate onto
  A* dc;                  // [B,H] gradient wrt the c leaving the step, carried backwards
  A* direct;              // [B,H] with dropout: the direct part, else null (it goes to dh)
  A* dy_carry;            // [B,H] with a mask: gradient reaching the previous output
  bool zero_dh;           // the GEMM accumulates onto dh (a mask, a direct part or dropout):
                          // an LSTM without either overwrites it instead
};

template <typename Cell, typename T, bool kHasResets, bool kHasMask, bool kHasDy>
__global__ void __launch_bounds__(kThreads)
    backward_step_kernel(BackwardStepParams<T> p, int64_t t) {
  using A = acc_t<T>;
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  const int64_t idx = flat_thread_index();
  const int64_t H = p.H, GH = G * H;
  if (idx >= p.row.B * H) return;
  int64_t b, j;
  split_index(idx, H, &b, &j);
  const int64_t r = p.row(b, t);
  // the step t+1 reset cuts the gradient coming back from it
  const bool reset_next = kHasResets && t + 1 < p.row.T && p.resets[p.row(b, t + 1)];
  const bool reset = kHasResets && p.resets[r];
  T* dz = p.dz + r * GH;
  T* dz_x = Cell::kSplitInputGrad ? p.dz_x + r * GH : nullptr;
  const A dh_next = p.dh[idx];
  if (!kHasMask || p.mask[r]) {
    const T* g = p.gates + r * S * H;
    A dh_t = reset_next ? A(0) : dh_next;
    if (kHasDy) dh_t += to_acc(p.d_outputs[r * H + j]);
    if (kHasMask) dh_t += p.dy_carry[idx];
    A c_in = A(0), c = A(0), dc = A(0);
    if (Cell::kCellState) {
      c_in = reset   ? A(0)
             : t > 0 ? to_acc(p.cells[p.row(b, t - 1) * H + j])
             : p.c0  ? to_acc(p.c0[idx])
                     : A(0);
      c = to_acc(p.cells[r * H + j]);
      dc = p.dc[idx];
    }
    A saved[S], d_rec[G], d_in = A(0), dh_direct = A(0), dc_in = A(0);
    for (int k = 0; k < S; ++k) saved[k] = to_acc(g[k * H + j]);
    Cell::template backward<A>(saved, to_acc(p.h_in[r * H + j]), c_in, c, dh_t, dc, d_rec, &d_in,
                               &dh_direct, &dc_in);
    for (int k = 0; k < G; ++k) dz[k * H + j] = from_acc<T>(d_rec[k]);
    if (Cell::kSplitInputGrad) {
      for (int k = 0; k + 1 < G; ++k) dz_x[k * H + j] = from_acc<T>(d_rec[k]);
      dz_x[(G - 1) * H + j] = from_acc<T>(d_in);
    }
    if (Cell::kCellState) p.dc[idx] = reset ? A(0) : dc_in;  // no gradient crosses a reset
    if (p.direct) {
      p.direct[idx] = dh_direct;
      p.dh[idx] = A(0);
    } else if (Cell::kDirectGrad || p.zero_dh) {
      p.dh[idx] = dh_direct;  // (zero for the LSTM) the GEMM accumulates onto it
    }
    if (kHasMask) p.dy_carry[idx] = A(0);
  } else if (kHasMask) {
    // Masked step: the state passes through, the output gradient goes to y_{t-1}.
    for (int k = 0; k < G; ++k) {
      dz[k * H + j] = T{};
      if (Cell::kSplitInputGrad) dz_x[k * H + j] = T{};
    }
    p.dh[idx] = reset_next ? A(0) : dh_next;
    if (Cell::kCellState && reset) p.dc[idx] = A(0);
    if (kHasDy) p.dy_carry[idx] += to_acc(p.d_outputs[r * H + j]);
  }
}

// Two-stage cells, step t after the second GEMM's backward (d_op = dz[:, t, last] @ U_n^T): the
// reset gate's gradient, what reaches h_prev through r * g (added to the direct part), and
// what the second GEMM read (for its weight gradient; zero at masked steps).
template <typename Cell, typename T, bool kHasMask>
__global__ void __launch_bounds__(kThreads)
    second_stage_backward_kernel(RowIndex row, int64_t H, int64_t t, const bool* mask,
                                 const T* gates, const T* h_op, const T* dropout,
                                 const acc_t<T>* d_op, T* dz, acc_t<T>* direct, T* gated_in) {
  using A = acc_t<T>;
  const int64_t idx = flat_thread_index();
  if (idx >= row.B * H) return;
  int64_t b, j;
  split_index(idx, H, &b, &j);
  const int64_t r = row(b, t);
  if (kHasMask && !mask[r]) {
    gated_in[r * H + j] = T{};
    return;
  }
  const A saved[2] = {A(0), to_acc(gates[r * Cell::kSaved * H + H + j])};  // r is saved[1]
  const A g = to_acc(h_op[r * H + j]);
  A dir = direct[idx];
  dz[r * Cell::kGates * H + H + j] = from_acc<T>(
      Cell::stage_backward(saved, g, dropout ? to_acc(dropout[idx]) : A(1), d_op[idx], &dir));
  direct[idx] = dir;
  gated_in[r * H + j] = from_acc<T>(saved[1] * g);
}

// With recurrent dropout, after step t's GEMM (the gradient wrt m * h_prev): dh = m * dh +
// direct at the active (b, j).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    apply_dropout_kernel(RowIndex row, int64_t H, int64_t t, const bool* mask, const T* dropout,
                         const acc_t<T>* direct, acc_t<T>* dh) {
  const int64_t idx = flat_thread_index();
  if (idx >= row.B * H) return;
  int64_t b, j;
  split_index(idx, H, &b, &j);
  if (mask && !mask[row(b, t)]) return;
  dh[idx] = to_acc(dropout[idx]) * dh[idx] + direct[idx];
}

// Gradient wrt the initial state: dh is wrt the state entering step 0, which is h0, or zero
// after a reset. Half types: the float32 gradients are then rounded into d_h0 / d_c0.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    finish_dh0_kernel(RowIndex row, int64_t H, const bool* resets, acc_t<T>* dh,
                      const acc_t<T>* dc, T* d_h0, T* d_c0) {
  using A = acc_t<T>;
  const int64_t idx = flat_thread_index();
  if (idx >= row.B * H) return;
  int64_t b, j;
  split_index(idx, H, &b, &j);
  if (row.T > 0 && resets && resets[row(b, 0)]) dh[idx] = A(0);
  if (kWidened<T>) {
    d_h0[idx] = from_acc<T>(dh[idx]);
    if (dc) d_c0[idx] = from_acc<T>(dc[idx]);
  }
}

// ---- bias gradient: column sums of dz [rows, cols] (row stride ld), deterministic ----------

constexpr int kSumCols = 32;        // columns per block (one warp wide)
constexpr int kSumRowThreads = 8;   // row lanes per block
constexpr int64_t kMaxSumChunks = 256;

inline int64_t sum_chunks(int64_t rows) {
  const int64_t chunks = (rows + 255) / 256;
  return chunks < 1 ? 1 : (chunks > kMaxSumChunks ? kMaxSumChunks : chunks);
}

// partial[chunk, col] = sum of x[r, col] over the chunk's rows, in a fixed order (in acc_t).
template <typename T>
__global__ void __launch_bounds__(kSumCols * kSumRowThreads)
    column_partial_sums_kernel(const T* x, int64_t ld, int64_t rows, int64_t cols,
                               int64_t rows_per_chunk, acc_t<T>* partial) {
  using A = acc_t<T>;
  __shared__ A lanes[kSumRowThreads][kSumCols + 1];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kSumCols + threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  A acc = A(0);
  if (col < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kSumRowThreads)
      acc += to_acc(x[r * ld + col]);
  lanes[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    A total = A(0);
    for (int k = 0; k < kSumRowThreads; ++k) total += lanes[k][threadIdx.x];
    partial[static_cast<int64_t>(blockIdx.y) * cols + col] = total;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    column_sums_finish_kernel(const acc_t<T>* partial, int64_t chunks, int64_t cols, T* out) {
  using A = acc_t<T>;
  const int64_t col = flat_thread_index();
  if (col >= cols) return;
  A total = A(0);
  for (int64_t k = 0; k < chunks; ++k) total += partial[k * cols + col];
  out[col] = from_acc<T>(total);
}

template <typename T>
Status column_sums(const T* x, int64_t ld, int64_t rows, int64_t cols, acc_t<T>* partial, T* out,
                   cudaStream_t stream) {
  if (cols <= 0) return Status::Ok();
  const int64_t chunks = sum_chunks(rows);
  const int64_t rows_per_chunk = rows > 0 ? (rows + chunks - 1) / chunks : 0;
  const dim3 grid(static_cast<unsigned int>((cols + kSumCols - 1) / kSumCols),
                  static_cast<unsigned int>(chunks));
  column_partial_sums_kernel<T><<<grid, dim3(kSumCols, kSumRowThreads), 0, stream>>>(
      x, ld, rows, cols, rows_per_chunk, partial);
  RLSTM_LAUNCH_TRY();
  column_sums_finish_kernel<T><<<blocks_for(cols), kThreads, 0, stream>>>(partial, chunks, cols,
                                                                          out);
  RLSTM_LAUNCH_TRY();
  return Status::Ok();
}

template <typename Cell, typename T>
int64_t cell_backward_workspace_size(const cpu::Dims& d, bool has_mask) {
  const int64_t BT = d.B * d.T, BH = d.B * d.H, s = static_cast<int64_t>(sizeof(T));
  const int64_t a = static_cast<int64_t>(sizeof(acc_t<T>)), GH = Cell::kGates * d.H;
  const int64_t state_bytes = kWidened<T> ? BH * a : 0;
  return workspace_elements<T>(
      {kCublasWorkspaceBytes, BT * GH * s, Cell::kSplitInputGrad ? BT * GH * s : 0, BT * d.H * s,
       Cell::kDirectGrad ? BT * d.H * s : 0 /* h_op */, Cell::kTwoStage ? BT * d.H * s : 0,
       has_mask ? BH * a : 0, sum_chunks(BT) * GH * a, state_bytes,
       Cell::kCellState ? state_bytes : 0, BH * a /* direct (dropout) */,
       Cell::kTwoStage ? BH * a : 0});
}

template <typename Cell, typename T>
Status cell_backward(const cpu::BackwardArgs<T>& a, void* workspace,
                     const LaunchOptions& options) {
  using A = acc_t<T>;
  constexpr int G = Cell::kGates;
  const cpu::Dims& d = a.dims;
  const int64_t B = d.B, T_ = d.T, I = d.I, H = d.H, BT = B * T_, BH = B * H, GH = G * H;
  if (BH > 0 && (!a.d_h0 || (Cell::kCellState && !a.d_c0)))
    return Status::Error(Cell::kCellState ? "reset_lstm backward: d_h0 and d_c0 are required"
                                          : "backward: d_h0 is required");
  if (!workspace) return Status::Error("backward: no workspace");

  DeviceGuard device;
  RLSTM_TRY(device.set(options.device));
  RLSTM_TRY(check_dtype_support<T>(device.device()));
  const auto stream = static_cast<cudaStream_t>(options.stream);
  const T* dropout = a.recurrent_dropout_mask;
  WorkspaceCarver carve(workspace);
  void* blas_workspace = carve.take_bytes(kCublasWorkspaceBytes);
  T* dz = carve.take<T>(BT * GH);
  T* dz_x = Cell::kSplitInputGrad ? carve.take<T>(BT * GH) : dz;
  T* h_in = carve.take<T>(BT * H);
  T* h_op_buffer = Cell::kDirectGrad ? carve.take<T>(BT * H) : nullptr;
  // what the recurrent GEMM read: m * h_in with dropout (in place for a cell that needs no h_in)
  T* h_op = !dropout ? h_in : (Cell::kDirectGrad ? h_op_buffer : h_in);
  T* gated_in = Cell::kTwoStage ? carve.take<T>(BT * H) : nullptr;
  A* dy_carry = a.mask ? carve.take<A>(BH) : nullptr;
  A* bias_partial = carve.take<A>(sum_chunks(BT) * GH);
  A *dh, *dc = nullptr;  // running gradients wrt the state leaving the current step
  if constexpr (kWidened<T>) {
    dh = carve.take<A>(BH);
    if (Cell::kCellState) dc = carve.take<A>(BH);
  } else {
    dh = a.d_h0;
    if (Cell::kCellState) dc = a.d_c0;
  }
  A* direct_buffer = carve.take<A>(BH);
  A* direct = dropout ? direct_buffer : nullptr;
  A* d_op = Cell::kTwoStage ? carve.take<A>(BH) : nullptr;
  BlasSession blas;
  RLSTM_TRY(blas.begin(device.device(), options.stream, blas_workspace, kCublasWorkspaceBytes,
                       options.allow_tf32));

  const RowIndex row{B, T_, d.time_major};
  const int64_t first = kFirstStageGates<Cell> * H;
  if (BH > 0) {
    init_grad_kernel<T><<<blocks_for(BH), kThreads, 0, stream>>>(BH, a.d_h_final, a.d_c_final, dh,
                                                                 dc, dy_carry);
    RLSTM_LAUNCH_TRY();
    // the GEMM accumulates onto dh unless an LSTM without mask and dropout lets it overwrite
    const bool accumulate = Cell::kDirectGrad || a.mask || dropout;
    const Status loop = RLSTM_BOOL_SWITCH(a.resets != nullptr, kHasResets, [&] {
      return RLSTM_BOOL_SWITCH(a.mask != nullptr, kHasMask, [&] {
        return RLSTM_BOOL_SWITCH(a.d_outputs != nullptr, kHasDy, [&]() -> Status {
          RebuildParams<T> rp{row, H, a.resets, a.mask, a.h0, a.outputs, dropout, h_in, h_op};
          rebuild_recurrent_inputs_kernel<T, kHasResets, kHasMask>
              <<<blocks_for(BH), kThreads, 0, stream>>>(rp);
          RLSTM_LAUNCH_TRY();
          BackwardStepParams<T> p{row,   H,     a.resets, a.mask,    a.c0,
                                  a.gates, a.cells, h_in, a.d_outputs, dz,
                                  Cell::kSplitInputGrad ? dz_x : nullptr,
                                  dh,    dc,    direct,   dy_carry,  accumulate};
          const int64_t ldz = row.batch_stride() * GH;
          for (int64_t t = T_ - 1; t >= 0; --t) {
            backward_step_kernel<Cell, T, kHasResets, kHasMask, kHasDy>
                <<<blocks_for(BH), kThreads, 0, stream>>>(p, t);
            RLSTM_LAUNCH_TRY();
            const T* dz_t = dz + row(0, t) * GH;
            if constexpr (Cell::kTwoStage) {  // d_op = dz[:, t, last] @ R[:, last]^T
              RLSTM_TRY((blas.gemm<T, A>(false, true, B, H, H, dz_t + first, ldz,
                                        a.recurrent_kernel + first, GH, /*accumulate=*/false,
                                        d_op, H)));
              second_stage_backward_kernel<Cell, T, kHasMask>
                  <<<blocks_for(BH), kThreads, 0, stream>>>(row, H, t, a.mask, a.gates, h_op,
                                                           dropout, d_op, dz, direct ? direct : dh,
                                                           gated_in);
              RLSTM_LAUNCH_TRY();
            }
            // dh (+)= dz[:, t, first-stage gates] @ recurrent_kernel[:, first-stage gates]^T
            RLSTM_TRY((blas.gemm<T, A>(false, true, B, H, first, dz_t, ldz, a.recurrent_kernel, GH,
                                      accumulate, dh, H)));
            if (dropout) {
              apply_dropout_kernel<T><<<blocks_for(BH), kThreads, 0, stream>>>(
                  row, H, t, a.mask, dropout, direct, dh);
              RLSTM_LAUNCH_TRY();
            }
          }
          return Status::Ok();
        });
      });
    });
    RLSTM_TRY(loop);
    finish_dh0_kernel<T><<<blocks_for(BH), kThreads, 0, stream>>>(row, H, a.resets, dh, dc,
                                                                  a.d_h0, a.d_c0);
    RLSTM_LAUNCH_TRY();
  }

  // Weight and input gradients: a few large GEMMs over all B*T rows (recurrence_cpu_backward.h's
  // weight_and_input_gradients: dz_x on the input side, dz on the recurrent side).
  // d_kernel = inputs^T @ dz_x
  RLSTM_TRY((blas.gemm<T, T>(true, false, I, GH, BT, a.inputs, I, dz_x, GH, false, a.d_kernel,
                            GH)));
  // d_recurrent_kernel = h_op^T @ dz (a two-stage cell's last gate: gated_in^T @ dz)
  RLSTM_TRY((blas.gemm<T, T>(true, false, H, first, BT, h_op, H, dz, GH, false,
                            a.d_recurrent_kernel, GH)));
  if (Cell::kTwoStage)
    RLSTM_TRY((blas.gemm<T, T>(true, false, H, H, BT, gated_in, H, dz + first, GH, false,
                              a.d_recurrent_kernel + first, GH)));
  // d_inputs = dz_x @ kernel^T
  RLSTM_TRY((blas.gemm<T, T>(false, true, BT, I, GH, dz_x, GH, a.kernel, GH, false, a.d_inputs,
                            I)));
  // d_bias = column sums of dz_x (and, for a recurrent bias row, of dz)
  RLSTM_TRY(column_sums<T>(dz_x, GH, BT, GH, bias_partial, a.d_bias, stream));
  if (Cell::kBiasRows > 1)
    RLSTM_TRY(column_sums<T>(dz, GH, BT, GH, bias_partial, a.d_bias + GH, stream));
  return Status::Ok();
}

}  // namespace

template <typename T>
int64_t backward_workspace_size(const cpu::Dims& d, bool has_mask) {
  return cpu::with_cell(d.cell, [&](auto c) {
    return cell_backward_workspace_size<decltype(c), T>(d, has_mask);
  });
}

template <typename T>
Status backward(const cpu::BackwardArgs<T>& a, void* workspace, const LaunchOptions& options) {
  return cpu::with_cell(a.dims.cell, [&](auto c) {
    return cell_backward<decltype(c), T>(a, workspace, options);
  });
}

#define RLSTM_INSTANTIATE(T)                                             \
  template int64_t backward_workspace_size<T>(const cpu::Dims&, bool);   \
  template Status backward<T>(const cpu::BackwardArgs<T>&, void*, const LaunchOptions&);

RLSTM_INSTANTIATE(float)
RLSTM_INSTANTIATE(double)
RLSTM_INSTANTIATE(cpu::bf16)
RLSTM_INSTANTIATE(cpu::f16)
#undef RLSTM_INSTANTIATE

}  // namespace cuda
}  // namespace resetlstm
