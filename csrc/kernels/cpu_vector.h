// Explicit float vectors of this build's width (GCC vector extensions) for the elementwise
// passes of the time loops: the cell's gate math vectorizes on every instruction set, not only
// where GCC's auto-vectorizer happens to if-convert it (with AVX2 it left the forward and
// backward cell loops scalar: 23 % and 12 % of a (16, 50, 128, 128) fwd+bwd on AMD EPYC Zen 4,
// against 4 % and 5 % with AVX-512). Included by recurrence_cpu_impl.h inside an ISA namespace.
#pragma once

#include <cstdint>
#include <cstring>

#include "cpu_numeric.h"
#include "activations.h"
#include "recurrence_cpu.h"

#ifndef RLSTM_VECTOR_BYTES
#error "define RLSTM_VECTOR_BYTES (16, 32 or 64) before including cpu_vector.h"
#endif

namespace resetlstm {
namespace cpu {
namespace RLSTM_ISA {

typedef float VecF __attribute__((vector_size(RLSTM_VECTOR_BYTES)));
typedef uint32_t VecU32 __attribute__((vector_size(RLSTM_VECTOR_BYTES)));
typedef uint16_t VecU16 __attribute__((vector_size(RLSTM_VECTOR_BYTES / 2)));
constexpr int kFloatLanes = RLSTM_VECTOR_BYTES / 4;
using VecActivations = HostVectorActivations<VecF>;

// Unaligned loads and stores of kFloatLanes values, float or bf16 in memory (bf16 widened on
// load and rounded to nearest even on store, lane by lane exactly as to_acc / round_bf16).
inline __attribute__((always_inline)) VecF vload(const float* p) {
  VecF v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline __attribute__((always_inline)) VecF vload(const bf16* p) {
  VecU16 half;
  std::memcpy(&half, p, sizeof half);
  const VecU32 bits = __builtin_convertvector(half, VecU32) << 16;
  VecF v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}
inline __attribute__((always_inline)) void vstore(float* p, VecF v) {
  std::memcpy(p, &v, sizeof v);
}
inline __attribute__((always_inline)) void vstore(bf16* p, VecF v) {
  VecU32 u;
  std::memcpy(&u, &v, sizeof u);
  const VecU32 rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const VecU32 quiet_nan = (u >> 16) | 0x40u;
  const VecU32 out = (u & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded;
  const VecU16 half = __builtin_convertvector(out, VecU16);
  std::memcpy(p, &half, sizeof half);
}

}  // namespace RLSTM_ISA
}  // namespace cpu
}  // namespace resetlstm
