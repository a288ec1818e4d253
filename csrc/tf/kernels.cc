// TF OpKernels for ResetLSTM / ResetLSTMGrad and ResetGRU / ResetGRUGrad: validate, allocate,
// call the framework-free kernels (the engine runs the cell of the op). One OpKernel template
// serves every device through the functors of functor.h (CPU here; GPU in kernels_gpu.cc).
#include "functor.h"

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"

#include "../kernels/recurrence_shapes.h"

namespace resetlstm {

using tensorflow::DataTypeToEnum;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;

namespace {

// A tensor's buffer as the kernels' element type (tensorflow::bfloat16 -> cpu::bf16,
// Eigen::half -> cpu::f16: the same 16 bits).
template <typename T>
T* Data(Tensor* t) {
  return reinterpret_cast<T*>(const_cast<char*>(t->tensor_data().data()));
}
template <typename T>
const T* Data(const Tensor& t) {
  return reinterpret_cast<const T*>(t.tensor_data().data());
}

// The kernels' element type for a TF dtype.
template <typename TfT>
struct KernelType {
  using type = TfT;
};
template <>
struct KernelType<tensorflow::bfloat16> {
  using type = cpu::bf16;
};
template <>
struct KernelType<Eigen::half> {
  using type = cpu::f16;
};
static_assert(sizeof(tensorflow::bfloat16) == sizeof(cpu::bf16), "bfloat16 is 16 bits");
static_assert(sizeof(Eigen::half) == sizeof(cpu::f16), "half is 16 bits");

Shape ToShape(const Tensor& t, bool present = true) {
  if (!present) return Shape::absent();
  Shape s;
  s.rank = t.dims();
  for (int i = 0; i < s.rank; ++i) s.dims.push_back(t.dim_size(i));
  return s;
}

// Where an op's tensors are (-1: it has none): the LSTM's ops have c0, c and the cell states,
// the GRU's do not. Forward: inputs; then outputs, h, c, gates, cells. Gradient: inputs, then
// the forward's results and the upstream gradients; then d_inputs ... d_c0.
struct Layout {
  int bias, resets, mask, h0, c0, dropout;                  // inputs (inputs, kernels at 0..2)
  int outputs, gates, cells, d_outputs, d_h, d_c;           // gradient: forward results, upstream
  int out_outputs, out_h, out_c, out_gates, out_cells;      // forward: results
  int out_dx, out_dk, out_drk, out_db, out_dh0, out_dc0;    // gradient: results
};
constexpr Layout kLstmForward{3, 4, 5, 6, 7, 8, -1, -1, -1, -1, -1, -1,
                              0, 1, 2, 3, 4, -1, -1, -1, -1, -1, -1};
constexpr Layout kLstmGrad{-1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                           -1, -1, -1, -1, -1, 0, 1, 2, 3, 4, 5};
constexpr Layout kGruForward{3, 4, 5, 6, -1, 7, -1, -1, -1, -1, -1, -1,
                             0, 1, -1, 2, -1, -1, -1, -1, -1, -1, -1};
constexpr Layout kGruGrad{-1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, -1,
                          -1, -1, -1, -1, -1, 0, 1, 2, 3, 4, -1};

// The attributes every op has, the cell (from the op, and reset_after for the GRU's), and the
// checks shared by an op and its gradient.
struct OpAttrs {
  bool time_major = false, use_resets = false, use_mask = false, use_initial_state = false,
       use_recurrent_dropout = false;
  cpu::CellType cell = cpu::CellType::kLstm;

  OpAttrs(OpKernelConstruction* ctx, bool gru) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("time_major", &time_major));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_resets", &use_resets));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_mask", &use_mask));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_initial_state", &use_initial_state));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_recurrent_dropout", &use_recurrent_dropout));
    if (gru) {
      bool reset_after = true;
      OP_REQUIRES_OK(ctx, ctx->GetAttr("reset_after", &reset_after));
      cell = reset_after ? cpu::CellType::kGru : cpu::CellType::kGruResetBefore;
    }
  }

  // Validates the arguments shared by both ops: inputs, kernel, recurrent_kernel at 0..2, the
  // others where `in` says.
  bool Check(OpKernelContext* ctx, const Layout& in, cpu::Dims* dims) const {
    RecurrenceShapes s;
    s.inputs = ToShape(ctx->input(0));
    s.kernel = ToShape(ctx->input(1));
    s.recurrent_kernel = ToShape(ctx->input(2));
    if (in.bias >= 0) s.bias = ToShape(ctx->input(in.bias));
    s.resets = ToShape(ctx->input(in.resets), use_resets);
    s.mask = ToShape(ctx->input(in.mask), use_mask);
    s.h0 = ToShape(ctx->input(in.h0), use_initial_state);
    if (in.c0 >= 0) s.c0 = ToShape(ctx->input(in.c0), use_initial_state);
    s.recurrent_dropout_mask = ToShape(ctx->input(in.dropout), use_recurrent_dropout);
    const std::string error = check_shapes(s, cell, time_major, dims);
    if (!error.empty()) {
      ctx->CtxFailure(__FILE__, __LINE__,
                      tensorflow::errors::InvalidArgument(op_name(cell), ": ", error));
      return false;
    }
    return true;
  }

  template <typename T>
  const T* Optional(OpKernelContext* ctx, int index, bool used) const {
    return used && index >= 0 ? Data<T>(ctx->input(index)) : nullptr;
  }
};

TensorShape SequenceShape(const cpu::Dims& d, int64_t width) {
  return d.time_major ? TensorShape({d.T, d.B, width}) : TensorShape({d.B, d.T, width});
}

template <typename T>
T* Output(Tensor* t) {
  return t ? Data<T>(t) : nullptr;
}

}  // namespace

// ResetLSTM and ResetGRU (kGru): validate, allocate, call the framework-free kernels.
template <typename Device, typename TfT, bool kGru>
class ForwardOp : public OpKernel {
  using T = typename KernelType<TfT>::type;
  static constexpr const Layout& L = kGru ? kGruForward : kLstmForward;

 public:
  explicit ForwardOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx, kGru) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("training", &training_));
  }

  void Compute(OpKernelContext* ctx) override {
    cpu::Dims d;
    if (!attrs_.Check(ctx, L, &d)) return;
    const cpu::CellShape cs = cpu::cell_shape(attrs_.cell);
    // Keep activations only when asked to and when something consumes them (in a graph
    // without a gradient nothing does).
    const bool training =
        training_ && (ctx->output_required(L.out_gates) ||
                      (L.out_cells >= 0 && ctx->output_required(L.out_cells)));

    Tensor *outputs, *h, *c = nullptr, *gates, *cells = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(L.out_outputs, SequenceShape(d, d.H), &outputs));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(L.out_h, TensorShape({d.B, d.H}), &h));
    if (L.out_c >= 0)
      OP_REQUIRES_OK(ctx, ctx->allocate_output(L.out_c, TensorShape({d.B, d.H}), &c));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            L.out_gates,
                            training ? SequenceShape(d, cs.saved * d.H) : TensorShape({0}),
                            &gates));
    if (L.out_cells >= 0)
      OP_REQUIRES_OK(ctx, ctx->allocate_output(
                              L.out_cells, training ? SequenceShape(d, d.H) : TensorShape({0}),
                              &cells));

    cpu::ForwardArgs<T> a;
    a.dims = d;
    a.inputs = Data<T>(ctx->input(0));
    a.kernel = Data<T>(ctx->input(1));
    a.recurrent_kernel = Data<T>(ctx->input(2));
    a.bias = Data<T>(ctx->input(L.bias));
    a.resets = attrs_.Optional<bool>(ctx, L.resets, attrs_.use_resets);
    a.mask = attrs_.Optional<bool>(ctx, L.mask, attrs_.use_mask);
    a.h0 = attrs_.Optional<T>(ctx, L.h0, attrs_.use_initial_state);
    a.c0 = attrs_.Optional<T>(ctx, L.c0, attrs_.use_initial_state);
    a.recurrent_dropout_mask = attrs_.Optional<T>(ctx, L.dropout, attrs_.use_recurrent_dropout);
    a.outputs = Data<T>(outputs);
    a.h_final = Data<T>(h);
    a.c_final = Output<T>(c);
    a.gates = training ? Data<T>(gates) : nullptr;
    a.cells = training ? Output<T>(cells) : nullptr;

    Tensor workspace;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(
                            DataTypeToEnum<TfT>::value,
                            TensorShape({ForwardFunctor<Device, T>::WorkspaceSize(d, training)}),
                            &workspace));
    ForwardFunctor<Device, T>()(ctx, a, Data<T>(&workspace));
  }

 private:
  OpAttrs attrs_;
  bool training_ = true;
};

// ResetLSTMGrad and ResetGRUGrad.
template <typename Device, typename TfT, bool kGru>
class GradOp : public OpKernel {
  using T = typename KernelType<TfT>::type;
  static constexpr const Layout& L = kGru ? kGruGrad : kLstmGrad;

 public:
  explicit GradOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx, kGru) {}

  void Compute(OpKernelContext* ctx) override {
    cpu::Dims d;
    if (!attrs_.Check(ctx, L, &d)) return;
    const cpu::CellShape cs = cpu::cell_shape(attrs_.cell);
    auto shape = [&](int index) { return index >= 0 ? ToShape(ctx->input(index)) : Shape::absent(); };
    BackwardShapes bs;
    bs.outputs = shape(L.outputs);
    bs.gates = shape(L.gates);
    bs.cells = shape(L.cells);
    bs.d_outputs = shape(L.d_outputs);
    bs.d_h = shape(L.d_h);
    bs.d_c = shape(L.d_c);
    const std::string error = check_backward_shapes(bs, d);
    OP_REQUIRES(ctx, error.empty(),
                tensorflow::errors::InvalidArgument(op_name(attrs_.cell), " gradient: ", error));
    const TensorShape bh({d.B, d.H});
    const int64_t GH = cs.gates * d.H;

    Tensor *d_inputs, *d_kernel, *d_rkernel, *d_bias, *d_h0, *d_c0 = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(L.out_dx, ctx->input(0).shape(), &d_inputs));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(L.out_dk, ctx->input(1).shape(), &d_kernel));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(L.out_drk, ctx->input(2).shape(), &d_rkernel));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            L.out_db, cs.bias_rows > 1 ? TensorShape({2, GH}) : TensorShape({GH}),
                            &d_bias));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(L.out_dh0, bh, &d_h0));
    if (L.out_dc0 >= 0) OP_REQUIRES_OK(ctx, ctx->allocate_output(L.out_dc0, bh, &d_c0));

    cpu::BackwardArgs<T> a;
    a.dims = d;
    a.inputs = Data<T>(ctx->input(0));
    a.kernel = Data<T>(ctx->input(1));
    a.recurrent_kernel = Data<T>(ctx->input(2));
    a.resets = attrs_.Optional<bool>(ctx, L.resets, attrs_.use_resets);
    a.mask = attrs_.Optional<bool>(ctx, L.mask, attrs_.use_mask);
    a.h0 = attrs_.Optional<T>(ctx, L.h0, attrs_.use_initial_state);
    a.c0 = attrs_.Optional<T>(ctx, L.c0, attrs_.use_initial_state);
    a.recurrent_dropout_mask = attrs_.Optional<T>(ctx, L.dropout, attrs_.use_recurrent_dropout);
    a.outputs = Data<T>(ctx->input(L.outputs));
    a.gates = Data<T>(ctx->input(L.gates));
    a.cells = attrs_.Optional<T>(ctx, L.cells, true);
    a.d_outputs = Data<T>(ctx->input(L.d_outputs));
    a.d_h_final = Data<T>(ctx->input(L.d_h));
    a.d_c_final = attrs_.Optional<T>(ctx, L.d_c, true);
    a.d_inputs = Data<T>(d_inputs);
    a.d_kernel = Data<T>(d_kernel);
    a.d_recurrent_kernel = Data<T>(d_rkernel);
    a.d_bias = Data<T>(d_bias);
    a.d_h0 = Data<T>(d_h0);
    a.d_c0 = Output<T>(d_c0);

    Tensor workspace;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(DataTypeToEnum<TfT>::value,
                                           TensorShape({BackwardFunctor<Device, T>::WorkspaceSize(
                                               d, attrs_.use_mask)}),
                                           &workspace));
    BackwardFunctor<Device, T>()(ctx, a, Data<T>(&workspace));
  }

 private:
  OpAttrs attrs_;
};

#define RLSTM_REGISTER(DEVICE_TYPE, DEVICE, T)                                                  \
  REGISTER_KERNEL_BUILDER(Name("ResetLSTM").Device(DEVICE_TYPE).TypeConstraint<T>("T"),       \
                          ForwardOp<DEVICE, T, false>);                                       \
  REGISTER_KERNEL_BUILDER(Name("ResetLSTMGrad").Device(DEVICE_TYPE).TypeConstraint<T>("T"),   \
                          GradOp<DEVICE, T, false>);                                          \
  REGISTER_KERNEL_BUILDER(Name("ResetGRU").Device(DEVICE_TYPE).TypeConstraint<T>("T"),        \
                          ForwardOp<DEVICE, T, true>);                                        \
  REGISTER_KERNEL_BUILDER(Name("ResetGRUGrad").Device(DEVICE_TYPE).TypeConstraint<T>("T"),    \
                          GradOp<DEVICE, T, true>);

RLSTM_REGISTER(tensorflow::DEVICE_CPU, CPUDevice, float)
RLSTM_REGISTER(tensorflow::DEVICE_CPU, CPUDevice, double)
RLSTM_REGISTER(tensorflow::DEVICE_CPU, CPUDevice, tensorflow::bfloat16)

#if GOOGLE_CUDA
// All inputs, the bool resets/mask included, live in device memory. float16 runs only here (the
// CPU kernels have no float16; ops.py widens it to float32 off the GPU); bfloat16 needs compute
// capability 8.0+ (the kernel reports an error on older GPUs; ops.py widens there too).
RLSTM_REGISTER(tensorflow::DEVICE_GPU, GPUDevice, float)
RLSTM_REGISTER(tensorflow::DEVICE_GPU, GPUDevice, double)
RLSTM_REGISTER(tensorflow::DEVICE_GPU, GPUDevice, Eigen::half)
RLSTM_REGISTER(tensorflow::DEVICE_GPU, GPUDevice, tensorflow::bfloat16)
#endif

#undef RLSTM_REGISTER

}  // namespace resetlstm
