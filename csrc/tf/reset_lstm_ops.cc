// Registration of the ResetLSTM and ResetLSTMGrad ops with complete shape functions.
// Optional arguments (resets, mask, initial state) are passed as placeholders and switched on by
// the use_* attrs, so every input has a fixed meaning and static shapes propagate.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

#include "../kernels/lstm_shapes.h"

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

// Validates the shared arguments; inputs at indices 0..3 are inputs, kernel, recurrent_kernel,
// bias (bias_index < 0 when the op has no bias input) followed by resets, mask, h0, c0 and
// recurrent_dropout_mask.
Status CheckShapes(InferenceContext* c, int bias_index, int first_optional, cpu::Dims* dims) {
  bool time_major, use_resets, use_mask, use_initial_state, use_recurrent_dropout;
  TF_RETURN_IF_ERROR(c->GetAttr("time_major", &time_major));
  TF_RETURN_IF_ERROR(c->GetAttr("use_recurrent_dropout", &use_recurrent_dropout));
  TF_RETURN_IF_ERROR(c->GetAttr("use_resets", &use_resets));
  TF_RETURN_IF_ERROR(c->GetAttr("use_mask", &use_mask));
  TF_RETURN_IF_ERROR(c->GetAttr("use_initial_state", &use_initial_state));
  LstmShapes s;
  s.inputs = ToShape(c, 0);
  s.kernel = ToShape(c, 1);
  s.recurrent_kernel = ToShape(c, 2);
  if (bias_index >= 0) s.bias = ToShape(c, bias_index);
  s.resets = ToShape(c, first_optional, use_resets);
  s.mask = ToShape(c, first_optional + 1, use_mask);
  s.h0 = ToShape(c, first_optional + 2, use_initial_state);
  s.c0 = ToShape(c, first_optional + 3, use_initial_state);
  s.recurrent_dropout_mask = ToShape(c, first_optional + 4, use_recurrent_dropout);
  const std::string error = check_lstm_shapes(s, time_major, dims);
  if (!error.empty()) return tensorflow::errors::InvalidArgument("reset_lstm: ", error);
  return Status();
}

ShapeHandle SequenceShape(InferenceContext* c, const cpu::Dims& d, int64_t width) {
  return d.time_major ? c->MakeShape({Dim(c, d.T), Dim(c, d.B), Dim(c, width)})
                      : c->MakeShape({Dim(c, d.B), Dim(c, d.T), Dim(c, width)});
}

Status ForwardShape(InferenceContext* c) {
  cpu::Dims d;
  TF_RETURN_IF_ERROR(CheckShapes(c, /*bias_index=*/3, /*first_optional=*/4, &d));
  c->set_output(0, SequenceShape(c, d, d.H));
  c->set_output(1, c->MakeShape({Dim(c, d.B), Dim(c, d.H)}));
  c->set_output(2, c->MakeShape({Dim(c, d.B), Dim(c, d.H)}));
  // Saved activations: [B,T,4H] and [B,T,H] when kept for backward, empty otherwise.
  c->set_output(3, c->UnknownShape());
  c->set_output(4, c->UnknownShape());
  return Status();
}

Status GradShape(InferenceContext* c) {
  cpu::Dims d;
  TF_RETURN_IF_ERROR(CheckShapes(c, /*bias_index=*/-1, /*first_optional=*/3, &d));
  c->set_output(0, c->input(0));
  c->set_output(1, c->input(1));
  c->set_output(2, c->input(2));
  c->set_output(3, c->MakeShape({Dim(c, d.H >= 0 ? 4 * d.H : -1)}));
  c->set_output(4, c->MakeShape({Dim(c, d.B), Dim(c, d.H)}));
  c->set_output(5, c->MakeShape({Dim(c, d.B), Dim(c, d.H)}));
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
    .SetShapeFn(resetlstm::ForwardShape)
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
    .SetShapeFn(resetlstm::GradShape)
    .Doc("Backpropagation through time for ResetLSTM; no gradient crosses a reset.");
