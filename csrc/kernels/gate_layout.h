// The weight layout of torch.nn.LSTM / GRU and the kernels' (Keras') layout, converted both
// ways in one pass: torch stores a weight as [G*H, n] (one row block of H per gate, in torch's
// gate order), the kernels read [n, G*H] (one column block per gate, in Keras' order). Keras
// gate block j is torch's row block order[j]. A plain copy (no arithmetic), so it works on the
// bits of any element type of that size. Framework-free; the torch front end calls it for CPU
// tensors at every module call (two weights per layer and direction, and their gradients).
#pragma once

#include <algorithm>
#include <cstdint>

namespace resetlstm {
namespace layout {

// to_kernel: src [G*H, n] (torch) -> dst [n, G*H] (kernels): dst[i, j*H + h] =
//            src[order[j]*H + h, i].
// otherwise: src [n, G*H] (kernels) -> dst [G*H, n] (torch), the inverse.
// Tiled (kTile x kTile) so that both sides are read and written in cache lines.
template <typename Bits>
void gate_transpose(const Bits* src, Bits* dst, int64_t n, int64_t H, int G, const int* order,
                    bool to_kernel) {
  constexpr int64_t kTile = 32;
  const int64_t GH = G * H;
  for (int j = 0; j < G; ++j) {
    const int64_t torch_row0 = static_cast<int64_t>(order[j]) * H;  // torch block of gate j
    const int64_t kernel_col0 = static_cast<int64_t>(j) * H;          // kernels' block
    for (int64_t h0 = 0; h0 < H; h0 += kTile) {
      const int64_t h1 = std::min(H, h0 + kTile);
      for (int64_t i0 = 0; i0 < n; i0 += kTile) {
        const int64_t i1 = std::min(n, i0 + kTile);
        if (to_kernel) {
          for (int64_t i = i0; i < i1; ++i)
            for (int64_t h = h0; h < h1; ++h)
              dst[i * GH + kernel_col0 + h] = src[(torch_row0 + h) * n + i];
        } else {
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t i = i0; i < i1; ++i)
              dst[(torch_row0 + h) * n + i] = src[i * GH + kernel_col0 + h];
        }
      }
    }
  }
}

}  // namespace layout
}  // namespace resetlstm
