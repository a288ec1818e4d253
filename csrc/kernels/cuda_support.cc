// Host-side support of the CUDA kernels (see cuda_support.h): errors, device guard, cuBLAS loaded
// with dlopen and its handle pool, and the row-major GEMM. Plain C++ against the CUDA runtime
// API; no device code.
#include "cuda_support.h"

#include <dlfcn.h>
#include <link.h>

#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace resetlstm {
namespace cuda {

Status Status::Error(const char* format, ...) {
  Status s;
  s.ok = false;
  va_list args;
  va_start(args, format);
  std::vsnprintf(s.message, sizeof s.message, format, args);
  va_end(args);
  return s;
}

Status check_cuda(cudaError_t error, const char* what, const char* file, int line) {
  if (error == cudaSuccess) return Status::Ok();
  const char* base = std::strrchr(file, '/');
  return Status::Error("%s failed: %s (%s) [%s:%d]", what, cudaGetErrorName(error),
                       cudaGetErrorString(error), base ? base + 1 : file, line);
}

// ---- device guard ------------------------------------------------------------------------------

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0 && previous_ != device_) cudaSetDevice(previous_);
}

Status DeviceGuard::set(int device) {
  int current = 0;
  RLSTM_CUDA_TRY(cudaGetDevice(&current));
  if (device < 0 || device == current) {
    device_ = current;
    return Status::Ok();
  }
  RLSTM_CUDA_TRY(cudaSetDevice(device));
  previous_ = current;
  device_ = device;
  return Status::Ok();
}

// ---- cuBLAS, loaded at run time -----------------------------------------------------------------
//
// Our own declarations of the few cuBLAS C entry points used (stable C ABI since CUDA 11;
// enums are passed as int): cublasStatus_t f(...), 0 = CUBLAS_STATUS_SUCCESS.

namespace {

using CublasHandle = void*;  // cublasHandle_t (struct cublasContext*)
constexpr int kCublasOpN = 0, kCublasOpT = 1;                     // cublasOperation_t
constexpr int kCublasDefaultMath = 0, kCublasTf32TensorOpMath = 3;  // cublasMath_t

struct CublasApi {
  int (*create)(CublasHandle*) = nullptr;
  int (*set_stream)(CublasHandle, cudaStream_t) = nullptr;
  int (*set_workspace)(CublasHandle, void*, size_t) = nullptr;
  int (*set_math_mode)(CublasHandle, int) = nullptr;
  int (*sgemm)(CublasHandle, int, int, int, int, int, const float*, const float*, int,
               const float*, int, const float*, float*, int) = nullptr;
  int (*dgemm)(CublasHandle, int, int, int, int, int, const double*, const double*, int,
               const double*, int, const double*, double*, int) = nullptr;
  const char* (*status_string)(int) = nullptr;  // optional
};

struct CublasState {
  std::mutex mutex;
  bool loaded = false;
  CublasApi api;
  std::string library;
  std::string error;
  std::vector<std::string> extra_candidates;
  std::vector<std::pair<int, CublasHandle>> free_handles;  // (device, handle)
};

CublasState& state() {
  static CublasState* s = new CublasState();  // never destroyed: used until process exit
  return *s;
}

const char* cublas_status_name(int status) {
  const CublasApi& api = state().api;
  if (api.status_string) return api.status_string(status);
  return "cuBLAS error";
}

Status check_cublas(int status, const char* what) {
  if (status == 0) return Status::Ok();
  return Status::Error("%s failed: %s (cublasStatus %d)", what, cublas_status_name(status), status);
}

// Directories that may hold pip's nvidia-* packages: our own site-packages, and the
// site-packages of every shared object already loaded (numpy, torch, tensorflow, ...).
std::vector<std::string> site_package_dirs() {
  std::vector<std::string> dirs;
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&site_package_dirs), &info) && info.dli_fname) {
    std::string path = info.dli_fname;  // .../site-packages/resetlstm/<module>.so
    for (int up = 0; up < 2; ++up) {
      const size_t slash = path.rfind('/');
      path = slash == std::string::npos ? std::string() : path.substr(0, slash);
    }
    if (!path.empty()) dirs.push_back(path);
  }
  dl_iterate_phdr(
      [](struct dl_phdr_info* phdr, size_t, void* data) {
        auto* out = static_cast<std::vector<std::string>*>(data);
        const char* name = phdr->dlpi_name;
        if (!name || !*name) return 0;
        for (const char* marker : {"/site-packages/", "/dist-packages/"}) {
          const char* at = std::strstr(name, marker);
          if (at) out->emplace_back(name, at + std::strlen(marker) - 1);
        }
        return 0;
      },
      &dirs);
  std::vector<std::string> unique;  // first occurrence of each, in order
  for (std::string& d : dirs) {
    bool seen = false;
    for (const std::string& u : unique) seen = seen || u == d;
    if (!seen) unique.push_back(std::move(d));
  }
  return unique;
}

bool try_library(void* lib, const std::string& name, CublasState* s) {
  CublasApi api;
  auto sym = [&](auto* fn, const char* symbol) {
    *fn = reinterpret_cast<std::remove_pointer_t<decltype(fn)>>(dlsym(lib, symbol));
    return *fn != nullptr;
  };
  const bool ok = sym(&api.create, "cublasCreate_v2") &&
                  sym(&api.set_stream, "cublasSetStream_v2") &&
                  sym(&api.set_workspace, "cublasSetWorkspace_v2") &&
                  sym(&api.set_math_mode, "cublasSetMathMode") &&
                  sym(&api.sgemm, "cublasSgemm_v2") && sym(&api.dgemm, "cublasDgemm_v2");
  if (!ok) return false;
  sym(&api.status_string, "cublasGetStatusString");
  s->api = api;
  s->library = name;
  s->loaded = true;
  return true;
}

bool load_cublas_locked(CublasState* s) {
  if (s->loaded) return true;
  std::string tried;
  auto attempt = [&](const std::string& name, int flags) {
    void* lib = dlopen(name.c_str(), flags);
    if (!lib) {
      if (!(flags & RTLD_NOLOAD)) {
        const char* err = dlerror();
        if (tried.size() < 1500) tried += "\n  " + (err ? std::string(err) : name);
      }
      return false;
    }
    if (try_library(lib, name, s)) return true;
    if (tried.size() < 1500) tried += "\n  " + name + ": missing cuBLAS entry points";
    return false;
  };
  // 1. An explicit choice.
  if (const char* env = std::getenv("RESETLSTM_CUBLAS"))
    if (*env && attempt(env, RTLD_NOW | RTLD_LOCAL)) return true;
  // 2. A cuBLAS the process already uses (TF's or torch's): never load a second one.
  for (const char* so : {"libcublas.so.13", "libcublas.so.12"})
    if (attempt(so, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD)) return true;
  // 3. Paths the binding registered, then pip's nvidia packages, then the loader's search path.
  for (const std::string& path : s->extra_candidates)
    if (attempt(path, RTLD_NOW | RTLD_LOCAL)) return true;
  for (const std::string& dir : site_package_dirs())
    for (const char* rel : {"/nvidia/cu13/lib/libcublas.so.13",
                            "/nvidia/cublas/lib/libcublas.so.13",
                            "/nvidia/cublas/lib/libcublas.so.12"}) {
      const std::string path = dir + rel;
      FILE* f = std::fopen(path.c_str(), "rb");
      if (!f) continue;
      std::fclose(f);
      if (attempt(path, RTLD_NOW | RTLD_LOCAL)) return true;
    }
  for (const char* so : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"})
    if (attempt(so, RTLD_NOW | RTLD_LOCAL)) return true;
  s->error = "cuBLAS (libcublas.so.13 or .so.12) could not be loaded; install torch with CUDA, "
             "nvidia-cublas (CUDA 13) or nvidia-cublas-cu12, or set RESETLSTM_CUBLAS to the "
             "library's path. Tried:" + tried;
  return false;
}

}  // namespace

bool load_cublas(const char** reason) {
  CublasState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (load_cublas_locked(&s)) return true;
  if (reason) *reason = s.error.c_str();  // stable until the next failed load
  return false;
}

void add_cublas_candidates(const char* const* paths, int count) {
  CublasState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  for (int i = 0; i < count; ++i)
    if (paths[i] && *paths[i]) s.extra_candidates.emplace_back(paths[i]);
}

const char* cublas_library() {
  CublasState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.loaded ? s.library.c_str() : "";
}

int runtime_version() {
  int v = 0;
  return cudaRuntimeGetVersion(&v) == cudaSuccess ? v : 0;
}

bool available(const char** reason) {
  thread_local std::string why;
  int driver = 0, count = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  char buf[512];
  if (driver == 0) {
    why = "no NVIDIA driver found (libcuda.so.1 cannot be loaded): the CUDA path needs an NVIDIA "
          "GPU and driver";
  } else if (e == cudaErrorInsufficientDriver) {
    std::snprintf(buf, sizeof buf,
                  "the NVIDIA driver supports CUDA %d.%d but this build's CUDA runtime is %d.%d: "
                  "update the driver (CUDA 13 builds need R580 or newer)",
                  driver / 1000, driver % 1000 / 10, CUDART_VERSION / 1000,
                  CUDART_VERSION % 1000 / 10);
    why = buf;
  } else if (e != cudaSuccess || count == 0) {
    std::snprintf(buf, sizeof buf, "no usable CUDA device (%s: %s)",
                  e == cudaSuccess ? "cudaGetDeviceCount" : cudaGetErrorName(e),
                  e == cudaSuccess ? "0 devices" : cudaGetErrorString(e));
    why = buf;
  } else {
    const char* blas_reason = nullptr;
    if (load_cublas(&blas_reason)) {
      why.clear();
      if (reason) *reason = why.c_str();
      return true;
    }
    why = blas_reason;
  }
  if (reason) *reason = why.c_str();
  return false;
}

// ---- cuBLAS sessions and GEMM -------------------------------------------------------------------

BlasSession::~BlasSession() {
  if (!handle_) return;
  CublasState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.free_handles.emplace_back(device_, handle_);
}

Status BlasSession::begin(int device, void* stream, void* workspace, int64_t workspace_bytes,
                          bool allow_tf32) {
  const char* reason = nullptr;
  if (!load_cublas(&reason)) return Status::Error("%s", reason);
  CublasState& s = state();
  device_ = device;
  stream_ = stream;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    for (size_t i = s.free_handles.size(); i-- > 0;)
      if (s.free_handles[i].first == device) {
        handle_ = s.free_handles[i].second;
        s.free_handles.erase(s.free_handles.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      }
  }
  const CublasApi& api = s.api;
  if (!handle_) {  // the device is current (DeviceGuard), so the handle belongs to it
    CublasHandle h = nullptr;
    RLSTM_TRY(check_cublas(api.create(&h), "cublasCreate"));
    handle_ = h;
  }
  // SetStream resets the workspace to cuBLAS's default pool, so set the workspace after it.
  RLSTM_TRY(check_cublas(api.set_stream(handle_, static_cast<cudaStream_t>(stream)),
                         "cublasSetStream"));
  if (workspace_bytes > 0)
    RLSTM_TRY(check_cublas(
        api.set_workspace(handle_, workspace, static_cast<size_t>(workspace_bytes)),
        "cublasSetWorkspace"));
  RLSTM_TRY(check_cublas(
      api.set_math_mode(handle_, allow_tf32 ? kCublasTf32TensorOpMath : kCublasDefaultMath),
      "cublasSetMathMode"));
  return Status::Ok();
}

template <typename T>
Status BlasSession::gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* A,
                         int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) const {
  if (M <= 0 || N <= 0) return Status::Ok();
  if (K <= 0) {  // empty sum: C = beta * C with beta in {0, 1}
    if (beta == T(0))
      RLSTM_CUDA_TRY(cudaMemset2DAsync(C, static_cast<size_t>(ldc) * sizeof(T), 0,
                                       static_cast<size_t>(N) * sizeof(T), static_cast<size_t>(M),
                                       static_cast<cudaStream_t>(stream_)));
    return Status::Ok();
  }
  for (int64_t v : {M, N, K, lda, ldb, ldc})
    if (v > INT_MAX)
      return Status::Error("GEMM dimension %lld exceeds cuBLAS's int range; split the batch",
                           static_cast<long long>(v));
  // cuBLAS is column-major: the row-major C = op(A) op(B) is the column-major
  // C^T = op(B)^T op(A)^T, so the operands swap.
  const T alpha = T(1);
  const CublasApi& api = state().api;
  const int op_a = trans_a ? kCublasOpT : kCublasOpN, op_b = trans_b ? kCublasOpT : kCublasOpN;
  int status;
  if constexpr (sizeof(T) == 4)
    status = api.sgemm(handle_, op_b, op_a, int(N), int(M), int(K), &alpha, B, int(ldb), A,
                       int(lda), &beta, C, int(ldc));
  else
    status = api.dgemm(handle_, op_b, op_a, int(N), int(M), int(K), &alpha, B, int(ldb), A,
                       int(lda), &beta, C, int(ldc));
  return check_cublas(status, sizeof(T) == 4 ? "cublasSgemm" : "cublasDgemm");
}

template Status BlasSession::gemm<float>(bool, bool, int64_t, int64_t, int64_t, const float*,
                                         int64_t, const float*, int64_t, float, float*,
                                         int64_t) const;
template Status BlasSession::gemm<double>(bool, bool, int64_t, int64_t, int64_t, const double*,
                                          int64_t, const double*, int64_t, double, double*,
                                          int64_t) const;

}  // namespace cuda
}  // namespace resetlstm
