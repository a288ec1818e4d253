// Running the kernels' tasks on the thread team of an OpenMP runtime that another library in
// the process already loaded: PyTorch's (its intra-op pool is OpenMP, torch/lib/libgomp.so.1).
// PyTorch's OpenMP threads spin for a while after each parallel region, so a pool of our own
// would take turns with them for the same cores (measured on an AMD EPYC Zen 4, 2 cores: the
// forward at (64, 50, 128, 128) right after torch ops took 9.1 ms instead of 5.4); on torch's
// own team the work runs on threads that are already awake. The runtime is reached through its
// GNU ABI entry point GOMP_parallel (libgomp, and LLVM's and Intel's OpenMP, which implement it),
// found with dlopen(RTLD_NOLOAD): nothing is loaded that the process had not loaded already.
#pragma once

#include <cstdint>
#include <string>

#include "../kernels/cpu_parallel.h"

namespace resetlstm {
namespace openmp {

// Attaches the OpenMP runtime at `path` if the process has loaded it; returns "" on success,
// else why not (the previous attachment, if any, stays). An empty path detaches.
std::string attach(const std::string& path);

// The attached runtime's path, "" when none (or after a fork: a forked child has none of its
// parent's OpenMP threads, and the kernels then run on _native's own pool).
std::string attached();

// Runs body(runner) in one parallel region of `threads` threads of the attached runtime's
// team: the runner's tasks run on the team's threads (claimed as cpu::run_claimed claims them),
// and the team's closing barrier comes once, when body returns. Returns false (running
// nothing) when no runtime is attached.
bool run_region(int threads, cpu::FunctionRef<void(const cpu::TaskRunner&)> body);

}  // namespace openmp
}  // namespace resetlstm
