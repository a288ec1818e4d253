// CUDA forward of the reset-LSTM (see lstm_cuda.h), the same algorithm as the CPU forward
// (lstm_cpu_impl.h) with the gate math of lstm_cell.h:
//   z = inputs @ kernel for all B*T rows in one GEMM;
//   per step t: z[:, t] += h @ recurrent_kernel (one GEMM into the step's strided rows of z),
//   then one fused elementwise kernel (bias, activations, c/h update, mask, saved activations,
//   and the next step's reset applied to the running state; with recurrent dropout it also
//   writes m * h, which the next step's GEMM reads instead of h).
// Nothing is allocated or synchronised in the time loop.
#include "lstm_cuda_common.cuh"

namespace resetlstm {
namespace cuda {
namespace {

template <typename T>
struct ForwardStepParams {
  RowIndex row;
  int64_t H;
  const T* bias;        // [4H]
  const bool* resets;   // [B,T] or null
  const bool* mask;     // [B,T] or null
  T* z;                 // [B,T,4H] pre-activations in; post-activation gates out when training
  T* outputs;           // [B,T,H]
  T* cells;             // [B,T,H] or null (inference)
  T* h;                 // [B,H] running state: the h entering the next step (post-reset)
  T* c;                 // [B,H] running state: the c entering the next step (post-reset)
  const T* dropout;     // [B,H] recurrent dropout mask m, or null
  T* h_dropped;         // [B,H] m * h, the recurrent GEMM's input (with dropout)
};

// h, c = (h0, c0), or zeros without an initial state or after a reset at step 0 (and m * h with
// dropout). Resets select zero rather than multiply by it: no NaN/Inf crosses a reset.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    init_state_kernel(RowIndex row, int64_t H, const bool* resets, const T* h0, const T* c0,
                      const T* dropout, T* h, T* c, T* h_dropped) {
  const int64_t idx = flat_thread_index();
  if (idx >= row.B * H) return;
  int64_t b, j;
  split_index(idx, H, &b, &j);
  const bool reset0 = resets && row.T > 0 && resets[row(b, 0)];
  h[idx] = h0 && !reset0 ? h0[idx] : T(0);
  c[idx] = c0 && !reset0 ? c0[idx] : T(0);
  if (dropout) h_dropped[idx] = dropout[idx] * h[idx];
}

// One step's elementwise pass for every (b, j); z already holds x W + h R for step t.
template <typename T, bool kHasResets, bool kHasMask, bool kTraining>
__global__ void __launch_bounds__(kThreads) forward_step_kernel(ForwardStepParams<T> p, int64_t t) {
  const int64_t idx = flat_thread_index();
  const int64_t H = p.H;
  if (idx >= p.row.B * H) return;
  int64_t b, j;
  split_index(idx, H, &b, &j);
  const int64_t r = p.row(b, t);
  const bool active = !kHasMask || p.mask[r];
  const bool reset_next = kHasResets && t + 1 < p.row.T && p.resets[p.row(b, t + 1)];
  T* y = p.outputs + r * H;
  if (active) {
    T* z = p.z + r * 4 * H;
    const T* bias = p.bias;
    T gi, gf, gg, go, cn, hn;
    cell_forward(z[j] + bias[j], z[H + j] + bias[H + j], z[2 * H + j] + bias[2 * H + j],
                 z[3 * H + j] + bias[3 * H + j], p.c[idx], &gi, &gf, &gg, &go, &cn, &hn);
    if (kTraining) {
      z[j] = gi;
      z[H + j] = gf;
      z[2 * H + j] = gg;
      z[3 * H + j] = go;
      p.cells[r * H + j] = cn;
    }
    y[j] = hn;
    p.h[idx] = reset_next ? T(0) : hn;
    p.c[idx] = reset_next ? T(0) : cn;
  } else {  // masked: state carried, output repeats the previous output (zeros before any)
    y[j] = t > 0 ? p.outputs[p.row(b, t - 1) * H + j] : T(0);
    if (kTraining) p.cells[r * H + j] = p.c[idx];
    if (reset_next) p.h[idx] = p.c[idx] = T(0);
  }
  if (p.dropout) p.h_dropped[idx] = p.dropout[idx] * p.h[idx];
}

}  // namespace

template <typename T>
int64_t forward_workspace_size(const cpu::Dims& d, bool training) {
  const int64_t s = static_cast<int64_t>(sizeof(T));
  const int64_t z_bytes = training ? 0 : d.B * d.T * 4 * d.H * s;
  return workspace_elements<T>({kCublasWorkspaceBytes, z_bytes, d.B * d.H * s});
}

template <typename T>
Status forward(const cpu::ForwardArgs<T>& a, void* workspace, const LaunchOptions& options) {
  const cpu::Dims& d = a.dims;
  const int64_t B = d.B, T_ = d.T, I = d.I, H = d.H, BH = B * H;
  const bool training = a.gates != nullptr;
  if (training != (a.cells != nullptr))
    return Status::Error("reset_lstm forward: gates and cells must both be given (training) or "
                         "both be null (inference)");
  if (BH > 0 && (!a.h_final || !a.c_final))
    return Status::Error("reset_lstm forward: h_final and c_final are required");
  if (!workspace)
    return Status::Error("reset_lstm forward: no workspace");

  DeviceGuard device;
  RLSTM_TRY(device.set(options.device));
  const auto stream = static_cast<cudaStream_t>(options.stream);
  WorkspaceCarver carve(workspace);
  void* blas_workspace = carve.take_bytes(kCublasWorkspaceBytes);
  T* z = training ? a.gates : carve.take<T>(B * T_ * 4 * H);
  T* h_dropped = carve.take<T>(BH);  // reserved always (small); used with recurrent dropout
  BlasSession blas;
  RLSTM_TRY(blas.begin(device.device(), options.stream, blas_workspace, kCublasWorkspaceBytes,
                       options.allow_tf32));

  // Hoisted input projection: z = inputs @ kernel over all B*T rows.
  RLSTM_TRY(blas.gemm<T>(false, false, B * T_, 4 * H, I, a.inputs, I, a.kernel, 4 * H, T(0), z,
                         4 * H));
  if (BH == 0) return Status::Ok();
  const RowIndex row{B, T_, d.time_major};
  const T* dropout = a.recurrent_dropout_mask;
  init_state_kernel<T><<<blocks_for(BH), kThreads, 0, stream>>>(
      row, H, a.resets, a.h0, a.c0, dropout, a.h_final, a.c_final, h_dropped);
  RLSTM_LAUNCH_TRY();

  ForwardStepParams<T> p{row,     H,         a.bias,    a.resets, a.mask,   z,
                         a.outputs, a.cells, a.h_final, a.c_final, dropout, h_dropped};
  const T* h_gemm = dropout ? h_dropped : a.h_final;  // what the recurrent GEMM reads
  const int64_t ldz = row.batch_stride() * 4 * H;
  return RLSTM_BOOL_SWITCH(a.resets != nullptr, kHasResets, [&] {
    return RLSTM_BOOL_SWITCH(a.mask != nullptr, kHasMask, [&] {
      return RLSTM_BOOL_SWITCH(training, kTraining, [&]() -> Status {
        for (int64_t t = 0; t < T_; ++t) {
          // z[:, t] += (m *) h @ recurrent_kernel (the step's rows of z, ldz apart)
          RLSTM_TRY(blas.gemm<T>(false, false, B, 4 * H, H, h_gemm, H, a.recurrent_kernel,
                                 4 * H, T(1), z + row(0, t) * 4 * H, ldz));
          forward_step_kernel<T, kHasResets, kHasMask, kTraining>
              <<<blocks_for(BH), kThreads, 0, stream>>>(p, t);
          RLSTM_LAUNCH_TRY();
        }
        return Status::Ok();
      });
    });
  });
}

#define RLSTM_INSTANTIATE(T)                                             \
  template int64_t forward_workspace_size<T>(const cpu::Dims&, bool);    \
  template Status forward<T>(const cpu::ForwardArgs<T>&, void*, const LaunchOptions&);

RLSTM_INSTANTIATE(float)
RLSTM_INSTANTIATE(double)
#undef RLSTM_INSTANTIATE

}  // namespace cuda
}  // namespace resetlstm
