// CUDA backward (BPTT) of the reset-LSTM (see lstm_cuda.h), the same algorithm as the CPU
// backward (lstm_cpu_impl.h) with the gate math of lstm_cell.h:
//   rebuild the recurrent input h_in of every step (one kernel, threads over (b, j));
//   per step t, last to first: one fused elementwise kernel (dz of the step, dc carried, the
//   reset cut, the mask's pass-through), then one GEMM dh = dz[:, t] @ recurrent_kernel^T;
//   then the weight and input gradients as three large GEMMs over all B*T rows and the bias
//   gradient as a deterministic column reduction of dz.
// Half storage types (bf16, f16) compute in float32 (acc_t), as the CPU kernels do: dz and the
// rebuilt recurrent inputs are GEMM operands and so half; the running gradients dh, dc (and the
// mask's carried output gradient) are float32 workspace buffers; the weight and input
// gradients come out of float32-accumulating GEMMs rounded once, the bias gradient out of a
// float32 column sum.
// Nothing is allocated or synchronised in the time loop.
#include "lstm_cuda_common.cuh"

namespace resetlstm {
namespace cuda {
namespace {

// ---- recurrent inputs ----------------------------------------------------------------------

template <typename T>
struct RebuildParams {
  RowIndex row;
  int64_t H;
  const bool* resets;  // [B,T] or null
  const bool* mask;    // [B,T] or null
  const T* h0;         // [B,H] or null
  const T* outputs;    // [B,T,H]
  const T* gates;      // [B,T,4H]
  const T* cells;      // [B,T,H]
  const T* dropout;    // [B,H] recurrent dropout mask m, or null
  T* h_in;             // [B,T,H] out: post-reset h entering each step (m * h with dropout)
};

// Without a mask the state after a step is that step's output; with one, masked steps repeat
// the previous output rather than the state, so active steps recompute h = o * tanh(c) from the
// saved gates exactly as the forward did. Each thread walks its (b, j) through time. With
// recurrent dropout it stores what the recurrent GEMM read, m * h_in.
template <typename T, bool kHasResets, bool kHasMask>
__global__ void __launch_bounds__(kThreads) rebuild_recurrent_inputs_kernel(RebuildParams<T> p) {
  const int64_t idx = flat_thread_index();
  const int64_t H = p.H;
  if (idx >= p.row.B * H || p.row.T == 0) return;
  int64_t b, j;
  split_index(idx, H, &b, &j);
  const bool reset0 = kHasResets && p.resets[p.row(b, 0)];
  T cur = p.h0 && !reset0 ? p.h0[idx] : T{};
  p.h_in[p.row(b, 0) * H + j] = gemm_input(p.dropout, idx, to_acc(cur));
  for (int64_t t = 0; t + 1 < p.row.T; ++t) {
    const int64_t r = p.row(b, t), rn = p.row(b, t + 1);
    if (kHasResets && p.resets[rn])
      cur = T{};
    else if (!kHasMask)
      cur = p.outputs[r * H + j];
    else if (p.mask[r])
      cur = from_acc<T>(cell_hidden(to_acc(p.gates[r * 4 * H + 3 * H + j]),
                                    to_acc(p.cells[r * H + j])));
    p.h_in[rn * H + j] = gemm_input(p.dropout, idx, to_acc(cur));
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
  dc[idx] = d_c_final ? to_acc(d_c_final[idx]) : A(0);
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
  const T* gates;         // [B,T,4H]
  const T* cells;         // [B,T,H]
  const T* d_outputs;     // [B,T,H] or null
  T* dz;                  // [B,T,4H] out: gradient wrt the pre-activations
  A* dh;                  // [B,H] in: dz[:, t+1] @ R^T; with a mask zeroed here, else overwritten
  A* dc;                  // [B,H] gradient wrt the c leaving the step, carried backwards
  A* dy_carry;            // [B,H] with a mask: gradient reaching the previous output
  const T* dropout;       // [B,H] recurrent dropout mask m, or null
};

template <typename T, bool kHasResets, bool kHasMask, bool kHasDy>
__global__ void __launch_bounds__(kThreads)
    backward_step_kernel(BackwardStepParams<T> p, int64_t t) {
  using A = acc_t<T>;
  const int64_t idx = flat_thread_index();
  const int64_t H = p.H;
  if (idx >= p.row.B * H) return;
  int64_t b, j;
  split_index(idx, H, &b, &j);
  const int64_t r = p.row(b, t);
  // dh holds dz_{t+1} @ R^T (+ carried gradient); the step t+1 reset cut it if set.
  const bool reset_next = kHasResets && t + 1 < p.row.T && p.resets[p.row(b, t + 1)];
  const bool reset = kHasResets && p.resets[r];
  T* dz = p.dz + r * 4 * H;
  // dh holds dz_{t+1} @ R^T when step t+1 ran the cell: the gradient wrt m * h, so wrt h it is
  // m times that. (After a skipped step it is already wrt h; at t = T-1 it is d_h_final.)
  A dh_next = p.dh[idx];
  if (p.dropout && t + 1 < p.row.T && (!kHasMask || p.mask[p.row(b, t + 1)]))
    dh_next *= to_acc(p.dropout[idx]);
  if (!kHasMask || p.mask[r]) {
    const T* g = p.gates + r * 4 * H;
    A dh_t = reset_next ? A(0) : dh_next;
    if (kHasDy) dh_t += to_acc(p.d_outputs[r * H + j]);
    if (kHasMask) dh_t += p.dy_carry[idx];
    const A c_in = reset   ? A(0)
                   : t > 0 ? to_acc(p.cells[p.row(b, t - 1) * H + j])
                   : p.c0  ? to_acc(p.c0[idx])
                           : A(0);
    A dz_i, dz_f, dz_c, dz_o, dc_in;
    cell_backward(to_acc(g[j]), to_acc(g[H + j]), to_acc(g[2 * H + j]), to_acc(g[3 * H + j]),
                  c_in, to_acc(p.cells[r * H + j]), dh_t, p.dc[idx], &dz_i, &dz_f, &dz_c, &dz_o,
                  &dc_in);
    dz[j] = from_acc<T>(dz_i);
    dz[H + j] = from_acc<T>(dz_f);
    dz[2 * H + j] = from_acc<T>(dz_c);
    dz[3 * H + j] = from_acc<T>(dz_o);
    p.dc[idx] = reset ? A(0) : dc_in;  // no gradient crosses a reset
    if (kHasMask) {
      p.dh[idx] = A(0);  // the GEMM accumulates dz @ R^T here (beta = 1 with a mask)
      p.dy_carry[idx] = A(0);
    }
  } else if (kHasMask) {
    // Masked step: the state passes through, the output gradient goes to y_{t-1}.
    dz[j] = dz[H + j] = dz[2 * H + j] = dz[3 * H + j] = T{};
    p.dh[idx] = reset_next ? A(0) : dh_next;
    if (reset) p.dc[idx] = A(0);
    if (kHasDy) p.dy_carry[idx] += to_acc(p.d_outputs[r * H + j]);
  }
}

// Gradient wrt the initial state: dh is wrt h_in of step 0 (times m if step 0 ran the cell
// with recurrent dropout), and h_in of step 0 is h0, or zero after a reset. Half types: the
// float32 gradients are then rounded into d_h0 / d_c0.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    finish_dh0_kernel(RowIndex row, int64_t H, const bool* resets, const bool* mask,
                      const T* dropout, acc_t<T>* dh, const acc_t<T>* dc, T* d_h0, T* d_c0) {
  using A = acc_t<T>;
  const int64_t idx = flat_thread_index();
  if (idx >= row.B * H) return;
  int64_t b, j;
  split_index(idx, H, &b, &j);
  if (row.T > 0) {
    if (resets && resets[row(b, 0)])
      dh[idx] = A(0);
    else if (dropout && (!mask || mask[row(b, 0)]))
      dh[idx] *= to_acc(dropout[idx]);
  }
  if (kWidened<T>) {
    d_h0[idx] = from_acc<T>(dh[idx]);
    d_c0[idx] = from_acc<T>(dc[idx]);
  }
}

// ---- bias gradient: column sums of dz [rows, cols], deterministic --------------------------

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
    column_partial_sums_kernel(const T* x, int64_t rows, int64_t cols, int64_t rows_per_chunk,
                               acc_t<T>* partial) {
  using A = acc_t<T>;
  __shared__ A lanes[kSumRowThreads][kSumCols + 1];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kSumCols + threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  A acc = A(0);
  if (col < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kSumRowThreads)
      acc += to_acc(x[r * cols + col]);
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
Status column_sums(const T* x, int64_t rows, int64_t cols, acc_t<T>* partial, T* out,
                   cudaStream_t stream) {
  if (cols <= 0) return Status::Ok();
  const int64_t chunks = sum_chunks(rows);
  const int64_t rows_per_chunk = rows > 0 ? (rows + chunks - 1) / chunks : 0;
  const dim3 grid(static_cast<unsigned int>((cols + kSumCols - 1) / kSumCols),
                  static_cast<unsigned int>(chunks));
  column_partial_sums_kernel<T><<<grid, dim3(kSumCols, kSumRowThreads), 0, stream>>>(
      x, rows, cols, rows_per_chunk, partial);
  RLSTM_LAUNCH_TRY();
  column_sums_finish_kernel<T><<<blocks_for(cols), kThreads, 0, stream>>>(partial, chunks, cols,
                                                                          out);
  RLSTM_LAUNCH_TRY();
  return Status::Ok();
}

}  // namespace

template <typename T>
int64_t backward_workspace_size(const cpu::Dims& d, bool has_mask) {
  const int64_t BT = d.B * d.T, BH = d.B * d.H, s = static_cast<int64_t>(sizeof(T));
  const int64_t a = static_cast<int64_t>(sizeof(acc_t<T>));
  const int64_t state_bytes = kWidened<T> ? BH * a : 0;
  return workspace_elements<T>({kCublasWorkspaceBytes, BT * 4 * d.H * s, BT * d.H * s,
                                has_mask ? BH * a : 0, sum_chunks(BT) * 4 * d.H * a, state_bytes,
                                state_bytes});
}

template <typename T>
Status backward(const cpu::BackwardArgs<T>& a, void* workspace, const LaunchOptions& options) {
  using A = acc_t<T>;
  const cpu::Dims& d = a.dims;
  const int64_t B = d.B, T_ = d.T, I = d.I, H = d.H, BT = B * T_, BH = B * H;
  if (BH > 0 && (!a.d_h0 || !a.d_c0))
    return Status::Error("reset_lstm backward: d_h0 and d_c0 are required");
  if (!workspace) return Status::Error("reset_lstm backward: no workspace");

  DeviceGuard device;
  RLSTM_TRY(device.set(options.device));
  RLSTM_TRY(check_dtype_support<T>(device.device()));
  const auto stream = static_cast<cudaStream_t>(options.stream);
  WorkspaceCarver carve(workspace);
  void* blas_workspace = carve.take_bytes(kCublasWorkspaceBytes);
  T* dz = carve.take<T>(BT * 4 * H);
  T* h_in = carve.take<T>(BT * H);
  A* dy_carry = a.mask ? carve.take<A>(BH) : nullptr;
  A* bias_partial = carve.take<A>(sum_chunks(BT) * 4 * H);
  A *dh, *dc;  // running gradients wrt the state leaving the current step
  if constexpr (kWidened<T>) {
    dh = carve.take<A>(BH);
    dc = carve.take<A>(BH);
  } else {
    dh = a.d_h0;
    dc = a.d_c0;
  }
  BlasSession blas;
  RLSTM_TRY(blas.begin(device.device(), options.stream, blas_workspace, kCublasWorkspaceBytes,
                       options.allow_tf32));

  const RowIndex row{B, T_, d.time_major};
  if (BH > 0) {
    init_grad_kernel<T><<<blocks_for(BH), kThreads, 0, stream>>>(BH, a.d_h_final, a.d_c_final, dh,
                                                                 dc, dy_carry);
    RLSTM_LAUNCH_TRY();
    const Status loop = RLSTM_BOOL_SWITCH(a.resets != nullptr, kHasResets, [&] {
      return RLSTM_BOOL_SWITCH(a.mask != nullptr, kHasMask, [&] {
        return RLSTM_BOOL_SWITCH(a.d_outputs != nullptr, kHasDy, [&]() -> Status {
          RebuildParams<T> rp{row,     H,       a.resets, a.mask,
                              a.h0,    a.outputs, a.gates, a.cells,
                              a.recurrent_dropout_mask, h_in};
          rebuild_recurrent_inputs_kernel<T, kHasResets, kHasMask>
              <<<blocks_for(BH), kThreads, 0, stream>>>(rp);
          RLSTM_LAUNCH_TRY();
          BackwardStepParams<T> p{row,     H,           a.resets, a.mask, a.c0,
                                  a.gates, a.cells,     a.d_outputs, dz,  dh,
                                  dc,      dy_carry,    a.recurrent_dropout_mask};
          const int64_t ldz = row.batch_stride() * 4 * H;
          for (int64_t t = T_ - 1; t >= 0; --t) {
            backward_step_kernel<T, kHasResets, kHasMask, kHasDy>
                <<<blocks_for(BH), kThreads, 0, stream>>>(p, t);
            RLSTM_LAUNCH_TRY();
            // dh = dz[:, t] @ recurrent_kernel^T (+ dh: with a mask, masked rows carry it)
            RLSTM_TRY((blas.gemm<T, A>(false, true, B, H, 4 * H, dz + row(0, t) * 4 * H, ldz,
                                      a.recurrent_kernel, 4 * H, /*accumulate=*/kHasMask, dh,
                                      H)));
          }
          return Status::Ok();
        });
      });
    });
    RLSTM_TRY(loop);
    finish_dh0_kernel<T><<<blocks_for(BH), kThreads, 0, stream>>>(
        row, H, a.resets, a.mask, a.recurrent_dropout_mask, dh, dc, a.d_h0, a.d_c0);
    RLSTM_LAUNCH_TRY();
  }

  // Weight and input gradients: a few large GEMMs over all B*T rows.
  // d_kernel = inputs^T @ dz
  RLSTM_TRY((blas.gemm<T, T>(true, false, I, 4 * H, BT, a.inputs, I, dz, 4 * H, false, a.d_kernel,
                            4 * H)));
  // d_recurrent_kernel = h_in^T @ dz (h_in is m * h_in with dropout)
  RLSTM_TRY((blas.gemm<T, T>(true, false, H, 4 * H, BT, h_in, H, dz, 4 * H, false,
                            a.d_recurrent_kernel, 4 * H)));
  // d_inputs = dz @ kernel^T
  RLSTM_TRY((blas.gemm<T, T>(false, true, BT, I, 4 * H, dz, 4 * H, a.kernel, 4 * H, false,
                            a.d_inputs, I)));
  // d_bias = column sums of dz
  return column_sums<T>(dz, BT, 4 * H, bias_partial, a.d_bias, stream);
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
