// CUDA forward of the recurrence engine (see recurrence_cuda.h), generic over the cell
// (lstm_cell.h, gru_cell.h), the same algorithm as the CPU forward (recurrence_cpu_impl.h):
//   z = inputs @ kernel for all B*T rows in one GEMM;
//   per step t: the recurrent products, h @ recurrent_kernel: accumulated into the step's
//   strided rows of z for a cell that reads only their sum (the LSTM), else into zr [B, G*H];
//   a two-stage cell (the GRU without reset_after) then gets r * h from a small kernel and its
//   last gate's product from a second GEMM; then one fused elementwise kernel (biases, the
//   cell, mask, saved activations, and the next step's reset applied to the running state;
//   with recurrent dropout it also writes m * h, which the next step's GEMM reads instead of h).
// Half storage types (bf16, f16) compute in float32 (acc_t): z, zr, the running h and c live in
// float32 workspace buffers, the GEMMs take half operands and accumulate into float32, and the
// step kernel also writes the next GEMM's half input, round(m * h) or round(h), as the CPU
// kernels do. float and double run in place: for the LSTM z is the gates array when training,
// the running state is h_final / c_final.
// Nothing is allocated or synchronised in the time loop.
#include "recurrence_cuda_common.cuh"

namespace resetlstm {
namespace cuda {
namespace {

template <typename Cell>
constexpr int kFirstStageGates = Cell::kTwoStage ? Cell::kGates - 1 : Cell::kGates;

// Whether the LSTM's pre-activations may live in the gates output (float training).
template <typename Cell, typename T>
constexpr bool kZInGates = !kWidened<T> && Cell::kSumsProjections && Cell::kSaved == Cell::kGates;

template <typename T>
struct ForwardStepParams {
  using A = acc_t<T>;
  RowIndex row;
  int64_t H;
  const T* bias;        // [bias_rows * G * H]
  const bool* resets;   // [B,T] or null
  const bool* mask;     // [B,T] or null
  const A* z;           // [B,T,G*H] x W (+ h R for cells that read only the sum)
  const A* zr;          // [B,G*H] this step's h R (cells that keep the two apart)
  T* gates;             // [B,T,S*H] saved activations out (training; LSTM float: aliases z)
  T* outputs;           // [B,T,H]
  T* cells;             // [B,T,H] or null (inference, or no cell state)
  A* h;                 // [B,H] running state: the h entering the next step (post-reset)
  A* c;                 // [B,H] running state (cell state), or null
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
  if (c) c[idx] = c0 && !reset0 ? to_acc(c0[idx]) : A(0);
  if (h_gemm) h_gemm[idx] = gemm_input(dropout, idx, h[idx]);
}

// Two-stage cells: the second GEMM's input r * g for every (b, j) of step t (g: what the first
// GEMM read).
template <typename Cell, typename T>
__global__ void __launch_bounds__(kThreads)
    second_stage_input_kernel(RowIndex row, int64_t H, int64_t t, const acc_t<T>* z,
                              const acc_t<T>* zr, const T* bias, const T* g, T* out) {
  using A = acc_t<T>;
  const int64_t idx = flat_thread_index();
  if (idx >= row.B * H) return;
  int64_t b, j;
  split_index(idx, H, &b, &j);
  const int64_t GH = Cell::kGates * H;
  const A x_r = z[row(b, t) * GH + H + j];
  out[idx] = from_acc<T>(Cell::template stage_operand<A>(x_r, zr[b * GH + H + j],
                                                         to_acc(bias[H + j]), to_acc(g[idx])));
}

// One step's elementwise pass for every (b, j); z (and zr) hold this step's projections.
template <typename Cell, typename T, bool kHasResets, bool kHasMask, bool kTraining>
__global__ void __launch_bounds__(kThreads) forward_step_kernel(ForwardStepParams<T> p, int64_t t) {
  using A = acc_t<T>;
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  const int64_t idx = flat_thread_index();
  const int64_t H = p.H, GH = G * H;
  if (idx >= p.row.B * H) return;
  int64_t b, j;
  split_index(idx, H, &b, &j);
  const int64_t r = p.row(b, t);
  const bool active = !kHasMask || p.mask[r];
  const bool reset_next = kHasResets && t + 1 < p.row.T && p.resets[p.row(b, t + 1)];
  const A* z = p.z + r * GH;
  const A* zr = Cell::kSumsProjections ? nullptr : p.zr + b * GH;
  A xs[G], hs[G];
  for (int g = 0; g < G; ++g) {
    xs[g] = z[g * H + j];
    hs[g] = Cell::kSumsProjections ? A(0) : zr[g * H + j];
  }
  T* y = p.outputs + r * H;
  if (active) {
    A bs[G], brs[G], saved[S], hn, cn = A(0);
    for (int g = 0; g < G; ++g) {
      bs[g] = to_acc(p.bias[g * H + j]);
      brs[g] = Cell::kBiasRows > 1 ? to_acc(p.bias[GH + g * H + j]) : A(0);
    }
    Cell::template forward<A>(xs, hs, bs, brs, p.h[idx], Cell::kCellState ? p.c[idx] : A(0),
                              saved, &hn, &cn);
    if (kTraining) {  // LSTM float: in place over z (each thread read its values first)
      T* g = p.gates + r * S * H;
      for (int k = 0; k < S; ++k) g[k * H + j] = from_acc<T>(saved[k]);
      if (Cell::kCellState) p.cells[r * H + j] = from_acc<T>(cn);
    }
    y[j] = from_acc<T>(hn);
    p.h[idx] = reset_next ? A(0) : hn;
    if (Cell::kCellState) p.c[idx] = reset_next ? A(0) : cn;
  } else {  // masked: state carried, output repeats the previous output (zeros before any)
    y[j] = t > 0 ? p.outputs[p.row(b, t - 1) * H + j] : T{};
    if (kTraining) {
      if (Cell::kCellState) p.cells[r * H + j] = from_acc<T>(p.c[idx]);
      // The saved activations of a masked step (never read by backward): the first G hold
      // x W + h R, the rest zero; the LSTM in float: already so.
      if (!kZInGates<Cell, T>)
        for (int k = 0; k < S; ++k)
          p.gates[r * S * H + k * H + j] = k < G ? from_acc<T>(xs[k] + hs[k]) : T{};
    }
    if (reset_next) {
      p.h[idx] = A(0);
      if (Cell::kCellState) p.c[idx] = A(0);
    }
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
  if (c) c_final[idx] = from_acc<T>(c[idx]);
}

template <typename Cell, typename T>
int64_t cell_forward_workspace_size(const cpu::Dims& d, bool training) {
  using A = acc_t<T>;
  const int64_t a = static_cast<int64_t>(sizeof(A)), BH = d.B * d.H, GH = Cell::kGates * d.H;
  const int64_t z_bytes = training && kZInGates<Cell, T> ? 0 : d.B * d.T * GH * a;
  const int64_t state_bytes = kWidened<T> ? BH * a : 0;
  const int64_t s = static_cast<int64_t>(sizeof(T));
  return workspace_elements<T>({kCublasWorkspaceBytes, z_bytes, state_bytes,
                                Cell::kCellState ? state_bytes : 0, BH * s,
                                Cell::kSumsProjections ? 0 : d.B * GH * a,
                                Cell::kTwoStage ? BH * s : 0});
}

template <typename Cell, typename T>
Status cell_forward(const cpu::ForwardArgs<T>& a, void* workspace, const LaunchOptions& options) {
  using A = acc_t<T>;
  constexpr int G = Cell::kGates;
  const cpu::Dims& d = a.dims;
  const int64_t B = d.B, T_ = d.T, I = d.I, H = d.H, BH = B * H, GH = G * H;
  const bool training = a.gates != nullptr;
  if (Cell::kCellState && training != (a.cells != nullptr))
    return Status::Error("reset_lstm forward: gates and cells must both be given (training) or "
                         "both be null (inference)");
  if (BH > 0 && (!a.h_final || (Cell::kCellState && !a.c_final)))
    return Status::Error(Cell::kCellState ? "reset_lstm forward: h_final and c_final are required"
                                          : "forward: h_final is required");
  if (!workspace)
    return Status::Error("forward: no workspace");

  DeviceGuard device;
  RLSTM_TRY(device.set(options.device));
  RLSTM_TRY(check_dtype_support<T>(device.device()));
  const auto stream = static_cast<cudaStream_t>(options.stream);
  WorkspaceCarver carve(workspace);
  void* blas_workspace = carve.take_bytes(kCublasWorkspaceBytes);
  const T* dropout = a.recurrent_dropout_mask;
  A* z = training && kZInGates<Cell, T> ? reinterpret_cast<A*>(a.gates)
                                        : carve.take<A>(B * T_ * GH);
  A *h, *c = nullptr;
  T* h_gemm = nullptr;  // the recurrent GEMM's input when it is not h_final itself
  if constexpr (kWidened<T>) {
    h = carve.take<A>(BH);
    if (Cell::kCellState) c = carve.take<A>(BH);
  } else {
    h = a.h_final;
    if (Cell::kCellState) c = a.c_final;
  }
  T* h_gemm_buffer = carve.take<T>(BH);
  if (kWidened<T> || dropout) h_gemm = h_gemm_buffer;
  A* zr = Cell::kSumsProjections ? nullptr : carve.take<A>(B * GH);
  T* gated = Cell::kTwoStage ? carve.take<T>(BH) : nullptr;
  BlasSession blas;
  RLSTM_TRY(blas.begin(device.device(), options.stream, blas_workspace, kCublasWorkspaceBytes,
                       options.allow_tf32));

  // Hoisted input projection: z = inputs @ kernel over all B*T rows.
  RLSTM_TRY((blas.gemm<T, A>(false, false, B * T_, GH, I, a.inputs, I, a.kernel, GH,
                            /*accumulate=*/false, z, GH)));
  if (BH == 0) return Status::Ok();
  const RowIndex row{B, T_, d.time_major};
  init_state_kernel<T><<<blocks_for(BH), kThreads, 0, stream>>>(row, H, a.resets, a.h0, a.c0,
                                                                 dropout, h, c, h_gemm);
  RLSTM_LAUNCH_TRY();

  ForwardStepParams<T> p{row,       H,        a.bias, a.resets, a.mask, z,       zr,    a.gates,
                         a.outputs, a.cells,  h,      c,        dropout, h_gemm};
  const T* gemm_in = h_gemm ? h_gemm : a.h_final;  // what the recurrent GEMM reads
  const int64_t ldz = row.batch_stride() * GH;
  const int64_t first = kFirstStageGates<Cell> * H;
  const Status loop = RLSTM_BOOL_SWITCH(a.resets != nullptr, kHasResets, [&] {
    return RLSTM_BOOL_SWITCH(a.mask != nullptr, kHasMask, [&] {
      return RLSTM_BOOL_SWITCH(training, kTraining, [&]() -> Status {
        for (int64_t t = 0; t < T_; ++t) {
          if (Cell::kSumsProjections) {  // z[:, t] += (m *) h @ R (the step's rows, ldz apart)
            RLSTM_TRY((blas.gemm<T, A>(false, false, B, GH, H, gemm_in, H, a.recurrent_kernel,
                                      GH, /*accumulate=*/true, z + row(0, t) * GH, ldz)));
          } else {  // zr[:, first-stage gates] = (m *) h @ R[:, first-stage gates]
            RLSTM_TRY((blas.gemm<T, A>(false, false, B, first, H, gemm_in, H,
                                      a.recurrent_kernel, GH, /*accumulate=*/false, zr, GH)));
          }
          if constexpr (Cell::kTwoStage) {  // zr[:, last gate] = (r * g) @ R[:, last gate]
            second_stage_input_kernel<Cell, T><<<blocks_for(BH), kThreads, 0, stream>>>(
                row, H, t, z, zr, a.bias, gemm_in, gated);
            RLSTM_LAUNCH_TRY();
            RLSTM_TRY((blas.gemm<T, A>(false, false, B, H, H, gated, H, a.recurrent_kernel + first,
                                      GH, /*accumulate=*/false, zr + first, GH)));
          }
          forward_step_kernel<Cell, T, kHasResets, kHasMask, kTraining>
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

}  // namespace

template <typename T>
int64_t forward_workspace_size(const cpu::Dims& d, bool training) {
  return cpu::with_cell(d.cell, [&](auto c) {
    return cell_forward_workspace_size<decltype(c), T>(d, training);
  });
}

template <typename T>
Status forward(const cpu::ForwardArgs<T>& a, void* workspace, const LaunchOptions& options) {
  return cpu::with_cell(a.dims.cell, [&](auto c) {
    return cell_forward<decltype(c), T>(a, workspace, options);
  });
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
