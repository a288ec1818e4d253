// The activations of every cell (sigmoid, tanh) for the CPU loops and the CUDA kernels, and
// RLSTM_HD, which makes a function __host__ __device__ under nvcc and an always-inline host
// function otherwise. Everything here is branch-free so the CPU loops vectorize.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define RLSTM_HD __host__ __device__ __forceinline__
#else
#define RLSTM_HD inline __attribute__((always_inline))
#endif

namespace resetlstm {

// ---- activations ---------------------------------------------------------------------------

// exp(x) for float on the host: Cody-Waite range reduction and a degree-6 polynomial (Cephes
// expf), relative error ~2 ulp, no branches and no library call. F is float or, on the CPU, a
// GCC vector of floats (every lane computed alike, so a vector loop and its scalar tail agree).
RLSTM_HD int32_t host_exp_int(float n) { return static_cast<int32_t>(n); }
#if !defined(__CUDACC__)
template <typename V>
inline __attribute__((always_inline)) auto host_exp_int(V n) -> decltype(n < n) {
  return __builtin_convertvector(n, decltype(n < n));
}
#endif

template <typename F>
RLSTM_HD F host_expf(F x) {
  const F lo = F{} + -87.0f, hi = F{} + 88.0f;
  x = x < lo ? lo : (x > hi ? hi : x);
  // n = round(x / ln 2) by the 1.5 * 2^23 trick (floorf would block vectorization).
  const float magic = 12582912.0f;
  const F n = (x * 1.44269504088896341f + magic) - magic;
  F r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  F p = F{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const auto bits = (host_exp_int(n) + 127) << 23;  // 2^n, n in [-126, 127]
  static_assert(sizeof bits == sizeof(F), "one int32 per float lane");
  F scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

template <typename T>
struct Activations;

template <>
struct Activations<float> {
  RLSTM_HD static float sigmoid(float x) {
#if defined(__CUDA_ARCH__)
    return 1.0f / (1.0f + expf(-x));
#else
    return 1.0f / (1.0f + host_expf(-x));
#endif
  }
  RLSTM_HD static float tanh(float x) {
#if defined(__CUDA_ARCH__)
    return tanhf(x);
#else
    // tanh(x) = 1 - 2 / (1 + e^{2x}); absolute error ~1e-7, exact limits at +-inf.
    return 1.0f - 2.0f / (1.0f + host_expf(2.0f * x));
#endif
  }
};

#if !defined(__CUDACC__)
// The float activations lane-wise on a GCC vector of floats V (the CPU kernels' explicit
// vector loops): the same expressions as Activations<float> on the host.
template <typename V>
struct HostVectorActivations {
  RLSTM_HD static V sigmoid(V x) { return 1.0f / (1.0f + host_expf(-x)); }
  RLSTM_HD static V tanh(V x) { return 1.0f - 2.0f / (1.0f + host_expf(2.0f * x)); }
};
#endif

template <>
struct Activations<double> {
  RLSTM_HD static double sigmoid(double x) { return 1.0 / (1.0 + ::exp(-x)); }
  RLSTM_HD static double tanh(double x) { return ::tanh(x); }
};

}  // namespace resetlstm
