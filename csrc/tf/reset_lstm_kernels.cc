// TF OpKernels for ResetLSTM / ResetLSTMGrad: validate, allocate, call the framework-free
// kernels. One OpKernel template serves every device through the functors of
// reset_lstm_functor.h (CPU here; GPU in reset_lstm_kernels_gpu.cc).
#include "reset_lstm_functor.h"

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"

#include "../kernels/lstm_shapes.h"

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

struct OptionalFlags {
  bool time_major = false, use_resets = false, use_mask = false, use_initial_state = false,
       use_recurrent_dropout = false;

  explicit OptionalFlags(OpKernelConstruction* ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("time_major", &time_major));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_resets", &use_resets));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_mask", &use_mask));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_initial_state", &use_initial_state));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_recurrent_dropout", &use_recurrent_dropout));
  }

  // Validates the inputs shared by both ops: inputs, kernel, recurrent_kernel at 0..2, the
  // optional resets, mask, h0, c0, recurrent_dropout_mask from `first_optional` on, bias (or
  // null).
  bool Check(OpKernelContext* ctx, const Tensor* bias, int first_optional, cpu::Dims* dims) const {
    LstmShapes s;
    s.inputs = ToShape(ctx->input(0));
    s.kernel = ToShape(ctx->input(1));
    s.recurrent_kernel = ToShape(ctx->input(2));
    if (bias) s.bias = ToShape(*bias);
    s.resets = ToShape(ctx->input(first_optional), use_resets);
    s.mask = ToShape(ctx->input(first_optional + 1), use_mask);
    s.h0 = ToShape(ctx->input(first_optional + 2), use_initial_state);
    s.c0 = ToShape(ctx->input(first_optional + 3), use_initial_state);
    s.recurrent_dropout_mask = ToShape(ctx->input(first_optional + 4), use_recurrent_dropout);
    const std::string error = check_lstm_shapes(s, time_major, dims);
    if (!error.empty()) {
      ctx->CtxFailure(__FILE__, __LINE__, tensorflow::errors::InvalidArgument("reset_lstm: ", error));
      return false;
    }
    return true;
  }

  template <typename T>
  const T* Optional(OpKernelContext* ctx, int index, bool used) const {
    return used ? Data<T>(ctx->input(index)) : nullptr;
  }
};

TensorShape SequenceShape(const cpu::Dims& d, int64_t width) {
  return d.time_major ? TensorShape({d.T, d.B, width}) : TensorShape({d.B, d.T, width});
}


}  // namespace

template <typename Device, typename TfT>
class ResetLSTMOp : public OpKernel {
  using T = typename KernelType<TfT>::type;

 public:
  explicit ResetLSTMOp(OpKernelConstruction* ctx) : OpKernel(ctx), flags_(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("training", &training_));
  }

  void Compute(OpKernelContext* ctx) override {
    cpu::Dims d;
    if (!flags_.Check(ctx, &ctx->input(3), /*first_optional=*/4, &d)) return;
    // Keep activations only when asked to and when something consumes them (in a graph
    // without a gradient nothing does).
    const bool training = training_ && (ctx->output_required(3) || ctx->output_required(4));

    Tensor *outputs, *h, *c, *gates, *cells;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, SequenceShape(d, d.H), &outputs));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({d.B, d.H}), &h));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({d.B, d.H}), &c));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            3, training ? SequenceShape(d, 4 * d.H) : TensorShape({0}), &gates));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            4, training ? SequenceShape(d, d.H) : TensorShape({0}), &cells));

    cpu::ForwardArgs<T> a;
    a.dims = d;
    a.inputs = Data<T>(ctx->input(0));
    a.kernel = Data<T>(ctx->input(1));
    a.recurrent_kernel = Data<T>(ctx->input(2));
    a.bias = Data<T>(ctx->input(3));
    a.resets = flags_.Optional<bool>(ctx, 4, flags_.use_resets);
    a.mask = flags_.Optional<bool>(ctx, 5, flags_.use_mask);
    a.h0 = flags_.Optional<T>(ctx, 6, flags_.use_initial_state);
    a.c0 = flags_.Optional<T>(ctx, 7, flags_.use_initial_state);
    a.recurrent_dropout_mask = flags_.Optional<T>(ctx, 8, flags_.use_recurrent_dropout);
    a.outputs = Data<T>(outputs);
    a.h_final = Data<T>(h);
    a.c_final = Data<T>(c);
    a.gates = training ? Data<T>(gates) : nullptr;
    a.cells = training ? Data<T>(cells) : nullptr;

    Tensor workspace;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(
                            DataTypeToEnum<TfT>::value,
                            TensorShape({ForwardFunctor<Device, T>::WorkspaceSize(d, training)}),
                            &workspace));
    ForwardFunctor<Device, T>()(ctx, a, Data<T>(&workspace));
  }

 private:
  OptionalFlags flags_;
  bool training_ = true;
};

template <typename Device, typename TfT>
class ResetLSTMGradOp : public OpKernel {
  using T = typename KernelType<TfT>::type;

 public:
  explicit ResetLSTMGradOp(OpKernelConstruction* ctx) : OpKernel(ctx), flags_(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    cpu::Dims d;
    if (!flags_.Check(ctx, /*bias=*/nullptr, /*first_optional=*/3, &d)) return;
    const std::string error = check_backward_shapes(
        {ToShape(ctx->input(8)), ToShape(ctx->input(9)), ToShape(ctx->input(10)),
         ToShape(ctx->input(11)), ToShape(ctx->input(12)), ToShape(ctx->input(13))},
        d);
    OP_REQUIRES(ctx, error.empty(),
                tensorflow::errors::InvalidArgument("reset_lstm gradient: ", error));
    const TensorShape bh({d.B, d.H});

    Tensor *d_inputs, *d_kernel, *d_rkernel, *d_bias, *d_h0, *d_c0;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &d_inputs));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(1).shape(), &d_kernel));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(2).shape(), &d_rkernel));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({4 * d.H}), &d_bias));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, bh, &d_h0));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, bh, &d_c0));

    cpu::BackwardArgs<T> a;
    a.dims = d;
    a.inputs = Data<T>(ctx->input(0));
    a.kernel = Data<T>(ctx->input(1));
    a.recurrent_kernel = Data<T>(ctx->input(2));
    a.resets = flags_.Optional<bool>(ctx, 3, flags_.use_resets);
    a.mask = flags_.Optional<bool>(ctx, 4, flags_.use_mask);
    a.h0 = flags_.Optional<T>(ctx, 5, flags_.use_initial_state);
    a.c0 = flags_.Optional<T>(ctx, 6, flags_.use_initial_state);
    a.recurrent_dropout_mask = flags_.Optional<T>(ctx, 7, flags_.use_recurrent_dropout);
    a.outputs = Data<T>(ctx->input(8));
    a.gates = Data<T>(ctx->input(9));
    a.cells = Data<T>(ctx->input(10));
    a.d_outputs = Data<T>(ctx->input(11));
    a.d_h_final = Data<T>(ctx->input(12));
    a.d_c_final = Data<T>(ctx->input(13));
    a.d_inputs = Data<T>(d_inputs);
    a.d_kernel = Data<T>(d_kernel);
    a.d_recurrent_kernel = Data<T>(d_rkernel);
    a.d_bias = Data<T>(d_bias);
    a.d_h0 = Data<T>(d_h0);
    a.d_c0 = Data<T>(d_c0);

    Tensor workspace;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(DataTypeToEnum<TfT>::value,
                                           TensorShape({BackwardFunctor<Device, T>::WorkspaceSize(
                                               d, flags_.use_mask)}),
                                           &workspace));
    BackwardFunctor<Device, T>()(ctx, a, Data<T>(&workspace));
  }

 private:
  OptionalFlags flags_;
};

#define RLSTM_REGISTER(DEVICE_TYPE, DEVICE, T)                                           \
  REGISTER_KERNEL_BUILDER(                                                             \
      Name("ResetLSTM").Device(DEVICE_TYPE).TypeConstraint<T>("T"),                    \
      ResetLSTMOp<DEVICE, T>);                                                         \
  REGISTER_KERNEL_BUILDER(                                                             \
      Name("ResetLSTMGrad").Device(DEVICE_TYPE).TypeConstraint<T>("T"),                \
      ResetLSTMGradOp<DEVICE, T>);

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
