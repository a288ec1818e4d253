// CUDA forward of the reset-LSTM (see lstm_cuda.h), the same algorithm as the CPU forward
// (lstm_cpu_impl.h) with the gate math of lstm_cell.h:
//   z = inputs @ kernel for all B*T rows in one GEMM;
//   per step t: z[:, t] += h @ recurrent_kernel (one GEMM into the step's strided rows of z),
//   then one fused elementwise kernel (bias, activations, c/h update, mask, saved activations,
//   and the next step's reset applied to the running state; with recurrent dropout it also
//   writes m * h, which the next step's GEMM reads instead of h).
// Half storage types (bf16, f16) compute in float32 (acc_t): z, the running h and c live in
// float32 workspace buffers, the GEMMs take half operands and accumulate into float32 z, and
// the step kernel also writes the next GEMM's half input, round(m * h) or round(h), as the CPU
// kernels do. float and double run in place: z is the gates array when training, the running
// state is h_final / c_final.
// Nothing is allocated or synchronised in the time loop.
#include "lstm_cuda_common.cuh"

namespace resetlstm {
namespace cuda {
namespace {

template <typename T>
struct ForwardStepParams {
  using A = acc_t<T>;
  RowIndex row;
  int64_t H;
  const T* bias;        // [4H]
  const bool* resets;   // [B,T] or null
  const bool* mask;     // [B,T] or null
  A* z;                 // [B,T,4H] pre-activations x W + h R
  T* gates;             // [B,T,4H] post-activation gates out (training; float: aliases z)
  T* outputs;           // [B,T,H]
  T* cells;             // [B,T,H] or null (inference)
  A* h;                 // [B,H] running state: the h entering the next step (post-reset)
  A* c;                 // [B,H] running state: the c entering the next step (post-reset)
  const T* dropout;     // [B,H] recurrent dropout mask m, or null
  T* h_gemm;            // [B,H] the recurrent GEMM's input (m *) h as T, or null when it is h
};

// h, c = (h0, c0), or zeros without an initial state or after a reset at step 0 (and the GEMM's
// input). Resets select zero rather than multiply by it: no NaN/Inf crosses a reset.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    init_state_kernel(RowIndex row, int64_t H, const bool* resets, const T* h0, const T* c0,
                      const T* dropout, acc_t<T>* h, acc_t<T>* c, T* h_gemm) {
  using A = acc_t<T>;
  const int64_t idx = flat_thread_index();
  if (idx >= row.B * H) return;
  int64_t b, j;
  split_index(idx, H, &b, &j);
  const bool reset0 = resets && row.T > 0 && resets[row(b, 0)];
  h[idx] = h0 && !reset0 ? to_acc(h0[idx]) : A(0);
  c[idx] = c0 && !reset0 ? to_acc(c0[idx]) : A(0);
  if (h_gemm) h_gemm[idx] = gemm_input(dropout, idx, h[idx]);
}

// One step's elementwise pass for every (b, j); z already holds x W + h R for step t.
template <typename T, bool kHasResets, bool kHasMask, bool kTraining>
__global__ void __launch_bounds__(kThreads) forward_step_kernel(ForwardStepParams<T> p, int64_t t) {
  using A = acc_t<T>;
  const int64_t idx = flat_thread_index();
  const int64_t H = p.H;
  if (idx >= p.row.B * H) return;
  int64_t b, j;
  split_index(idx, H, &b, &j);
  const int64_t r = p.row(b, t);
  const bool active = !kHasMask || p.mask[r];
  const bool reset_next = kHasResets && t + 1 < p.row.T && p.resets[p.row(b, t + 1)];
  const A* z = p.z + r * 4 * H;
  T* y = p.outputs + r * H;
  if (active) {
    const T* bias = p.bias;
    A gi, gf, gg, go, cn, hn;
    cell_forward(z[j] + to_acc(bias[j]), z[H + j] + to_acc(bias[H + j]),
                 z[2 * H + j] + to_acc(bias[2 * H + j]), z[3 * H + j] + to_acc(bias[3 * H + j]),
                 p.c[idx], &gi, &gf, &gg, &go, &cn, &hn);
    if (kTraining) {  // float: in place over z (each thread reads its four values first)
      T* g = p.gates + r * 4 * H;
      g[j] = from_acc<T>(gi);
      g[H + j] = from_acc<T>(gf);
      g[2 * H + j] = from_acc<T>(gg);
      g[3 * H + j] = from_acc<T>(go);
      p.cells[r * H + j] = from_acc<T>(cn);
    }
    y[j] = from_acc<T>(hn);
    p.h[idx] = reset_next ? A(0) : hn;
    p.c[idx] = reset_next ? A(0) : cn;
  } else {  // masked: state carried, output repeats the previous output (zeros before any)
    y[j] = t > 0 ? p.outputs[p.row(b, t - 1) * H + j] : T{};
    if (kTraining) {
      p.cells[r * H + j] = from_acc<T>(p.c[idx]);
      // The gates of a masked step hold x W + h R (never read by backward); float: already so.
      if (kWidened<T>)
        for (int gate = 0; gate < 4; ++gate)
          p.gates[r * 4 * H + gate * H + j] = from_acc<T>(z[gate * H + j]);
    }
    if (reset_next) p.h[idx] = p.c[idx] = A(0);
  }
  if (p.h_gemm) p.h_gemm[idx] = gemm_input(p.dropout, idx, p.h[idx]);
}

// Half types: the float32 state rounded into h_final / c_final.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    store_final_state_kernel(int64_t n, const acc_t<T>* h, const acc_t<T>* c, T* h_final,
                             T* c_final) {
  const int64_t idx = flat_thread_index();
  if (idx >= n) return;
  h_final[idx] = from_acc<T>(h[idx]);
  c_final[idx] = from_acc<T>(c[idx]);
}

}  // namespace

template <typename T>
int64_t forward_workspace_size(const cpu::Dims& d, bool training) {
  using A = acc_t<T>;
  const int64_t a = static_cast<int64_t>(sizeof(A)), BH = d.B * d.H;
  const int64_t z_bytes = training && !kWidened<T> ? 0 : d.B * d.T * 4 * d.H * a;
  const int64_t state_bytes = kWidened<T> ? BH * a : 0;
  return workspace_elements<T>({kCublasWorkspaceBytes, z_bytes, state_bytes, state_bytes,
                                BH * static_cast<int64_t>(sizeof(T))});
}

template <typename T>
Status forward(const cpu::ForwardArgs<T>& a, void* workspace, const LaunchOptions& options) {
  using A = acc_t<T>;
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
  RLSTM_TRY(check_dtype_support<T>(device.device()));
  const auto stream = static_cast<cudaStream_t>(options.stream);
  WorkspaceCarver carve(workspace);
  void* blas_workspace = carve.take_bytes(kCublasWorkspaceBytes);
  const T* dropout = a.recurrent_dropout_mask;
  A *z, *h, *c;
  T* h_gemm = nullptr;  // the recurrent GEMM's input when it is not h_final itself
  if constexpr (kWidened<T>) {
    z = carve.take<A>(B * T_ * 4 * H);
    h = carve.take<A>(BH);
    c = carve.take<A>(BH);
    h_gemm = carve.take<T>(BH);
  } else {
    z = training ? a.gates : carve.take<A>(B * T_ * 4 * H);
    h = a.h_final;
    c = a.c_final;
    if (dropout) h_gemm = carve.take<T>(BH);
  }
  BlasSession blas;
  RLSTM_TRY(blas.begin(device.device(), options.stream, blas_workspace, kCublasWorkspaceBytes,
                       options.allow_tf32));

  // Hoisted input projection: z = inputs @ kernel over all B*T rows.
  RLSTM_TRY((blas.gemm<T, A>(false, false, B * T_, 4 * H, I, a.inputs, I, a.kernel, 4 * H,
                            /*accumulate=*/false, z, 4 * H)));
  if (BH == 0) return Status::Ok();
  const RowIndex row{B, T_, d.time_major};
  init_state_kernel<T><<<blocks_for(BH), kThreads, 0, stream>>>(row, H, a.resets, a.h0, a.c0,
                                                                 dropout, h, c, h_gemm);
  RLSTM_LAUNCH_TRY();

  ForwardStepParams<T> p{row,       H,        a.bias, a.resets, a.mask, z,      a.gates,
                         a.outputs, a.cells,  h,      c,        dropout, h_gemm};
  const T* gemm_in = h_gemm ? h_gemm : a.h_final;  // what the recurrent GEMM reads
  const int64_t ldz = row.batch_stride() * 4 * H;
  const Status loop = RLSTM_BOOL_SWITCH(a.resets != nullptr, kHasResets, [&] {
    return RLSTM_BOOL_SWITCH(a.mask != nullptr, kHasMask, [&] {
      return RLSTM_BOOL_SWITCH(training, kTraining, [&]() -> Status {
        for (int64_t t = 0; t < T_; ++t) {
          // z[:, t] += (m *) h @ recurrent_kernel (the step's rows of z, ldz apart)
          RLSTM_TRY((blas.gemm<T, A>(false, false, B, 4 * H, H, gemm_in, H, a.recurrent_kernel,
                                    4 * H, /*accumulate=*/true, z + row(0, t) * 4 * H, ldz)));
          forward_step_kernel<T, kHasResets, kHasMask, kTraining>
              <<<blocks_for(BH), kThreads, 0, stream>>>(p, t);
          RLSTM_LAUNCH_TRY();
        }
        return Status::Ok();
      });
    });
  });
  RLSTM_TRY(loop);
  if constexpr (kWidened<T>) {
    store_final_state_kernel<T><<<blocks_for(BH), kThreads, 0, stream>>>(BH, h, c, a.h_final,
                                                                         a.c_final);
    RLSTM_LAUNCH_TRY();
  }
  return Status::Ok();
}

#define RLSTM_INSTANTIATE(T)                                             \
  template int64_t forward_workspace_size<T>(const cpu::Dims&, bool);    \
  template Status forward<T>(const cpu::ForwardArgs<T>&, void*, const LaunchOptions&);

RLSTM_INSTANTIATE(float)
RLSTM_INSTANTIATE(double)
RLSTM_INSTANTIATE(cpu::bf16)
RLSTM_INSTANTIATE(cpu::f16)
#undef RLSTM_INSTANTIATE

}  // namespace cuda
}  // namespace resetlstm
