// Functor per device, declared once: the OpKernels in kernels.cc call these; the CPU
// specialisation runs the framework-free CPU kernels on TF's intra-op thread pool.
#pragma once

#include <algorithm>
#include <functional>
#include <utility>

#include "tensorflow/core/framework/op_kernel.h"

#include "../kernels/recurrence_cpu.h"

namespace resetlstm {

using CPUDevice = Eigen::ThreadPoolDevice;
using GPUDevice = Eigen::GpuDevice;

template <typename Device, typename T>
struct ForwardFunctor;
template <typename Device, typename T>
struct BackwardFunctor;

// The OpKernelContext's intra-op thread pool as a TaskRunner: the caller and up to one helper
// per pool thread claim the tasks (cpu::run_claimed). One helper more than the tasks left
// after the caller's first: on a VM whose scheduler wakes pool threads onto the waking CPU,
// the extra helper is the one likely to land on an idle CPU. Measured through the op on an AMD
// EPYC (Zen 5, 2 vCPUs) against the pool's ParallelFor (which blocks on helpers that have not
// started): fwd+bwd (32,50,128,128) 4.5-4.7 -> 3.8-4.0 ms, (16,50,256,256) 9.3-10.0 -> 8.1 ms.
class TfTaskRunner final : public cpu::TaskRunner {
 public:
  explicit TfTaskRunner(tensorflow::OpKernelContext* ctx)
      : pool_(ctx->device()->tensorflow_cpu_worker_threads()->workers) {}
  int num_threads() const override { return pool_->NumThreads(); }
  void run(int64_t num_tasks, cpu::FunctionRef<void(int64_t)> task) const override {
    // A caller that is itself one of the pool's threads leaves one fewer to help (none in a
    // one-thread pool, where a helper could only run after this call).
    const int64_t free = pool_->NumThreads() - (pool_->CurrentThreadId() >= 0 ? 1 : 0);
    cpu::run_claimed(num_tasks, std::min<int64_t>(num_tasks, free), task,
                     [this](std::function<void()> fn) { pool_->Schedule(std::move(fn)); });
  }

 private:
  tensorflow::thread::ThreadPool* pool_;
};

template <typename T>
struct ForwardFunctor<CPUDevice, T> {
  static int64_t WorkspaceSize(const cpu::Dims& d, bool training) {
    return cpu::forward_workspace_size<T>(d, training);
  }
  void operator()(tensorflow::OpKernelContext* ctx, const cpu::ForwardArgs<T>& args,
                  T* workspace) const {
    cpu::forward<T>(TfTaskRunner(ctx), args, workspace);
  }
};

template <typename T>
struct BackwardFunctor<CPUDevice, T> {
  static int64_t WorkspaceSize(const cpu::Dims& d, bool has_mask) {
    return cpu::backward_workspace_size<T>(d, has_mask);
  }
  void operator()(tensorflow::OpKernelContext* ctx, const cpu::BackwardArgs<T>& args,
                  T* workspace) const {
    cpu::backward<T>(TfTaskRunner(ctx), args, workspace);
  }
};

#if GOOGLE_CUDA
// GPU: defined in kernels_gpu.cc over the CUDA kernels of csrc/kernels/recurrence_cuda.h,
// on the context's stream, with the workspace the OpKernel allocates.
template <typename T>
struct ForwardFunctor<GPUDevice, T> {
  static int64_t WorkspaceSize(const cpu::Dims& d, bool training);
  void operator()(tensorflow::OpKernelContext* ctx, const cpu::ForwardArgs<T>& args,
                  T* workspace) const;
};

template <typename T>
struct BackwardFunctor<GPUDevice, T> {
  static int64_t WorkspaceSize(const cpu::Dims& d, bool has_mask);
  void operator()(tensorflow::OpKernelContext* ctx, const cpu::BackwardArgs<T>& args,
                  T* workspace) const;
};
#endif  // GOOGLE_CUDA

}  // namespace resetlstm
