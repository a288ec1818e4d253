// The XLA FFI custom calls' buffers as the kernels' argument structs (cpu::ForwardArgs /
// cpu::BackwardArgs), validated first: dtypes, check_shapes / check_backward_shapes (the
// messages every binding gives), the results' shapes and the workspace's size. Shared by the CPU
// and the CUDA handlers, so the CUDA handler's host-side checks are the ones the CPU tests run.
//
// One layout for every cell (the `cell` attribute: cpu::CellType). Call layout
// (python/resetlstm/jax/_lowering.py builds it). Absent optional arguments are zero-size
// placeholders of the right dtype; the flags say which are present. The cell-state buffers (c0,
// c, cells, d_c, d_c0) are zero-size placeholders for cells without one (the GRU).
//   forward:  inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0, dropout
//             -> outputs, h, c, gates, cells, workspace (u8)
//   backward: inputs, kernel, recurrent_kernel, resets, mask, h0, c0, dropout, outputs, gates,
//             cells, d_outputs, d_h, d_c
//             -> d_inputs, d_kernel, d_recurrent_kernel, d_bias, d_h0, d_c0, workspace (u8)
// Shapes as in recurrence_cpu.h (B, T, I, H, G, S; [T,B,*] when time_major). resets/mask are PRED
// (bool). Without `training` the forward's gates and cells are [0] and nothing is saved.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

#include "../kernels/recurrence_cpu.h"
#include "../kernels/recurrence_shapes.h"

namespace resetlstm {
namespace jaxffi {

namespace ffi = xla::ffi;

// Which optional arguments are present (the call's attributes of these names).
struct Flags {
  bool time_major = false;
  bool has_resets = false;
  bool has_mask = false;
  bool has_state = false;    // h0 (and c0 for a cell with a cell state)
  bool has_dropout = false;  // recurrent_dropout_mask
  cpu::CellType cell = cpu::CellType::kLstm;

  bool has_c() const { return has_state && cpu::cell_shape(cell).cell_state; }
};

// Workspace results are this much larger than the kernels need, so the handler can align them.
constexpr int64_t kWorkspaceAlign = 256;

inline Shape ShapeOf(const ffi::AnyBuffer& b, bool present = true) {
  if (!present) return Shape::absent();
  Shape s;
  const auto dims = b.dimensions();
  s.rank = static_cast<int>(dims.size());
  s.dims.assign(dims.begin(), dims.end());
  return s;
}

inline const char* DtypeName(ffi::DataType t) {
  switch (t) {
    case ffi::DataType::F32: return "float32";
    case ffi::DataType::F64: return "float64";
    case ffi::DataType::BF16: return "bfloat16";
    case ffi::DataType::F16: return "float16";
    case ffi::DataType::PRED: return "bool";
    case ffi::DataType::U8: return "uint8";
    default: return "another dtype";
  }
}

inline ffi::Error Invalid(cpu::CellType cell, const std::string& what) {
  return ffi::Error::InvalidArgument(std::string(op_name(cell)) + ": " + what);
}

// Runs fn(T{}) with the kernels' storage type of `dtype`; an error for any other dtype.
// kHalf: whether float16 has kernels here (CUDA only).
template <bool kHalf, typename Fn>
ffi::Error WithStorageType(cpu::CellType cell, ffi::DataType dtype, Fn&& fn) {
  switch (dtype) {
    case ffi::DataType::F32: return fn(float{});
    case ffi::DataType::F64: return fn(double{});
    case ffi::DataType::BF16: return fn(cpu::bf16{});
    case ffi::DataType::F16:
      if constexpr (kHalf) return fn(cpu::f16{});
      break;
    default: break;
  }
  return Invalid(cell, std::string("`inputs` must be float32, float64, bfloat16") +
                 (kHalf ? " or float16" : "") + " here, got " + DtypeName(dtype));
}

struct Named {
  const ffi::AnyBuffer* buffer;
  const char* name;
  bool present;
};

// Every present buffer must have `dtype`.
inline std::string CheckDtypes(ffi::DataType dtype, std::initializer_list<Named> buffers) {
  for (const Named& b : buffers) {
    if (b.present && b.buffer->element_type() != dtype)
      return std::string("`") + b.name + "` has dtype " + DtypeName(b.buffer->element_type()) +
             " but `inputs` has " + DtypeName(dtype) + "; all float arguments must share one dtype";
  }
  return "";
}

inline std::vector<int64_t> SequenceDims(const cpu::Dims& d, int64_t width) {
  return d.time_major ? std::vector<int64_t>{d.T, d.B, width}
                      : std::vector<int64_t>{d.B, d.T, width};
}

// Every result must have its expected dims and `dtype`.
inline std::string CheckResults(
    ffi::DataType dtype,
    std::initializer_list<std::pair<Named, std::vector<int64_t>>> results) {
  for (const auto& [r, want] : results) {
    const auto dims = r.buffer->dimensions();
    const std::vector<int64_t> got(dims.begin(), dims.end());
    if (r.buffer->element_type() != dtype || got != want) {
      Shape w;
      w.rank = static_cast<int>(want.size());
      w.dims = want;
      return std::string("result `") + r.name + "` must be " + DtypeName(dtype) + " " +
             detail::str(w) + ", got " + DtypeName(r.buffer->element_type()) + " " +
             detail::str(ShapeOf(*r.buffer));
    }
  }
  return "";
}

// The workspace result, aligned; null with *error set when it is too small for `elements` of T.
template <typename T>
T* Workspace(ffi::Result<ffi::AnyBuffer>& ws, int64_t elements, std::string* error) {
  const int64_t need = elements * static_cast<int64_t>(sizeof(T)) + kWorkspaceAlign;
  if (static_cast<int64_t>(ws->size_bytes()) < need) {
    *error = "the workspace result holds " + std::to_string(ws->size_bytes()) + " bytes, " +
             std::to_string(need) + " needed";
    return nullptr;
  }
  const uintptr_t p = reinterpret_cast<uintptr_t>(ws->untyped_data());
  return reinterpret_cast<T*>((p + kWorkspaceAlign - 1) & ~uintptr_t(kWorkspaceAlign - 1));
}

struct ForwardBuffers {
  ffi::AnyBuffer inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0, dropout;
};
struct ForwardResults {
  ffi::Result<ffi::AnyBuffer> outputs, h, c, gates, cells, workspace;
};

struct BackwardBuffers {
  ffi::AnyBuffer inputs, kernel, recurrent_kernel, resets, mask, h0, c0, dropout, outputs, gates,
      cells, d_outputs, d_h, d_c;
};
struct BackwardResults {
  ffi::Result<ffi::AnyBuffer> d_inputs, d_kernel, d_recurrent_kernel, d_bias, d_h0, d_c0,
      workspace;
};

// Validates the arguments shared by both directions; fills *dims.
inline std::string CheckArguments(const ffi::AnyBuffer& inputs, const ffi::AnyBuffer& kernel,
                                  const ffi::AnyBuffer& recurrent_kernel,
                                  const ffi::AnyBuffer* bias, const ffi::AnyBuffer& resets,
                                  const ffi::AnyBuffer& mask, const ffi::AnyBuffer& h0,
                                  const ffi::AnyBuffer& c0, const ffi::AnyBuffer& dropout,
                                  const Flags& f, cpu::Dims* dims) {
  const ffi::DataType dt = inputs.element_type();
  const bool lstm = f.cell == cpu::CellType::kLstm;
  std::string error = CheckDtypes(
      dt, {{&kernel, "kernel", true},
           {&recurrent_kernel, "recurrent_kernel", true},
           {bias, "bias", bias != nullptr},
           {&h0, lstm ? "initial_state[0] (h)" : "initial_state", f.has_state},
           {&c0, "initial_state[1] (c)", f.has_c()},
           {&dropout, "recurrent_dropout_mask", f.has_dropout}});
  if (!error.empty()) return error;
  for (const Named& flag :
       {Named{&resets, "resets", f.has_resets}, Named{&mask, "mask", f.has_mask}})
    if (flag.present && flag.buffer->element_type() != ffi::DataType::PRED)
      return std::string("`") + flag.name + "` must be bool, got " +
             DtypeName(flag.buffer->element_type());
  RecurrenceShapes s;
  s.inputs = ShapeOf(inputs);
  s.kernel = ShapeOf(kernel);
  s.recurrent_kernel = ShapeOf(recurrent_kernel);
  if (bias) s.bias = ShapeOf(*bias);
  s.resets = ShapeOf(resets, f.has_resets);
  s.mask = ShapeOf(mask, f.has_mask);
  s.h0 = ShapeOf(h0, f.has_state);
  s.c0 = ShapeOf(c0, f.has_c());
  s.recurrent_dropout_mask = ShapeOf(dropout, f.has_dropout);
  return check_shapes(s, f.cell, f.time_major, dims);
}

template <typename T, typename P>
const P* OptionalData(const ffi::AnyBuffer& b, bool present) {
  return present ? static_cast<const P*>(b.untyped_data()) : nullptr;
}

template <typename T>
const T* Data(const ffi::AnyBuffer& b) {
  return static_cast<const T*>(b.untyped_data());
}
template <typename T>
T* Data(ffi::Result<ffi::AnyBuffer>& b) {
  return static_cast<T*>(b->untyped_data());
}

// Validates a forward call and fills *args (all but the workspace); "" when valid.
template <typename T>
std::string DecodeForward(const ForwardBuffers& in, ForwardResults& out, const Flags& f,
                          bool training, cpu::ForwardArgs<T>* args) {
  cpu::Dims d;
  std::string error = CheckArguments(in.inputs, in.kernel, in.recurrent_kernel, &in.bias,
                                     in.resets, in.mask, in.h0, in.c0, in.dropout, f, &d);
  if (!error.empty()) return error;
  const ffi::DataType dt = in.inputs.element_type();
  const cpu::CellShape cs = cpu::cell_shape(f.cell);
  const std::vector<int64_t> bh{d.B, d.H}, none{0};
  const std::vector<int64_t> gates = training ? SequenceDims(d, cs.saved * d.H) : none;
  const std::vector<int64_t> cells = training && cs.cell_state ? SequenceDims(d, d.H) : none;
  error = CheckResults(dt, {{{&*out.outputs, "outputs", true}, SequenceDims(d, d.H)},
                            {{&*out.h, "h", true}, bh},
                            {{&*out.c, "c", true}, cs.cell_state ? bh : none},
                            {{&*out.gates, "gates", true}, gates},
                            {{&*out.cells, "cells", true}, cells}});
  if (!error.empty()) return error;
  args->dims = d;
  args->inputs = Data<T>(in.inputs);
  args->kernel = Data<T>(in.kernel);
  args->recurrent_kernel = Data<T>(in.recurrent_kernel);
  args->bias = Data<T>(in.bias);
  args->resets = OptionalData<T, bool>(in.resets, f.has_resets);
  args->mask = OptionalData<T, bool>(in.mask, f.has_mask);
  args->h0 = OptionalData<T, T>(in.h0, f.has_state);
  args->c0 = OptionalData<T, T>(in.c0, f.has_c());
  args->recurrent_dropout_mask = OptionalData<T, T>(in.dropout, f.has_dropout);
  args->outputs = Data<T>(out.outputs);
  args->h_final = Data<T>(out.h);
  args->gates = training ? Data<T>(out.gates) : nullptr;
  if (cs.cell_state) {
    args->c_final = Data<T>(out.c);
    args->cells = training ? Data<T>(out.cells) : nullptr;
  }
  return "";
}

// Validates a backward call and fills *args (all but the workspace); "" when valid.
template <typename T>
std::string DecodeBackward(const BackwardBuffers& in, BackwardResults& out, const Flags& f,
                           cpu::BackwardArgs<T>* args) {
  cpu::Dims d;
  std::string error = CheckArguments(in.inputs, in.kernel, in.recurrent_kernel, nullptr,
                                     in.resets, in.mask, in.h0, in.c0, in.dropout, f, &d);
  if (!error.empty()) return error;
  const ffi::DataType dt = in.inputs.element_type();
  const cpu::CellShape cs = cpu::cell_shape(f.cell);
  error = CheckDtypes(dt, {{&in.outputs, "outputs", true},
                           {&in.gates, "gates", true},
                           {&in.cells, "cell_states", cs.cell_state},
                           {&in.d_outputs, "d_outputs", true},
                           {&in.d_h, "d_h", true},
                           {&in.d_c, "d_c", cs.cell_state}});
  if (!error.empty()) return error;
  BackwardShapes bs;
  bs.outputs = ShapeOf(in.outputs);
  bs.gates = ShapeOf(in.gates);
  bs.cells = ShapeOf(in.cells, cs.cell_state);
  bs.d_outputs = ShapeOf(in.d_outputs);
  bs.d_h = ShapeOf(in.d_h);
  bs.d_c = ShapeOf(in.d_c, cs.cell_state);
  error = check_backward_shapes(bs, d);
  if (!error.empty()) return error;
  const std::vector<int64_t> bh{d.B, d.H}, none{0};
  const int64_t GH = cs.gates * d.H;
  error = CheckResults(dt, {{{&*out.d_inputs, "d_inputs", true}, SequenceDims(d, d.I)},
                            {{&*out.d_kernel, "d_kernel", true}, {d.I, GH}},
                            {{&*out.d_recurrent_kernel, "d_recurrent_kernel", true}, {d.H, GH}},
                            {{&*out.d_bias, "d_bias", true},
                             cs.bias_rows > 1 ? std::vector<int64_t>{2, GH}
                                              : std::vector<int64_t>{GH}},
                            {{&*out.d_h0, "d_h0", true}, bh},
                            {{&*out.d_c0, "d_c0", true}, cs.cell_state ? bh : none}});
  if (!error.empty()) return error;
  args->dims = d;
  args->inputs = Data<T>(in.inputs);
  args->kernel = Data<T>(in.kernel);
  args->recurrent_kernel = Data<T>(in.recurrent_kernel);
  args->resets = OptionalData<T, bool>(in.resets, f.has_resets);
  args->mask = OptionalData<T, bool>(in.mask, f.has_mask);
  args->h0 = OptionalData<T, T>(in.h0, f.has_state);
  args->recurrent_dropout_mask = OptionalData<T, T>(in.dropout, f.has_dropout);
  args->outputs = Data<T>(in.outputs);
  args->gates = Data<T>(in.gates);
  args->d_outputs = Data<T>(in.d_outputs);
  args->d_h_final = Data<T>(in.d_h);
  args->d_inputs = Data<T>(out.d_inputs);
  args->d_kernel = Data<T>(out.d_kernel);
  args->d_recurrent_kernel = Data<T>(out.d_recurrent_kernel);
  args->d_bias = Data<T>(out.d_bias);
  args->d_h0 = Data<T>(out.d_h0);
  if (cs.cell_state) {
    args->c0 = OptionalData<T, T>(in.c0, f.has_c());
    args->cells = Data<T>(in.cells);
    args->d_c_final = Data<T>(in.d_c);
    args->d_c0 = Data<T>(out.d_c0);
  }
  return "";
}

// The forward call's buffers and attributes, bound after the handler's context arguments:
// handler(ctx/attributes bound before, then 9 argument buffers, 6 results, time_major,
// has_resets, has_mask, has_state, has_dropout, training): see MakeForwardCall.
template <typename Binding>
auto BindForward(Binding&& b) {
  return std::forward<Binding>(b)
      .template Arg<ffi::AnyBuffer>()  // inputs
      .template Arg<ffi::AnyBuffer>()  // kernel
      .template Arg<ffi::AnyBuffer>()  // recurrent_kernel
      .template Arg<ffi::AnyBuffer>()  // bias
      .template Arg<ffi::AnyBuffer>()  // resets
      .template Arg<ffi::AnyBuffer>()  // mask
      .template Arg<ffi::AnyBuffer>()  // h0
      .template Arg<ffi::AnyBuffer>()  // c0
      .template Arg<ffi::AnyBuffer>()  // recurrent_dropout_mask
      .template Ret<ffi::AnyBuffer>()  // outputs
      .template Ret<ffi::AnyBuffer>()  // h
      .template Ret<ffi::AnyBuffer>()  // c
      .template Ret<ffi::AnyBuffer>()  // gates
      .template Ret<ffi::AnyBuffer>()  // cells
      .template Ret<ffi::AnyBuffer>()  // workspace
      .template Attr<bool>("time_major")
      .template Attr<bool>("has_resets")
      .template Attr<bool>("has_mask")
      .template Attr<bool>("has_state")
      .template Attr<bool>("has_dropout")
      .template Attr<int32_t>("cell")
      .template Attr<bool>("training");
}

// The backward call's: 14 argument buffers, 7 results, time_major, has_resets, has_mask,
// has_state, has_dropout: see MakeBackwardCall.
template <typename Binding>
auto BindBackward(Binding&& b) {
  return std::forward<Binding>(b)
      .template Arg<ffi::AnyBuffer>()  // inputs
      .template Arg<ffi::AnyBuffer>()  // kernel
      .template Arg<ffi::AnyBuffer>()  // recurrent_kernel
      .template Arg<ffi::AnyBuffer>()  // resets
      .template Arg<ffi::AnyBuffer>()  // mask
      .template Arg<ffi::AnyBuffer>()  // h0
      .template Arg<ffi::AnyBuffer>()  // c0
      .template Arg<ffi::AnyBuffer>()  // recurrent_dropout_mask
      .template Arg<ffi::AnyBuffer>()  // outputs
      .template Arg<ffi::AnyBuffer>()  // gates
      .template Arg<ffi::AnyBuffer>()  // cells
      .template Arg<ffi::AnyBuffer>()  // d_outputs
      .template Arg<ffi::AnyBuffer>()  // d_h
      .template Arg<ffi::AnyBuffer>()  // d_c
      .template Ret<ffi::AnyBuffer>()  // d_inputs
      .template Ret<ffi::AnyBuffer>()  // d_kernel
      .template Ret<ffi::AnyBuffer>()  // d_recurrent_kernel
      .template Ret<ffi::AnyBuffer>()  // d_bias
      .template Ret<ffi::AnyBuffer>()  // d_h0
      .template Ret<ffi::AnyBuffer>()  // d_c0
      .template Ret<ffi::AnyBuffer>()  // workspace
      .template Attr<bool>("time_major")
      .template Attr<bool>("has_resets")
      .template Attr<bool>("has_mask")
      .template Attr<bool>("has_state")
      .template Attr<bool>("has_dropout")
      .template Attr<int32_t>("cell");
}

// A decoded call: the handlers take the bound values as `auto... a` and pass them here.
struct ForwardCall {
  ForwardBuffers in;
  ForwardResults out;
  Flags flags;
  bool training;
};
struct BackwardCall {
  BackwardBuffers in;
  BackwardResults out;
  Flags flags;
};

using R = ffi::Result<ffi::AnyBuffer>;

// The `cell` attribute as a cell type (an unknown value reads as the LSTM, whose checks then
// refuse the shapes of anything else).
inline cpu::CellType CellOf(int32_t cell) {
  return cell == 1 ? cpu::CellType::kGru
         : cell == 2 ? cpu::CellType::kGruResetBefore
                     : cpu::CellType::kLstm;
}

inline ForwardCall MakeForwardCall(ffi::AnyBuffer inputs, ffi::AnyBuffer kernel,
                                   ffi::AnyBuffer recurrent_kernel, ffi::AnyBuffer bias,
                                   ffi::AnyBuffer resets, ffi::AnyBuffer mask, ffi::AnyBuffer h0,
                                   ffi::AnyBuffer c0, ffi::AnyBuffer dropout, R outputs, R h, R c,
                                   R gates, R cells, R workspace, bool time_major,
                                   bool has_resets, bool has_mask, bool has_state,
                                   bool has_dropout, int32_t cell, bool training) {
  return {{inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0, dropout},
          {outputs, h, c, gates, cells, workspace},
          {time_major, has_resets, has_mask, has_state, has_dropout, CellOf(cell)},
          training};
}

inline BackwardCall MakeBackwardCall(ffi::AnyBuffer inputs, ffi::AnyBuffer kernel,
                                     ffi::AnyBuffer recurrent_kernel, ffi::AnyBuffer resets,
                                     ffi::AnyBuffer mask, ffi::AnyBuffer h0, ffi::AnyBuffer c0,
                                     ffi::AnyBuffer dropout, ffi::AnyBuffer outputs,
                                     ffi::AnyBuffer gates, ffi::AnyBuffer cells,
                                     ffi::AnyBuffer d_outputs, ffi::AnyBuffer d_h,
                                     ffi::AnyBuffer d_c, R d_inputs, R d_kernel,
                                     R d_recurrent_kernel, R d_bias, R d_h0, R d_c0, R workspace,
                                     bool time_major, bool has_resets, bool has_mask,
                                     bool has_state, bool has_dropout, int32_t cell) {
  return {{inputs, kernel, recurrent_kernel, resets, mask, h0, c0, dropout, outputs, gates, cells,
           d_outputs, d_h, d_c},
          {d_inputs, d_kernel, d_recurrent_kernel, d_bias, d_h0, d_c0, workspace},
          {time_major, has_resets, has_mask, has_state, has_dropout, CellOf(cell)}};
}

template <typename T>
std::string Decode(ForwardCall& call, cpu::ForwardArgs<T>* args) {
  return DecodeForward(call.in, call.out, call.flags, call.training, args);
}
template <typename T>
std::string Decode(BackwardCall& call, cpu::BackwardArgs<T>* args) {
  return DecodeBackward(call.in, call.out, call.flags, args);
}

// Validates a call (ForwardCall with Args = cpu::ForwardArgs, or BackwardCall with
// cpu::BackwardArgs), then returns launch(args, workspace) with the kernels' storage type T
// (workspace: elements(T{}, dims) elements of T). kHalf: float16 has kernels here.
template <bool kHalf, template <typename> class Args, typename Call, typename Elements,
          typename Launch>
ffi::Error Run(Call& call, Elements&& elements, Launch&& launch) {
  const cpu::CellType cell = call.flags.cell;
  return WithStorageType<kHalf>(cell, call.in.inputs.element_type(), [&](auto tag) -> ffi::Error {
    using T = decltype(tag);
    Args<T> args;
    std::string error = Decode(call, &args);
    if (!error.empty()) return Invalid(cell, error);
    T* workspace = Workspace<T>(call.out.workspace, elements(tag, args.dims), &error);
    if (!workspace) return Invalid(cell, error);
    return launch(args, workspace);
  });
}

// Bytes of the workspace result for the kernel storage type named `dtype` ("float32",
// "float64", "bfloat16"; "float16" when kHalf): elements(T{}) elements of T plus the alignment
// slack; -1 for a dtype without kernels here.
template <bool kHalf, typename Elements>
int64_t WorkspaceBytes(const char* dtype, Elements&& elements) {
  auto bytes = [&](auto tag) {
    return elements(tag) * static_cast<int64_t>(sizeof(tag)) + kWorkspaceAlign;
  };
  const std::string name(dtype);
  if (name == "float32") return bytes(float{});
  if (name == "float64") return bytes(double{});
  if (name == "bfloat16") return bytes(cpu::bf16{});
  if constexpr (kHalf) {
    if (name == "float16") return bytes(cpu::f16{});
  }
  return -1;
}

}  // namespace jaxffi
}  // namespace resetlstm
