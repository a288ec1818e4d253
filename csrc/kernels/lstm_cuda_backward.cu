// CUDA backward (BPTT) of the reset-LSTM (see lstm_cuda.h), the same algorithm as the CPU
// backward (lstm_cpu_impl.h) with the gate math of lstm_cell.h:
//   rebuild the recurrent input h_in of every step (one kernel, threads over (b, j));
//   per step t, last to first: one fused elementwise kernel (dz of the step, dc carried, the
//   reset cut, the mask's pass-through), then one GEMM dh = dz[:, t] @ recurrent_kernel^T;
//   then the weight and input gradients as three large GEMMs over all B*T rows and the bias
//   gradient as a deterministic column reduction of dz.
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
  const T m = p.dropout ? p.dropout[idx] : T(1);
  T cur = p.h0 && !reset0 ? p.h0[idx] : T(0);
  p.h_in[p.row(b, 0) * H + j] = m * cur;
  for (int64_t t = 0; t + 1 < p.row.T; ++t) {
    const int64_t r = p.row(b, t), rn = p.row(b, t + 1);
    if (kHasResets && p.resets[rn])
      cur = T(0);
    else if (!kHasMask)
      cur = p.outputs[r * H + j];
    else if (p.mask[r])
      cur = cell_hidden(p.gates[r * 4 * H + 3 * H + j], p.cells[r * H + j]);
    p.h_in[rn * H + j] = m * cur;
  }
}

// ---- the time loop -------------------------------------------------------------------------

// dh, dc = upstream gradients wrt the final state (zeros when absent); dy_carry = 0.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    init_grad_kernel(int64_t n, const T* d_h_final, const T* d_c_final, T* dh, T* dc,
                     T* dy_carry) {
  const int64_t idx = flat_thread_index();
  if (idx >= n) return;
  dh[idx] = d_h_final ? d_h_final[idx] : T(0);
  dc[idx] = d_c_final ? d_c_final[idx] : T(0);
  if (dy_carry) dy_carry[idx] = T(0);
}

template <typename T>
struct BackwardStepParams {
  RowIndex row;
  int64_t H;
  const bool* resets;     // [B,T] or null
  const bool* mask;       // [B,T] or null
  const T* c0;            // [B,H] or null
  const T* gates;         // [B,T,4H]
  const T* cells;         // [B,T,H]
  const T* d_outputs;     // [B,T,H] or null
  T* dz;                  // [B,T,4H] out: gradient wrt the pre-activations
  T* dh;                  // [B,H] in: dz[:, t+1] @ R^T; with a mask zeroed here, else overwritten
  T* dc;                  // [B,H] gradient wrt the c leaving the step, carried backwards
  T* dy_carry;            // [B,H] with a mask: gradient reaching the previous output
  const T* dropout;       // [B,H] recurrent dropout mask m, or null
};

template <typename T, bool kHasResets, bool kHasMask, bool kHasDy>
__global__ void __launch_bounds__(kThreads)
    backward_step_kernel(BackwardStepParams<T> p, int64_t t) {
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
  T dh_next = p.dh[idx];
  if (p.dropout && t + 1 < p.row.T && (!kHasMask || p.mask[p.row(b, t + 1)]))
    dh_next *= p.dropout[idx];
  if (!kHasMask || p.mask[r]) {
    const T* g = p.gates + r * 4 * H;
    T dh_t = reset_next ? T(0) : dh_next;
    if (kHasDy) dh_t += p.d_outputs[r * H + j];
    if (kHasMask) dh_t += p.dy_carry[idx];
    const T c_in = reset ? T(0)
                   : t > 0 ? p.cells[p.row(b, t - 1) * H + j] : (p.c0 ? p.c0[idx] : T(0));
    T dc_in;
    cell_backward(g[j], g[H + j], g[2 * H + j], g[3 * H + j], c_in, p.cells[r * H + j], dh_t,
                  p.dc[idx], &dz[j], &dz[H + j], &dz[2 * H + j], &dz[3 * H + j], &dc_in);
    p.dc[idx] = reset ? T(0) : dc_in;  // no gradient crosses a reset
    if (kHasMask) {
      p.dh[idx] = T(0);  // the GEMM accumulates dz @ R^T here (beta = 1 with a mask)
      p.dy_carry[idx] = T(0);
    }
  } else if (kHasMask) {
    // Masked step: the state passes through, the output gradient goes to y_{t-1}.
    dz[j] = T(0);
    dz[H + j] = T(0);
    dz[2 * H + j] = T(0);
    dz[3 * H + j] = T(0);
    p.dh[idx] = reset_next ? T(0) : dh_next;
    if (reset) p.dc[idx] = T(0);
    if (kHasDy) p.dy_carry[idx] += p.d_outputs[r * H + j];
  }
}

// Gradient wrt the initial state: dh is wrt h_in of step 0 (times m if step 0 ran the cell
// with recurrent dropout), and h_in of step 0 is h0, or zero after a reset.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    finish_dh0_kernel(RowIndex row, int64_t H, const bool* resets, const bool* mask,
                      const T* dropout, T* dh) {
  const int64_t idx = flat_thread_index();
  if (idx >= row.B * H || row.T == 0) return;
  int64_t b, j;
  split_index(idx, H, &b, &j);
  if (resets && resets[row(b, 0)])
    dh[idx] = T(0);
  else if (dropout && (!mask || mask[row(b, 0)]))
    dh[idx] *= dropout[idx];
}

// ---- bias gradient: column sums of dz [rows, cols], deterministic --------------------------

constexpr int kSumCols = 32;        // columns per block (one warp wide)
constexpr int kSumRowThreads = 8;   // row lanes per block
constexpr int64_t kMaxSumChunks = 256;

inline int64_t sum_chunks(int64_t rows) {
  const int64_t chunks = (rows + 255) / 256;
  return chunks < 1 ? 1 : (chunks > kMaxSumChunks ? kMaxSumChunks : chunks);
}

// partial[chunk, col] = sum of x[r, col] over the chunk's rows, in a fixed order.
template <typename T>
__global__ void __launch_bounds__(kSumCols * kSumRowThreads)
    column_partial_sums_kernel(const T* x, int64_t rows, int64_t cols, int64_t rows_per_chunk,
                               T* partial) {
  __shared__ T lanes[kSumRowThreads][kSumCols + 1];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kSumCols + threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  T acc = T(0);
  if (col < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kSumRowThreads) acc += x[r * cols + col];
  lanes[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    T total = T(0);
    for (int k = 0; k < kSumRowThreads; ++k) total += lanes[k][threadIdx.x];
    partial[static_cast<int64_t>(blockIdx.y) * cols + col] = total;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    column_sums_finish_kernel(const T* partial, int64_t chunks, int64_t cols, T* out) {
  const int64_t col = flat_thread_index();
  if (col >= cols) return;
  T total = T(0);
  for (int64_t k = 0; k < chunks; ++k) total += partial[k * cols + col];
  out[col] = total;
}

template <typename T>
Status column_sums(const T* x, int64_t rows, int64_t cols, T* partial, T* out,
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
  const int64_t BT = d.B * d.T, s = static_cast<int64_t>(sizeof(T));
  return workspace_elements<T>({kCublasWorkspaceBytes, BT * 4 * d.H * s, BT * d.H * s,
                                has_mask ? d.B * d.H * s : 0, sum_chunks(BT) * 4 * d.H * s});
}

template <typename T>
Status backward(const cpu::BackwardArgs<T>& a, void* workspace, const LaunchOptions& options) {
  const cpu::Dims& d = a.dims;
  const int64_t B = d.B, T_ = d.T, I = d.I, H = d.H, BT = B * T_, BH = B * H;
  if (BH > 0 && (!a.d_h0 || !a.d_c0))
    return Status::Error("reset_lstm backward: d_h0 and d_c0 are required");
  if (!workspace) return Status::Error("reset_lstm backward: no workspace");

  DeviceGuard device;
  RLSTM_TRY(device.set(options.device));
  const auto stream = static_cast<cudaStream_t>(options.stream);
  WorkspaceCarver carve(workspace);
  void* blas_workspace = carve.take_bytes(kCublasWorkspaceBytes);
  T* dz = carve.take<T>(BT * 4 * H);
  T* h_in = carve.take<T>(BT * H);
  T* dy_carry = a.mask ? carve.take<T>(BH) : nullptr;
  T* bias_partial = carve.take<T>(sum_chunks(BT) * 4 * H);
  BlasSession blas;
  RLSTM_TRY(blas.begin(device.device(), options.stream, blas_workspace, kCublasWorkspaceBytes,
                       options.allow_tf32));

  const RowIndex row{B, T_, d.time_major};
  T* dh = a.d_h0;  // running gradient wrt the state leaving the current step
  T* dc = a.d_c0;
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
            RLSTM_TRY(blas.gemm<T>(false, true, B, H, 4 * H, dz + row(0, t) * 4 * H, ldz,
                                   a.recurrent_kernel, 4 * H, kHasMask ? T(1) : T(0), dh, H));
          }
          return Status::Ok();
        });
      });
    });
    RLSTM_TRY(loop);
    finish_dh0_kernel<T><<<blocks_for(BH), kThreads, 0, stream>>>(
        row, H, a.resets, a.mask, a.recurrent_dropout_mask, dh);
    RLSTM_LAUNCH_TRY();
  }

  // Weight and input gradients: a few large GEMMs over all B*T rows.
  // d_kernel = inputs^T @ dz
  RLSTM_TRY(blas.gemm<T>(true, false, I, 4 * H, BT, a.inputs, I, dz, 4 * H, T(0), a.d_kernel,
                         4 * H));
  // d_recurrent_kernel = h_in^T @ dz (h_in is m * h_in with dropout)
  RLSTM_TRY(blas.gemm<T>(true, false, H, 4 * H, BT, h_in, H, dz, 4 * H, T(0),
                         a.d_recurrent_kernel, 4 * H));
  // d_inputs = dz @ kernel^T
  RLSTM_TRY(blas.gemm<T>(false, true, BT, I, 4 * H, dz, 4 * H, a.kernel, 4 * H, T(0), a.d_inputs,
                         I));
  // d_bias = column sums of dz
  return column_sums<T>(dz, BT, 4 * H, bias_partial, a.d_bias, stream);
}

#define RLSTM_INSTANTIATE(T)                                             \
  template int64_t backward_workspace_size<T>(const cpu::Dims&, bool);   \
  template Status backward<T>(const cpu::BackwardArgs<T>&, void*, const LaunchOptions&);

RLSTM_INSTANTIATE(float)
RLSTM_INSTANTIATE(double)
#undef RLSTM_INSTANTIATE

}  // namespace cuda
}  // namespace resetlstm
