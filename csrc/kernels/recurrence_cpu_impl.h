// CPU forward/backward of the recurrence engine, compiled once per instruction set (see
// recurrence_cpu_*.cc) and for every cell (lstm_cell.h, gru_cell.h: the engine is generic over
// the cell; the entry points below choose it from Dims::cell).
//
// Work split: batch rows never interact, so the rows are cut into slabs that run their time
// loops a chunk of steps at a time on whichever thread is free: per step one GEMM (slab rows of
// h times the pre-packed recurrent kernel; two for a two-stage cell) and one fused elementwise
// pass. No barrier per step, no allocation in the loop. The large GEMMs (input projection,
// weight and input gradients) run over all B*T rows at once on the whole runner.
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
// Files: recurrence_cpu_common.h (row indexing, slabs, workspace carving),
// recurrence_cpu_split.h (rows or hidden units across threads, where the input projection
// runs), recurrence_cpu_forward.h, recurrence_cpu_backward.h; cpu_gemm_impl.h (the GEMM),
// cpu_vector.h (vector loads and stores for the cell loops), lstm_cell.h and gru_cell.h (the
// cells' gate math, shared with CUDA).
#pragma once

#include "recurrence_cpu.h"
#include "recurrence_cpu_backward.h"
#include "recurrence_cpu_forward.h"

namespace resetlstm {
namespace cpu {
namespace RLSTM_ISA {

// The entry points of this instruction set's build: the cell of dims.cell.
template <typename T>
int64_t forward_workspace_size(const Dims& d, bool training) {
  return with_cell(d.cell, [&](auto c) {
    return cell_forward_workspace_size<decltype(c), T>(d, training);
  });
}
template <typename T>
int64_t backward_workspace_size(const Dims& d, bool has_mask) {
  return with_cell(d.cell, [&](auto c) {
    return cell_backward_workspace_size<decltype(c), T>(d, has_mask);
  });
}
template <typename T>
void forward(const TaskRunner& runner, const ForwardArgs<T>& args, T* workspace) {
  with_cell(args.dims.cell,
            [&](auto c) { cell_forward<decltype(c), T>(runner, args, workspace); });
}
template <typename T>
void backward(const TaskRunner& runner, const BackwardArgs<T>& args, T* workspace) {
  with_cell(args.dims.cell,
            [&](auto c) { cell_backward<decltype(c), T>(runner, args, workspace); });
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
