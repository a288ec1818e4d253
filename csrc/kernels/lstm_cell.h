// Gate math of one LSTM cell for one hidden unit, shared by the CPU loops and the CUDA kernels.
//
// Gate order and layout follow Keras: z = [z_i, z_f, z_c, z_o], each of width H.
// Forward:   i = sigmoid(z_i), f = sigmoid(z_f), g = tanh(z_c), o = sigmoid(z_o)
//            c = f * c_in + i * g,  h = o * tanh(c)
// Everything here is branch-free so the CPU loops over the hidden units auto-vectorize.
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
// expf), relative error ~2 ulp, no branches and no library call so loops over it vectorize.
RLSTM_HD float host_expf(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  // n = round(x / ln 2) by the 1.5 * 2^23 trick (floorf would block vectorization).
  const float magic = 12582912.0f;
  const float n = (x * 1.44269504088896341f + magic) - magic;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 127]
  float scale;
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

template <>
struct Activations<double> {
  RLSTM_HD static double sigmoid(double x) { return 1.0 / (1.0 + ::exp(-x)); }
  RLSTM_HD static double tanh(double x) { return ::tanh(x); }
};

// ---- one cell, one hidden unit ---------------------------------------------------------------

// Forward. z_* are pre-activations (input projection + recurrent projection + bias).
// Writes the post-activation gates (what backward needs) and returns the new c and h.
template <typename T>
RLSTM_HD void cell_forward(T z_i, T z_f, T z_c, T z_o, T c_in, T* i, T* f, T* g, T* o, T* c,
                           T* h) {
  using A = Activations<T>;
  *i = A::sigmoid(z_i);
  *f = A::sigmoid(z_f);
  *g = A::tanh(z_c);
  *o = A::sigmoid(z_o);
  *c = *f * c_in + *i * *g;
  *h = *o * A::tanh(*c);
}

// Backward. Given the saved gates, the cell input c_in and new cell c of this step, and the
// gradients dh (wrt h of this step) and dc (wrt c of this step, from the future), returns the
// pre-activation gradients dz_* and the gradient wrt c_in.
template <typename T>
RLSTM_HD void cell_backward(T i, T f, T g, T o, T c_in, T c, T dh, T dc, T* dz_i, T* dz_f,
                            T* dz_c, T* dz_o, T* dc_in) {
  const T tc = Activations<T>::tanh(c);
  // h = o * tanh(c):  dc += dh * o * (1 - tanh(c)^2),  do = dh * tanh(c)
  const T dc_total = dc + dh * o * (T(1) - tc * tc);
  const T d_o = dh * tc;
  // c = f * c_in + i * g
  const T d_i = dc_total * g;
  const T d_f = dc_total * c_in;
  const T d_g = dc_total * i;
  *dc_in = dc_total * f;
  // sigmoid'(z) = s (1 - s), tanh'(z) = 1 - t^2
  *dz_i = d_i * i * (T(1) - i);
  *dz_f = d_f * f * (T(1) - f);
  *dz_c = d_g * (T(1) - g * g);
  *dz_o = d_o * o * (T(1) - o);
}

// h of a step from its saved output gate and cell (used to rebuild the recurrent inputs).
template <typename T>
RLSTM_HD T cell_hidden(T o, T c) {
  return o * Activations<T>::tanh(c);
}

}  // namespace resetlstm
