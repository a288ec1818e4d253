// Plumbing shared by the forward and backward time loops of the CPU kernels (one build per
// instruction set, inside its namespace): row indexing of [B,T,*] / [T,B,*] arrays, the slab
// size of the row split, the workspace carver, and two small per-row helpers.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu_gemm_impl.h"
#include "cpu_numeric.h"
#include "recurrence_cpu.h"

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

// Slabs per thread of the row split (SlabSchedule in recurrence_cpu_split.h): more slabs than threads,
// so that a thread that falls behind leaves slabs to the others. RESETLSTM_CPU_SLABS=1..4
// overrides it (bench); read at every call.
inline int64_t slabs_per_thread() {
  static const char* const kAllowed[] = {"1", "2", "3", "4", nullptr};
  const char* forced = env_choice("RESETLSTM_CPU_SLABS", kAllowed);
  return forced ? forced[0] - '0' : 2;
}

// Rows per slab: split B evenly into slabs_per_thread() slabs per thread, no slab under 2 rows. Not in whole
// micro-tiles: the GEMM tiles a slab evenly and a short tile costs only its rows (B = 16 on 2
// threads with AVX2's MR = 6 used to be slabs of 12 and 4 rows, one thread idle a third of each
// step), so a core computes a 4-row slab as fast as an 8-row one (kernel_bench, one thread,
// AMD EPYC Zen 4, (B, 128, 64, 256): 97-99 GFLOP/s at B = 4, 8, 16, 32). The floor used to be
// MR rows, which left B <= 8 on one thread with AVX-512 (MR = 8): on 2 threads fwd+bwd at
// B = 8 17.6 -> 11.0 ms, B = 6 12.8 -> 8.7, B = 4 8.9 -> 7.1 (a floor of 1 row: no better).
template <typename T>
int64_t slab_rows(int64_t B, int threads) {
  constexpr int64_t kMinRows = 2;
  if (B <= 0) return 1;  // no slabs at all
  const int64_t wanted = static_cast<int64_t>(threads) * slabs_per_thread();
  const int64_t slabs = std::max<int64_t>(1, std::min<int64_t>(wanted, ceil_div(B, kMinRows)));
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

}  // namespace RLSTM_ISA
}  // namespace cpu
}  // namespace resetlstm
