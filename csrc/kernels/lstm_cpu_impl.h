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
//
// Files: lstm_cpu_common.h (row indexing, slabs, workspace carving), lstm_cpu_split.h (rows
// or hidden units across threads, where the input projection runs), lstm_cpu_forward.h,
// lstm_cpu_backward.h; cpu_gemm_impl.h (the GEMM), cpu_vector.h (vector loads and stores for
// the cell loops), lstm_cell.h (the gate math, shared with CUDA).
#pragma once

#include "lstm_cpu.h"
#include "lstm_cpu_backward.h"
#include "lstm_cpu_forward.h"

namespace resetlstm {
namespace cpu {
namespace RLSTM_ISA {

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
