// Storage type vs compute type of the CPU kernels. float and double compute in themselves;
// bf16 is widened to float32 on load and rounded to nearest even on store. Everything here is
// branch-free and inline so the loops that use it vectorize.
#pragma once

#include <cstdint>
#include <cstring>

#include "recurrence_cpu.h"

namespace resetlstm {
namespace cpu {

// acc_t<T>, the type a T value is computed in, is in recurrence_cpu.h (shared with the CUDA kernels).

inline __attribute__((always_inline)) float to_acc(bf16 x) {
  const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline __attribute__((always_inline)) float to_acc(float x) { return x; }
inline __attribute__((always_inline)) double to_acc(double x) { return x; }

// float32 -> bf16, round to nearest even; NaN stays a (quiet) NaN, +-Inf stays +-Inf.
inline __attribute__((always_inline)) bf16 round_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const bool nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return bf16{static_cast<uint16_t>(nan ? ((u >> 16) | 0x40u) : rounded)};
}

// Stores a computed value as T.
template <typename T>
inline __attribute__((always_inline)) T from_acc(acc_t<T> x) {
  if constexpr (sizeof(T) == 2) {
    return round_bf16(x);
  } else {
    return x;
  }
}

}  // namespace cpu
}  // namespace resetlstm
