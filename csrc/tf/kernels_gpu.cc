// GPU specialisations of the functors (functor.h): the CUDA kernels of
// csrc/kernels/recurrence_cuda.h on the OpKernelContext's stream, with the workspace the OpKernel
// allocated through allocate_temp; no host synchronisation, no private stream. Compiled with
// GOOGLE_CUDA=1 against TF's bundled CUDA headers; the kernels themselves live in the
// separately compiled resetlstm_cuda library.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include "functor.h"

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/platform/errors.h"
#include "tensorflow/core/platform/tensor_float_32_utils.h"

#include "../kernels/recurrence_cuda.h"

namespace resetlstm {
namespace {

cuda::LaunchOptions OptionsFor(tensorflow::OpKernelContext* ctx) {
  cuda::LaunchOptions options;
  options.stream = static_cast<void*>(ctx->eigen_device<GPUDevice>().stream());
  // The CUDA ordinal of the op's device (TF's platform device id); -1: the current device.
  const auto* info = ctx->device()->tensorflow_accelerator_device_info();
  options.device = info ? info->gpu_id : -1;
  // float32 GEMMs follow tf.config.experimental.enable_tensor_float_32_execution.
  options.allow_tf32 = tensorflow::tensor_float_32_execution_enabled();
  return options;
}

void Report(tensorflow::OpKernelContext* ctx, const cuda::Status& status, const char* what) {
  if (!status.ok) ctx->SetStatus(tensorflow::errors::Internal(what, ": ", status.message));
}

}  // namespace

template <typename T>
int64_t ForwardFunctor<GPUDevice, T>::WorkspaceSize(const cpu::Dims& d, bool training) {
  return cuda::forward_workspace_size<T>(d, training);
}

template <typename T>
void ForwardFunctor<GPUDevice, T>::operator()(tensorflow::OpKernelContext* ctx,
                                              const cpu::ForwardArgs<T>& args,
                                              T* workspace) const {
  Report(ctx, cuda::forward<T>(args, workspace, OptionsFor(ctx)), "reset_lstm (GPU)");
}

template <typename T>
int64_t BackwardFunctor<GPUDevice, T>::WorkspaceSize(const cpu::Dims& d, bool has_mask) {
  return cuda::backward_workspace_size<T>(d, has_mask);
}

template <typename T>
void BackwardFunctor<GPUDevice, T>::operator()(tensorflow::OpKernelContext* ctx,
                                               const cpu::BackwardArgs<T>& args,
                                               T* workspace) const {
  Report(ctx, cuda::backward<T>(args, workspace, OptionsFor(ctx)), "reset_lstm gradient (GPU)");
}

template struct ForwardFunctor<GPUDevice, float>;
template struct ForwardFunctor<GPUDevice, double>;
template struct ForwardFunctor<GPUDevice, cpu::bf16>;
template struct ForwardFunctor<GPUDevice, cpu::f16>;
template struct BackwardFunctor<GPUDevice, float>;
template struct BackwardFunctor<GPUDevice, double>;
template struct BackwardFunctor<GPUDevice, cpu::bf16>;
template struct BackwardFunctor<GPUDevice, cpu::f16>;

}  // namespace resetlstm

#endif  // GOOGLE_CUDA
