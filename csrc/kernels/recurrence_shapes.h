// Argument shape validation shared by every binding (TF shape functions, TF kernels, pybind11,
// XLA FFI) and every cell, so a bad argument gets the same message everywhere. Works with partially known shapes
// (rank -1 or dim -1 = unknown): only what is known is checked.
#pragma once

#include <cstdint>
#include <locale>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "recurrence_cpu.h"

namespace resetlstm {

struct Shape {
  int rank = -1;              // -1: unknown
  std::vector<int64_t> dims;  // -1: unknown dim
  bool present = true;        // optional arguments: false when not given

  static Shape absent() {
    Shape s;
    s.present = false;
    return s;
  }
};

// The arguments of a call (c0 only for cells with a cell state: absent for the GRU).
struct RecurrenceShapes {
  Shape inputs, kernel, recurrent_kernel, bias, resets, mask, h0;
  Shape c0 = Shape::absent();
  Shape recurrent_dropout_mask = Shape::absent();
};

// The name of a cell's op in messages ("reset_lstm", "reset_gru").
inline const char* op_name(cpu::CellType cell) {
  return cell == cpu::CellType::kLstm ? "reset_lstm" : "reset_gru";
}

namespace detail {

// A string stream in the classic "C" locale: the numbers in messages never depend on the
// process-wide C++ locale (std::locale::global, which any library in the process may set: with
// a grouping locale 1024 would print as "1,024", and a global locale holding another C++
// runtime's facets makes number formatting crash).
struct MessageStream : std::ostringstream {
  MessageStream() { imbue(std::locale::classic()); }
};

inline std::string str(const Shape& s) {
  if (s.rank < 0) return "<unknown>";
  MessageStream os;
  os << "[";
  for (int i = 0; i < s.rank; ++i) {
    if (i) os << ", ";
    if (s.dims[i] < 0) os << "?";
    else os << s.dims[i];
  }
  os << "]";
  return os.str();
}

inline std::string dim_str(int64_t d) { return d < 0 ? std::string("?") : std::to_string(d); }

// Merges a known value into `value` or reports a conflict.
inline bool merge(int64_t* value, int64_t d) {
  if (d < 0) return true;
  if (*value < 0) {
    *value = d;
    return true;
  }
  return *value == d;
}

}  // namespace detail

// Returns "" when the shapes are consistent, else a message naming the argument, the expected
// and the received shape. Fills dims (-1 where unknown; time_major and cell taken from the
// arguments). The kernels' widths are G * H for the cell's G gates; the bias is [G*H], or
// [2, G*H] (input and recurrent rows) for the GRU with reset_after.
inline std::string check_shapes(const RecurrenceShapes& s, cpu::CellType cell, bool time_major,
                                cpu::Dims* dims_out) {
  using detail::dim_str;
  using detail::merge;
  using detail::str;
  const cpu::CellShape cs = cpu::cell_shape(cell);
  const int G = cs.gates;
  const bool lstm = cell == cpu::CellType::kLstm;
  const char* gate_names = lstm ? "i, f, c, o" : "z, r, h";
  const std::string GH = std::to_string(G) + "H";
  const std::string kernel_layout = "[I, " + GH + "]", recurrent_layout = "[H, " + GH + "]";
  const std::string bias_layout = cs.bias_rows > 1 ? "[2, " + GH + "]" : "[" + GH + "]";
  const char* bias_note = cs.bias_rows > 1 ? " (input and recurrent bias, reset_after=True)"
                          : cell == cpu::CellType::kGruResetBefore ? " (reset_after=False)"
                                                                   : "";
  detail::MessageStream err;
  auto rank_error = [&](const char* name, const Shape& sh, int rank, const std::string& layout) {
    err << "`" << name << "` must be rank " << rank << " " << layout << ", got shape " << str(sh)
        << " (rank " << sh.rank << ")";
    return err.str();
  };
  auto dim = [](const Shape& sh, int i) { return sh.rank > i ? sh.dims[i] : int64_t(-1); };
  const char* bt = time_major ? "[T, B]" : "[B, T]";

  if (s.inputs.rank >= 0 && s.inputs.rank != 3)
    return rank_error("inputs", s.inputs, 3, time_major ? "[T, B, I]" : "[B, T, I]");
  if (s.kernel.rank >= 0 && s.kernel.rank != 2)
    return rank_error("kernel", s.kernel, 2, kernel_layout);
  if (s.recurrent_kernel.rank >= 0 && s.recurrent_kernel.rank != 2)
    return rank_error("recurrent_kernel", s.recurrent_kernel, 2, recurrent_layout);
  if (s.bias.rank >= 0 && s.bias.rank != (cs.bias_rows > 1 ? 2 : 1)) {
    rank_error("bias", s.bias, cs.bias_rows > 1 ? 2 : 1, bias_layout);
    err << bias_note;
    return err.str();
  }
  if (s.resets.present && s.resets.rank >= 0 && s.resets.rank != 2)
    return rank_error("resets", s.resets, 2, bt);
  if (s.mask.present && s.mask.rank >= 0 && s.mask.rank != 2)
    return rank_error("mask", s.mask, 2, bt);
  const char* h0_name = lstm ? "initial_state[0] (h)" : "initial_state";
  if (s.h0.present && s.h0.rank >= 0 && s.h0.rank != 2)
    return rank_error(h0_name, s.h0, 2, "[B, H]");
  if (s.c0.present && s.c0.rank >= 0 && s.c0.rank != 2)
    return rank_error("initial_state[1] (c)", s.c0, 2, "[B, H]");
  if (s.recurrent_dropout_mask.present && s.recurrent_dropout_mask.rank >= 0 &&
      s.recurrent_dropout_mask.rank != 2)
    return rank_error("recurrent_dropout_mask", s.recurrent_dropout_mask, 2, "[B, H]");

  int64_t B = dim(s.inputs, time_major ? 1 : 0);
  int64_t T = dim(s.inputs, time_major ? 0 : 1);
  int64_t I = dim(s.inputs, 2);

  // kernel [I, G*H]
  if (!merge(&I, dim(s.kernel, 0))) {
    err << "`kernel` must have shape " << kernel_layout << " with I = " << I
        << " (the last dim of `inputs` " << str(s.inputs) << "), got " << str(s.kernel);
    return err.str();
  }
  int64_t H = -1;
  const int64_t kg = dim(s.kernel, 1);
  if (kg >= 0) {
    if (kg % G != 0) {
      err << "`kernel` must have shape " << kernel_layout << " (columns a multiple of " << G
          << ", gates " << gate_names << "), got " << str(s.kernel);
      return err.str();
    }
    H = kg / G;
  }
  // recurrent_kernel [H, G*H]
  const int64_t r0 = dim(s.recurrent_kernel, 0), r1 = dim(s.recurrent_kernel, 1);
  const bool rk_square = r0 < 0 || r1 < 0 || r1 == G * r0;
  if (!rk_square || !merge(&H, r0) || (r1 >= 0 && (r1 % G != 0 || !merge(&H, r1 / G)))) {
    err << "`recurrent_kernel` must have shape " << recurrent_layout;
    if (H >= 0) err << " = [" << H << ", " << G * H << "] (H from `kernel` " << str(s.kernel) << ")";
    err << ", got " << str(s.recurrent_kernel);
    return err.str();
  }
  // bias [G*H] or [2, G*H]
  const int64_t bw = dim(s.bias, cs.bias_rows > 1 ? 1 : 0);
  const int64_t brows = cs.bias_rows > 1 ? dim(s.bias, 0) : 1;
  if ((bw >= 0 && (bw % G != 0 || !merge(&H, bw / G))) || (brows >= 0 && brows != cs.bias_rows)) {
    err << "`bias` must have shape " << bias_layout;
    if (H >= 0)
      err << " = " << (cs.bias_rows > 1 ? "[2, " : "[") << G * H << "]";
    err << bias_note << ", got " << str(s.bias);
    return err.str();
  }
  // resets, mask [B, T] (or [T, B])
  auto check_bt = [&](const char* name, const Shape& sh) {
    if (!sh.present) return true;
    const int64_t d0 = dim(sh, 0), d1 = dim(sh, 1);
    int64_t b = B, t = T;
    const bool ok = time_major ? (merge(&t, d0) && merge(&b, d1)) : (merge(&b, d0) && merge(&t, d1));
    if (!ok) {
      err << "`" << name << "` must have shape " << bt << " = ["
          << dim_str(time_major ? T : B) << ", " << dim_str(time_major ? B : T)
          << "] to match `inputs` " << str(s.inputs) << (time_major ? " (time_major=True)" : "")
          << ", got " << str(sh);
      return false;
    }
    B = b;
    T = t;
    return true;
  };
  if (!check_bt("resets", s.resets) || !check_bt("mask", s.mask)) return err.str();
  // initial state [B, H]
  auto check_bh = [&](const char* name, const Shape& sh) {
    if (!sh.present) return true;
    int64_t b = B, h = H;
    if (!merge(&b, dim(sh, 0)) || !merge(&h, dim(sh, 1))) {
      err << "`" << name << "` must have shape [B, H] = [" << dim_str(B) << ", " << dim_str(H)
          << "], got " << str(sh);
      return false;
    }
    B = b;
    H = h;
    return true;
  };
  if (!check_bh(h0_name, s.h0) || !check_bh("initial_state[1] (c)", s.c0) ||
      !check_bh("recurrent_dropout_mask", s.recurrent_dropout_mask))
    return err.str();

  if (dims_out) {
    dims_out->B = B;
    dims_out->T = T;
    dims_out->I = I;
    dims_out->H = H;
    dims_out->time_major = time_major;
    dims_out->cell = cell;
  }
  return "";
}

// The tensors backward takes from the forward pass and from upstream (absent ones are skipped)
// must have the forward's shapes: [B,T,H] / [B,T,S*H] ([T,B,*] if time_major) and [B,H].
struct BackwardShapes {
  Shape outputs, gates;
  Shape cells = Shape::absent();
  Shape d_outputs, d_h;
  Shape d_c = Shape::absent();
};

inline std::string check_backward_shapes(const BackwardShapes& s, const cpu::Dims& d) {
  auto sequence = [&](int64_t width) {
    Shape w;
    w.rank = 3;
    w.dims = d.time_major ? std::vector<int64_t>{d.T, d.B, width}
                          : std::vector<int64_t>{d.B, d.T, width};
    return w;
  };
  Shape state;
  state.rank = 2;
  state.dims = {d.B, d.H};
  const std::pair<const Shape*, Shape> expected[] = {
      {&s.outputs, sequence(d.H)}, {&s.gates, sequence(cpu::cell_shape(d.cell).saved * d.H)},
      {&s.cells, sequence(d.H)},
      {&s.d_outputs, sequence(d.H)}, {&s.d_h, state},             {&s.d_c, state}};
  const char* names[] = {"outputs", "gates", "cell_states", "d_outputs", "d_h", "d_c"};
  for (int i = 0; i < 6; ++i) {
    const Shape& got = *expected[i].first;
    const Shape& want = expected[i].second;
    if (!got.present || (got.rank == want.rank && got.dims == want.dims)) continue;
    return std::string("`") + names[i] + "` has the wrong shape (" + detail::str(got) +
           ", expected " + detail::str(want) + "); pass the forward's results (training=True)";
  }
  return "";
}

}  // namespace resetlstm
