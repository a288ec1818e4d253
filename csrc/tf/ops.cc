// Registration of the ResetLSTM, ResetGRU and their gradient ops, with complete shape functions.
// Optional arguments (resets, mask, initial state) are passed as placeholders and switched on by
// the use_* attrs, so every input has a fixed meaning and static shapes propagate.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

#include "../kernels/recurrence_shapes.h"

namespace resetlstm {
namespace {

using tensorflow::Status;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

Shape ToShape(InferenceContext* c, int input, bool present = true) {
  if (!present) return Shape::absent();
  Shape s;
  const ShapeHandle h = c->input(input);
  if (!c->RankKnown(h)) return s;
  s.rank = c->Rank(h);
  for (int i = 0; i < s.rank; ++i) {
    const DimensionHandle d = c->Dim(h, i);
    s.dims.push_back(c->ValueKnown(d) ? c->Value(d) : -1);
  }
  return s;
}

DimensionHandle Dim(InferenceContext* c, int64_t value) {
  return value >= 0 ? c->MakeDim(value) : c->UnknownDim();
}

// Where an op's arguments are (-1: it has none): the LSTM's ops take c0 (and the gradient
// cells and d_c), the GRU's do not.
struct Inputs {
  int bias, resets, mask, h0, c0, dropout;
};
constexpr Inputs kLstmForward{3, 4, 5, 6, 7, 8}, kLstmGrad{-1, 3, 4, 5, 6, 7};
constexpr Inputs kGruForward{3, 4, 5, 6, -1, 7}, kGruGrad{-1, 3, 4, 5, -1, 6};

Status CellOf(InferenceContext* c, bool gru, cpu::CellType* cell) {
  *cell = cpu::CellType::kLstm;
  if (!gru) return Status();
  bool reset_after;
  TF_RETURN_IF_ERROR(c->GetAttr("reset_after", &reset_after));
  *cell = reset_after ? cpu::CellType::kGru : cpu::CellType::kGruResetBefore;
  return Status();
}

// Validates the arguments shared by an op and its gradient (inputs, kernel, recurrent_kernel at
// 0..2, the rest where `in` says).
Status CheckShapes(InferenceContext* c, cpu::CellType cell, const Inputs& in, cpu::Dims* dims) {
  bool time_major, use_resets, use_mask, use_initial_state, use_recurrent_dropout;
  TF_RETURN_IF_ERROR(c->GetAttr("time_major", &time_major));
  TF_RETURN_IF_ERROR(c->GetAttr("use_recurrent_dropout", &use_recurrent_dropout));
  TF_RETURN_IF_ERROR(c->GetAttr("use_resets", &use_resets));
  TF_RETURN_IF_ERROR(c->GetAttr("use_mask", &use_mask));
  TF_RETURN_IF_ERROR(c->GetAttr("use_initial_state", &use_initial_state));
  RecurrenceShapes s;
  s.inputs = ToShape(c, 0);
  s.kernel = ToShape(c, 1);
  s.recurrent_kernel = ToShape(c, 2);
  if (in.bias >= 0) s.bias = ToShape(c, in.bias);
  s.resets = ToShape(c, in.resets, use_resets);
  s.mask = ToShape(c, in.mask, use_mask);
  s.h0 = ToShape(c, in.h0, use_initial_state);
  if (in.c0 >= 0) s.c0 = ToShape(c, in.c0, use_initial_state);
  s.recurrent_dropout_mask = ToShape(c, in.dropout, use_recurrent_dropout);
  const std::string error = check_shapes(s, cell, time_major, dims);
  if (!error.empty()) return tensorflow::errors::InvalidArgument(op_name(cell), ": ", error);
  return Status();
}

ShapeHandle SequenceShape(InferenceContext* c, const cpu::Dims& d, int64_t width) {
  return d.time_major ? c->MakeShape({Dim(c, d.T), Dim(c, d.B), Dim(c, width)})
                      : c->MakeShape({Dim(c, d.B), Dim(c, d.T), Dim(c, width)});
}

// outputs, h[, c], then the saved activations (their shapes depend on whether they are kept).
template <bool kGru>
Status ForwardShape(InferenceContext* c) {
  cpu::CellType cell;
  TF_RETURN_IF_ERROR(CellOf(c, kGru, &cell));
  cpu::Dims d;
  TF_RETURN_IF_ERROR(CheckShapes(c, cell, kGru ? kGruForward : kLstmForward, &d));
  int k = 0;
  c->set_output(k++, SequenceShape(c, d, d.H));
  c->set_output(k++, c->MakeShape({Dim(c, d.B), Dim(c, d.H)}));
  if (!kGru) c->set_output(k++, c->MakeShape({Dim(c, d.B), Dim(c, d.H)}));
  // Saved activations: [B,T,S*H] (and [B,T,H] cell states) when kept for backward, else empty.
  c->set_output(k++, c->UnknownShape());
  if (!kGru) c->set_output(k++, c->UnknownShape());
  return Status();
}

template <bool kGru>
Status GradShape(InferenceContext* c) {
  cpu::CellType cell;
  TF_RETURN_IF_ERROR(CellOf(c, kGru, &cell));
  cpu::Dims d;
  TF_RETURN_IF_ERROR(CheckShapes(c, cell, kGru ? kGruGrad : kLstmGrad, &d));
  const cpu::CellShape cs = cpu::cell_shape(cell);
  const DimensionHandle gh = Dim(c, d.H >= 0 ? cs.gates * d.H : -1);
  c->set_output(0, c->input(0));
  c->set_output(1, c->input(1));
  c->set_output(2, c->input(2));
  c->set_output(3, cs.bias_rows > 1 ? c->MakeShape({c->MakeDim(2), gh}) : c->MakeShape({gh}));
  c->set_output(4, c->MakeShape({Dim(c, d.B), Dim(c, d.H)}));
  if (!kGru) c->set_output(5, c->MakeShape({Dim(c, d.B), Dim(c, d.H)}));
  return Status();
}

}  // namespace
}  // namespace resetlstm

REGISTER_OP("ResetLSTM")
    .Input("inputs: T")            // [B,T,I] ([T,B,I] if time_major)
    .Input("kernel: T")            // [I,4H]
    .Input("recurrent_kernel: T")  // [H,4H]
    .Input("bias: T")              // [4H]
    .Input("resets: bool")         // [B,T] if use_resets, else any placeholder
    .Input("mask: bool")           // [B,T] if use_mask
    .Input("h0: T")                // [B,H] if use_initial_state
    .Input("c0: T")                // [B,H] if use_initial_state
    .Input("recurrent_dropout_mask: T")  // [B,H] if use_recurrent_dropout
    .Output("outputs: T")          // [B,T,H]
    .Output("h: T")                // [B,H]
    .Output("c: T")                // [B,H]
    .Output("gates: T")            // [B,T,4H] saved for backward (empty when not training)
    .Output("cells: T")            // [B,T,H]  saved for backward (empty when not training)
    .Attr("T: {half, float, double, bfloat16}")
    .Attr("time_major: bool = false")
    .Attr("use_resets: bool = false")
    .Attr("use_mask: bool = false")
    .Attr("use_initial_state: bool = false")
    .Attr("use_recurrent_dropout: bool = false")
    .Attr("training: bool = true")
    .SetShapeFn(resetlstm::ForwardShape<false>)
    .Doc(R"doc(
LSTM over a whole sequence whose state can be reset per batch row before any step.
resets[b, t] zeroes row b's h and c before step t; mask follows Keras masking; with
use_recurrent_dropout every step reads recurrent_dropout_mask * h in the recurrent matmul. With training,
the post-activation gates and cell states are kept for ResetLSTMGrad (skipped when no consumer
needs them).
)doc");

REGISTER_OP("ResetLSTMGrad")
    .Input("inputs: T")
    .Input("kernel: T")
    .Input("recurrent_kernel: T")
    .Input("resets: bool")
    .Input("mask: bool")
    .Input("h0: T")
    .Input("c0: T")
    .Input("recurrent_dropout_mask: T")
    .Input("outputs: T")
    .Input("gates: T")
    .Input("cells: T")
    .Input("d_outputs: T")
    .Input("d_h: T")
    .Input("d_c: T")
    .Output("d_inputs: T")
    .Output("d_kernel: T")
    .Output("d_recurrent_kernel: T")
    .Output("d_bias: T")
    .Output("d_h0: T")
    .Output("d_c0: T")
    .Attr("T: {half, float, double, bfloat16}")
    .Attr("time_major: bool = false")
    .Attr("use_resets: bool = false")
    .Attr("use_mask: bool = false")
    .Attr("use_initial_state: bool = false")
    .Attr("use_recurrent_dropout: bool = false")
    .SetShapeFn(resetlstm::GradShape<false>)
    .Doc("Backpropagation through time for ResetLSTM; no gradient crosses a reset.");

REGISTER_OP("ResetGRU")
    .Input("inputs: T")            // [B,T,I] ([T,B,I] if time_major)
    .Input("kernel: T")            // [I,3H]
    .Input("recurrent_kernel: T")  // [H,3H]
    .Input("bias: T")              // [2,3H] with reset_after, else [3H]
    .Input("resets: bool")         // [B,T] if use_resets, else any placeholder
    .Input("mask: bool")           // [B,T] if use_mask
    .Input("h0: T")                // [B,H] if use_initial_state
    .Input("recurrent_dropout_mask: T")  // [B,H] if use_recurrent_dropout
    .Output("outputs: T")          // [B,T,H]
    .Output("h: T")                // [B,H]
    .Output("gates: T")            // [B,T,S*H] saved for backward (empty when not training)
    .Attr("T: {half, float, double, bfloat16}")
    .Attr("reset_after: bool = true")
    .Attr("time_major: bool = false")
    .Attr("use_resets: bool = false")
    .Attr("use_mask: bool = false")
    .Attr("use_initial_state: bool = false")
    .Attr("use_recurrent_dropout: bool = false")
    .Attr("training: bool = true")
    .SetShapeFn(resetlstm::ForwardShape<true>)
    .Doc(R"doc(
GRU over a whole sequence whose state can be reset per batch row before any step, in either of
Keras' forms (reset_after: the reset gate multiplies h U_h + b_h, cuDNN's and torch.nn.GRU's
form; else it multiplies h before U_h). resets[b, t] zeroes row b's h before step t; mask
follows Keras masking; with use_recurrent_dropout the recurrent matmuls read
recurrent_dropout_mask * h. With training the activations backward needs are kept for
ResetGRUGrad (skipped when no consumer needs them).
)doc");

REGISTER_OP("ResetGRUGrad")
    .Input("inputs: T")
    .Input("kernel: T")
    .Input("recurrent_kernel: T")
    .Input("resets: bool")
    .Input("mask: bool")
    .Input("h0: T")
    .Input("recurrent_dropout_mask: T")
    .Input("outputs: T")
    .Input("gates: T")
    .Input("d_outputs: T")
    .Input("d_h: T")
    .Output("d_inputs: T")
    .Output("d_kernel: T")
    .Output("d_recurrent_kernel: T")
    .Output("d_bias: T")
    .Output("d_h0: T")
    .Attr("T: {half, float, double, bfloat16}")
    .Attr("reset_after: bool = true")
    .Attr("time_major: bool = false")
    .Attr("use_resets: bool = false")
    .Attr("use_mask: bool = false")
    .Attr("use_initial_state: bool = false")
    .Attr("use_recurrent_dropout: bool = false")
    .SetShapeFn(resetlstm::GradShape<true>)
    .Doc("Backpropagation through time for ResetGRU; no gradient crosses a reset.");
