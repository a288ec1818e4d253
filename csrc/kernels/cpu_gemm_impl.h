// A packed, cache-blocked GEMM (BLIS structure: pack A into MR-row panels, B into NR-column
// panels, a register-blocked micro-kernel over KC) written with GCC vector extensions so one
// template serves every vector width. Included once per instruction set by recurrence_cpu_impl.h,
// inside an ISA-specific namespace, and compiled with that ISA's flags.
//
// C[M,N] (+)= op(A)[M,K] * op(B)[K,N], row-major with leading dimensions; op = transpose or not.
// A and B are T (float, double or bf16); C is acc_t<T> (float for bf16).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "cpu_caches.h"
#include "cpu_numeric.h"
#include "cpu_parallel.h"
#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

#ifndef RLSTM_VECTOR_BYTES
#error "define RLSTM_VECTOR_BYTES (16, 32 or 64) before including cpu_gemm_impl.h"
#endif

namespace resetlstm {
namespace cpu {
namespace RLSTM_ISA {

template <typename T, int BYTES>
struct VecOf {
  typedef T type __attribute__((vector_size(BYTES)));
};

// Blocking parameters per operand type for this vector width. bf16 operands are packed in
// k-pairs (KP = 2: element (k, j) of a B panel at ((k / 2) * NR + j) * 2 + k % 2), the layout
// vdpbf16ps reads; float and double have KP = 1. C and the accumulators are acc_t<T>.
template <typename T>
struct Blocking {
  using Acc = acc_t<T>;
  static constexpr int KP = sizeof(T) == 2 ? 2 : 1;  // k values per packed group
  static constexpr int kLanes = RLSTM_VECTOR_BYTES / sizeof(Acc);
  static constexpr int kNV = 2;                     // vectors per micro-tile row
  static constexpr int NR = kNV * kLanes;           // micro-tile columns
  static constexpr int MR = RLSTM_VECTOR_BYTES == 64 ? 8 : 6;  // micro-tile rows
  static constexpr int MC = 16 * MR;                // rows of A packed at once (L2)
  using V = typename VecOf<Acc, RLSTM_VECTOR_BYTES>::type;
};

// KC, the k extent of a packed B micro-panel (KC x NR), from this CPU's L1d (read at run time):
// the panel stays in L1 while every MR-row tile of A streams past it. It takes the whole L1d
// up to 32 KiB: 32 KiB measured best on Zen 5 (48 KiB L1d) when it was a constant; on Zen 4
// (32 KiB L1d; kernel_bench, 2 threads, AVX2 and AVX-512) panels of 1/2 and 2/3 of L1d were
// no faster than the whole of it (within the VM's +-10 %). A multiple of 8 (whole k groups for
// bf16), at least 64.
template <typename T>
int64_t kc_block() {
  static const int64_t kc = [] {
    const int64_t panel = std::min<int64_t>(l1d_bytes(), int64_t{32} << 10);
    const int64_t k = panel / (Blocking<T>::NR * static_cast<int64_t>(sizeof(T)));
    return std::max<int64_t>(64, k / 8 * 8);
  }();
  return kc;
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
inline int64_t ceil_div(int64_t x, int64_t m) { return (x + m - 1) / m; }

// Per-thread packing buffer, allocated on first use and grown rarely; never in the hot loop
// once warm.
template <typename T, int kSlot>
T* thread_scratch(int64_t elements) {
  struct Slot;  // one buffer per (T, kSlot) and thread
  return static_cast<T*>(thread_buffer<Slot>(static_cast<size_t>(elements) * sizeof(T)));
}

// Position of element (k, lane) in a packed panel `width` lanes wide (MR for A, NR for B).
template <typename T>
inline int64_t packed_index(int64_t k, int lane, int width) {
  constexpr int KP = Blocking<T>::KP;
  return ((k / KP) * width + lane) * KP + k % KP;
}

// Packs op(A)[m, kc] (rows row0.., cols k0..) into ceil(m/MR) panels of kc' x MR, kc' = kc
// rounded up to whole k groups, zero padded.
template <typename T>
void pack_a(bool trans, const T* A, int64_t lda, int64_t m, int64_t kc, T* out) {
  constexpr int MR = Blocking<T>::MR, KP = Blocking<T>::KP;
  const int64_t kcp = round_up(kc, KP);
  for (int64_t p = 0; p < m; p += MR) {
    const int rows = static_cast<int>(std::min<int64_t>(MR, m - p));
    T* dst = out + p * kcp;
    if (!trans) {
      for (int i = 0; i < rows; ++i) {
        const T* src = A + (p + i) * lda;
        for (int64_t k = 0; k < kc; ++k) dst[packed_index<T>(k, i, MR)] = src[k];
      }
    } else {  // op(A)(r, k) = A[k * lda + r]: each k reads MR contiguous values
      for (int64_t k = 0; k < kc; ++k) {
        const T* src = A + k * lda + p;
        for (int i = 0; i < rows; ++i) dst[packed_index<T>(k, i, MR)] = src[i];
      }
    }
    for (int i = rows; i < MR; ++i)
      for (int64_t k = 0; k < kcp; ++k) dst[packed_index<T>(k, i, MR)] = T{};
    for (int64_t k = kc; k < kcp; ++k)
      for (int i = 0; i < rows; ++i) dst[packed_index<T>(k, i, MR)] = T{};
  }
}

// Packs op(B)[kc, n] into ceil(n/NR) panels of kc' x NR, zero padded.
template <typename T>
void pack_b(bool trans, const T* B, int64_t ldb, int64_t kc, int64_t n, T* out) {
  constexpr int NR = Blocking<T>::NR, KP = Blocking<T>::KP;
  const int64_t kcp = round_up(kc, KP);
  for (int64_t q = 0; q < n; q += NR) {
    const int cols = static_cast<int>(std::min<int64_t>(NR, n - q));
    T* dst = out + q * kcp;
    if (!trans) {
      for (int64_t k = 0; k < kc; ++k) {
        const T* src = B + k * ldb + q;
        for (int j = 0; j < cols; ++j) dst[packed_index<T>(k, j, NR)] = src[j];
      }
    } else {  // op(B)(k, c) = B[c * ldb + k]
      for (int j = 0; j < cols; ++j) {
        const T* src = B + (q + j) * ldb;
        for (int64_t k = 0; k < kc; ++k) dst[packed_index<T>(k, j, NR)] = src[k];
      }
    }
    for (int64_t k = 0; k < kcp; ++k)
      for (int j = k < kc ? cols : 0; j < NR; ++j) dst[packed_index<T>(k, j, NR)] = T{};
  }
}

// Writes (or adds) an MR x NR register tile to C[m, n].
template <typename Acc, typename V, int MR, int NV>
inline void store_tile(V (&acc)[MR][NV], Acc* __restrict c, int64_t ldc, bool accumulate, int m,
                       int n) {
  constexpr int L = sizeof(V) / sizeof(Acc), NR = NV * L;
  if (m == MR && n == NR) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        Acc* dst = c + i * ldc + v * L;
        if (accumulate) {
          V old;
          std::memcpy(&old, dst, sizeof(V));
          acc[i][v] += old;
        }
        std::memcpy(dst, &acc[i][v], sizeof(V));
      }
  } else {
    alignas(64) Acc tile[MR * NR];
    std::memcpy(tile, acc, sizeof tile);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j)
        c[i * ldc + j] = accumulate ? c[i * ldc + j] + tile[i * NR + j] : tile[i * NR + j];
  }
}

// C[M, n<=NR] (+)= A[M x kc] * b_panel[kc x NR], M <= MR rows, accumulators in registers.
// Group g (KP consecutive k) of row i of A is at a + i * a_rs + g * a_gs: a packed panel
// (a_rs = KP, a_gs = KP * MR) or rows read in place (a_rs = lda, a_gs = KP). A packed panel has
// kc rounded up to whole groups; rows read in place may end in a partial group (bf16, odd kc),
// which is read element by element. M is a template parameter so that a tile of fewer rows
// costs its own rows' FMAs, not MR rows' (AVX2: MR = 6, and 8-row slabs were a 6-row tile and
// a 2-row one computed as 6).
template <typename T, int M>
void micro_kernel(int64_t kc, const T* __restrict a, int64_t a_rs, int64_t a_gs,
                  const T* __restrict b, acc_t<T>* __restrict c, int64_t ldc, bool accumulate,
                  int n) {
  using Bk = Blocking<T>;
  using V = typename Bk::V;
  constexpr int MR = M, NV = Bk::kNV, L = Bk::kLanes, NR = Bk::NR;
  static_assert(M >= 1 && M <= Bk::MR, "M rows of at most MR");
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V{};
  const T* rows[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) rows[i] = a + i * a_rs;
  if constexpr (Bk::KP == 1) {
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; ++k) {
      V bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) std::memcpy(&bv[v], b + k * NR + v * L, sizeof(V));
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const V av = rows[i][k * a_gs] - V{};  // a broadcast (x - 0 == x for every x)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] += av * bv[v];
      }
    }
  } else {
    // bf16: each 32-bit lane of a B group vector holds the pair (k, k+1) of one column; A's pair
    // is broadcast to every lane. A trailing single k is read alone, its partner zero.
    const int64_t groups = kc / 2;
    const bool tail = kc % 2 != 0;
    auto a_pair = [&](int i, int64_t g) -> uint32_t {
      uint32_t pair;
      if (g < groups) {
        std::memcpy(&pair, rows[i] + g * a_gs, sizeof pair);
      } else {
        pair = rows[i][g * a_gs].bits;
      }
      return pair;
    };
    for (int64_t g = 0; g < groups + (tail ? 1 : 0); ++g) {
#if defined(__AVX512BF16__)
      static_assert(NV * L * 4 == NV * 64, "vdpbf16ps path assumes 512-bit vectors");
      __m512bh bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        bv[v] = (__m512bh)_mm512_loadu_si512(b + (g * NR + v * L) * 2);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(a_pair(i, g)));
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          __m512 x;
          std::memcpy(&x, &acc[i][v], sizeof x);
          x = _mm512_dpbf16_ps(x, av, bv[v]);
          std::memcpy(&acc[i][v], &x, sizeof x);
        }
      }
#else
      using U = typename VecOf<uint32_t, RLSTM_VECTOR_BYTES>::type;
      V b_lo[NV], b_hi[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        U u;
        std::memcpy(&u, b + (g * NR + v * L) * 2, sizeof u);
        const U lo = u << 16, hi = u & 0xFFFF0000u;
        std::memcpy(&b_lo[v], &lo, sizeof lo);
        std::memcpy(&b_hi[v], &hi, sizeof hi);
      }
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const uint32_t pair = a_pair(i, g);
        const uint32_t lo_bits = pair << 16, hi_bits = pair & 0xFFFF0000u;
        float lo, hi;
        std::memcpy(&lo, &lo_bits, sizeof lo);
        std::memcpy(&hi, &hi_bits, sizeof hi);
        const V a_lo = lo - V{}, a_hi = hi - V{};
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] += a_lo * b_lo[v] + a_hi * b_hi[v];
      }
#endif
    }
  }
  store_tile<acc_t<T>, V, MR, NV>(acc, c, ldc, accumulate, MR, n);
}

// micro_kernel<T, m> for a run-time m in [1, M].
template <typename T, int M = Blocking<T>::MR>
inline void micro_kernel_rows(int m, int64_t kc, const T* a, int64_t a_rs, int64_t a_gs,
                              const T* b, acc_t<T>* c, int64_t ldc, bool accumulate, int n) {
  if constexpr (M > 1)
    if (m < M)
      return micro_kernel_rows<T, M - 1>(m, kc, a, a_rs, a_gs, b, c, ldc, accumulate, n);
  micro_kernel<T, M>(kc, a, a_rs, a_gs, b, c, ldc, accumulate, n);
}

// C[m, n] (+)= A block [m x kc] * packed B block [kc x n]. A is packed (lda = 0) or read in
// place from rows lda apart.
template <typename T>
void macro_kernel(int64_t m, int64_t n, int64_t kc, const T* a, int64_t lda, const T* b_packed,
                  acc_t<T>* c, int64_t ldc, bool accumulate) {
  constexpr int MR = Blocking<T>::MR, NR = Blocking<T>::NR, KP = Blocking<T>::KP;
  const int64_t kcp = round_up(kc, KP);
  // Rows read in place are cut into tiles as even as possible (8 rows with MR = 6: 4 + 4, not
  // 6 + 2); packed A comes in MR-row panels.
  const int64_t tiles = ceil_div(m, MR);
  for (int64_t q = 0; q < n; q += NR) {  // one B micro-panel stays in L1 across all A panels
    const int cols = static_cast<int>(std::min<int64_t>(NR, n - q));
    for (int64_t p = 0, tile = 0; p < m; ++tile) {
      if (lda == 0) {
        const int rows = static_cast<int>(std::min<int64_t>(MR, m - p));
        micro_kernel_rows<T>(rows, kcp, a + p * kcp, KP, KP * MR, b_packed + q * kcp,
                             c + p * ldc + q, ldc, accumulate, cols);
        p += rows;
      } else {
        const int rows = static_cast<int>(ceil_div(m - p, tiles - tile));
        micro_kernel_rows<T>(rows, kc, a + p * lda, lda, KP, b_packed + q * kcp,
                             c + p * ldc + q, ldc, accumulate, cols);
        p += rows;
      }
    }
  }
}

// ---- a right-hand operand packed once and reused (the recurrent kernel, every step) --------

template <typename T>
struct PackedB {
  const T* data = nullptr;
  int64_t K = 0, N = 0;
};

// Layout: for each KC chunk pc, the chunk's ceil(N/NR) panels of kc x NR.
template <typename T>
int64_t packed_b_size(int64_t K, int64_t N) {
  return round_up(K, Blocking<T>::KP) * round_up(N, Blocking<T>::NR);
}

template <typename T>
PackedB<T> pack_b_full(const TaskRunner& runner, bool trans, const T* B, int64_t ldb, int64_t K,
                       int64_t N, T* out) {
  constexpr int NR = Blocking<T>::NR, KP = Blocking<T>::KP;
  const int64_t KC = kc_block<T>();
  if (K <= 0 || N <= 0) return PackedB<T>{out, K, N};
  const int64_t n_pad = round_up(N, NR);
  const int64_t chunks = ceil_div(K, KC);
  // Column groups of whole panels too, so that every thread packs a share when K is a single
  // chunk (a recurrent kernel with H <= 256 used to be packed by one thread, 68 us of a
  // 0.7 ms forward at (16,50,128,128) on Zen 5).
  const int64_t panels = ceil_div(N, NR);
  const int64_t groups = std::max<int64_t>(
      1, std::min<int64_t>(panels, ceil_div(runner.num_threads(), chunks)));
  const int64_t cols = ceil_div(panels, groups) * NR, gn = ceil_div(N, cols);
  runner.run(chunks * gn, [&](int64_t item) {
    const int64_t pc = item / gn, j0 = (item % gn) * cols;
    const int64_t k0 = pc * KC, kc = std::min<int64_t>(KC, K - k0);
    const T* src = trans ? B + j0 * ldb + k0 : B + k0 * ldb + j0;
    pack_b(trans, src, ldb, kc, std::min(cols, N - j0), out + k0 * n_pad + j0 * round_up(kc, KP));
  });
  return PackedB<T>{out, K, N};
}

// C[M, n] (+)= A[M, K] * columns [j0, j0 + n) of the packed B (all of them by default; j0 a
// multiple of NR), into C's columns [j0, j0 + n), on the calling thread (called from inside a
// task).
template <typename T>
void gemm_packed_serial(int64_t M, const T* A, int64_t lda, const PackedB<T>& B, acc_t<T>* C,
                        int64_t ldc, bool accumulate, int64_t j0 = 0, int64_t n = -1) {
  constexpr int MC = Blocking<T>::MC, NR = Blocking<T>::NR;
  constexpr int KP = Blocking<T>::KP;
  const int64_t KC = kc_block<T>();
  const int64_t K = B.K, n_pad = round_up(B.N, NR);
  const int64_t N = n < 0 ? B.N - j0 : n;
  if (M <= 0 || N <= 0) return;
  C += j0;
  if (K == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, acc_t<T>(0));
    return;
  }
  // A is read in place: an MR x KC sliver of it stays in L1 across all of B's panels, so
  // packing it (every step) would cost more than it saves.
  for (int64_t i0 = 0; i0 < M; i0 += MC) {
    const int64_t mc = std::min<int64_t>(MC, M - i0);
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kc = std::min<int64_t>(KC, K - k0);
      macro_kernel(mc, N, kc, A + i0 * lda + k0, lda,
                   B.data + k0 * n_pad + j0 * round_up(kc, KP), C + i0 * ldc, ldc,
                   accumulate || k0 > 0);
    }
  }
}

// ---- general multi-threaded GEMM (input projection, weight gradients, input gradients) ------

// Tasks per thread of the multi-threaded GEMMs. The runner hands tasks out as threads claim
// them, so with several per thread one that falls behind (its core shared with another
// process) takes fewer and nobody waits long for it; with one per thread the call waited for
// the slowest (fwd+bwd ~1.8x its quiet time beside one busy thread on 2 cores).
constexpr int kTasksPerThread = 4;

template <typename T>
void gemm(const TaskRunner& runner, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
          const T* A, int64_t lda, const T* B, int64_t ldb, acc_t<T>* C, int64_t ldc,
          bool accumulate) {
  using Bk = Blocking<T>;
  constexpr int MR = Bk::MR, NR = Bk::NR;
  const int64_t KC = kc_block<T>();
  if (M <= 0 || N <= 0) return;
  // Tile C into blocks: enough to keep every thread busy, split so that packing costs least
  // (every row block packs all of B, every column block all of A).
  int64_t mc = round_up(std::min<int64_t>(M, 4 * Bk::MC), MR);
  int64_t nc = round_up(std::min<int64_t>(N, 2048), NR);
  const int64_t want = kTasksPerThread * static_cast<int64_t>(runner.num_threads());
  auto packing = [&](int64_t m_block, int64_t n_block) {
    return ceil_div(N, n_block) * M + ceil_div(M, m_block) * N;  // times K
  };
  while (ceil_div(M, mc) * ceil_div(N, nc) < want && (mc > 2 * MR || nc > 2 * NR)) {
    const int64_t mc_half = round_up(mc / 2, MR), nc_half = round_up(nc / 2, NR);
    const bool can_m = mc > 2 * MR, can_n = nc > 2 * NR;
    if (can_m && (!can_n || packing(mc_half, nc) <= packing(mc, nc_half))) mc = mc_half;
    else nc = nc_half;
  }
  // Even blocks: M = 800 in blocks of 256 would leave a 32-row block, and one thread doing
  // two full blocks while the other does one and the stub.
  mc = round_up(ceil_div(M, ceil_div(M, mc)), MR);
  nc = round_up(ceil_div(N, ceil_div(N, nc)), NR);
  const int64_t mt = ceil_div(M, mc), nt = ceil_div(N, nc);
  runner.run(mt * nt, [&](int64_t task) {
    const int64_t i0 = (task / nt) * mc, j0 = (task % nt) * nc;
    const int64_t m = std::min(mc, M - i0), n = std::min(nc, N - j0);
    acc_t<T>* c = C + i0 * ldc + j0;
    if (K == 0) {
      if (!accumulate)
        for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, acc_t<T>(0));
      return;
    }
    // A row-major A is read in place (its MR x KC slivers stay in L1 across B's panels); only a
    // transposed A, whose rows would be strided, is packed.
    T* a_packed = trans_a ? thread_scratch<T, 0>(round_up(m, MR) * KC) : nullptr;
    T* b_packed = thread_scratch<T, 1>(round_up(n, NR) * KC);
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kc = std::min<int64_t>(KC, K - k0);
      pack_b(trans_b, trans_b ? B + j0 * ldb + k0 : B + k0 * ldb + j0, ldb, kc, n, b_packed);
      if (trans_a) {
        pack_a(true, A + k0 * lda + i0, lda, m, kc, a_packed);
        macro_kernel(m, n, kc, a_packed, /*lda=*/0, b_packed, c, ldc, accumulate || k0 > 0);
      } else {
        macro_kernel(m, n, kc, A + i0 * lda + k0, lda, b_packed, c, ldc, accumulate || k0 > 0);
      }
    }
  });
}

// ---- weight gradients: two A^T B products sharing B, split over K --------------------------

// How many ways gemm_tn_pair may split K; the caller provides (kMaxKSplits - 1) * (M1 + M2) * N
// accumulators of partial sums.
constexpr int kMaxKSplits = 8;

// C1[M1, N] = A1^T B and C2[M2, N] = A2^T B for A1 [K, M1], A2 [K, M2], B [K, N], all row-major
// and dense, K large (the B*T rows of a sequence): an LSTM's kernel and recurrent-kernel
// gradients, which share B = dz. B is packed once per K chunk and column block for both
// products (two separate GEMMs would pack it twice, and tile so that each A is packed once per
// column block). K is split into up to kMaxKSplits ranges of whole chunks, one task each (times
// column blocks, to reach kTasksPerThread tasks per thread; K splits first, since a column block
// packs both A again and a split only adds partial sums); the first range writes C1/C2, the
// others `partials`, summed in at the end. The ranges are even in rows (each then chunked by KC): in
// whole chunks, K = 800 split in two would give 512 and 288 rows.
// B has row stride ldb and C1, C2 ldc (column blocks of wider matrices); M2 may be 0 (then A2
// and C2 are unused: one product).
template <typename T>
void gemm_tn_pair(const TaskRunner& runner, int64_t K, int64_t N, const T* A1, int64_t M1,
                  const T* A2, int64_t M2, const T* B, int64_t ldb, acc_t<T>* C1,
                  acc_t<T>* C2, int64_t ldc, acc_t<T>* partials) {
  using Acc = acc_t<T>;
  using Bk = Blocking<T>;
  constexpr int MR = Bk::MR, NR = Bk::NR, KP = Bk::KP;
  const int64_t KC = kc_block<T>();
  const int64_t M = M1 + M2;
  if (N <= 0 || M <= 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M1; ++i) std::fill(C1 + i * ldc, C1 + i * ldc + N, Acc(0));
    for (int64_t i = 0; i < M2; ++i) std::fill(C2 + i * ldc, C2 + i * ldc + N, Acc(0));
    return;
  }
  const int64_t tasks = int64_t{kTasksPerThread} * runner.num_threads();
  const int64_t chunks = ceil_div(K, KC);
  const int64_t splits =
      std::max<int64_t>(1, std::min<int64_t>({int64_t{kMaxKSplits}, tasks, chunks}));
  const int64_t col_tasks = ceil_div(tasks, splits);
  const int64_t nc = round_up(ceil_div(N, col_tasks), NR), nt = ceil_div(N, nc);
  const int64_t mc_max = round_up(std::min<int64_t>(std::max(M1, M2), 4 * Bk::MC), MR);
  runner.run(splits * nt, [&](int64_t task) {
    const int64_t s = task / nt, j0 = (task % nt) * nc, n = std::min(nc, N - j0);
    // rows [lo, hi) of K in whole k groups; never empty (splits <= chunks: K / splits > KC / 2)
    const int64_t lo = std::min(K, round_up(s * K / splits, KP));
    const int64_t hi = s + 1 == splits ? K : std::min(K, round_up((s + 1) * K / splits, KP));
    // the first range writes C (stride ldc), the others their partial sums (stride N)
    Acc* out1 = s == 0 ? C1 : partials + (s - 1) * M * N;
    Acc* out2 = s == 0 ? C2 : partials + (s - 1) * M * N + M1 * N;
    const int64_t ld_out = s == 0 ? ldc : N;
    T* a_packed = thread_scratch<T, 0>(mc_max * KC);
    T* b_packed = thread_scratch<T, 1>(round_up(n, NR) * KC);
    for (int64_t k0 = lo; k0 < hi; k0 += KC) {
      const int64_t kc = std::min<int64_t>(KC, hi - k0);
      pack_b(false, B + k0 * ldb + j0, ldb, kc, n, b_packed);
      const bool accumulate = k0 > lo;
      for (int which = 0; which < 2; ++which) {
        const T* A = which == 0 ? A1 : A2;
        const int64_t m_all = which == 0 ? M1 : M2;
        Acc* out = which == 0 ? out1 : out2;
        for (int64_t i0 = 0; i0 < m_all; i0 += mc_max) {
          const int64_t m = std::min(mc_max, m_all - i0);
          pack_a(true, A + k0 * m_all + i0, m_all, m, kc, a_packed);
          macro_kernel(m, n, kc, a_packed, /*lda=*/0, b_packed, out + i0 * ld_out + j0, ld_out,
                       accumulate);
        }
      }
    }
  });
  if (splits == 1) return;
  // C += the other ranges' partial sums, by rows.
  const int64_t row_block = std::max<int64_t>(1, (int64_t{1} << 14) / N);
  runner.run(ceil_div(M, row_block), [&](int64_t task) {
    const int64_t r1 = std::min(M, (task + 1) * row_block);
    for (int64_t r = task * row_block; r < r1; ++r) {
      Acc* dst = r < M1 ? C1 + r * ldc : C2 + (r - M1) * ldc;
      for (int64_t s = 1; s < splits; ++s) {
        const Acc* src = partials + (s - 1) * M * N + r * N;
#pragma GCC ivdep
        for (int64_t j = 0; j < N; ++j) dst[j] += src[j];
      }
    }
  });
}

}  // namespace RLSTM_ISA
}  // namespace cpu
}  // namespace resetlstm
