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
// cublasMath_t flag: split-K reductions of half-output GEMMs accumulate in the compute type
// (float32), not in the half output type (cuBLAS's default allows the latter).
constexpr int kCublasDisallowReducedPrecisionReduction = 16;
constexpr int kCudaR32F = 0, kCudaR16F = 2, kCudaR16BF = 14;       // cudaDataType_t
constexpr int kCublasCompute32F = 68;                               // cublasComputeType_t
constexpr int kCublasGemmDefault = -1;                              // cublasGemmAlgo_t

struct CublasApi {
  int (*create)(CublasHandle*) = nullptr;
  int (*set_stream)(CublasHandle, cudaStream_t) = nullptr;
  int (*set_workspace)(CublasHandle, void*, size_t) = nullptr;
  int (*set_math_mode)(CublasHandle, int) = nullptr;
  int (*sgemm)(CublasHandle, int, int, int, int, int, const float*, const float*, int,
               const float*, int, const float*, float*, int) = nullptr;
  int (*dgemm)(CublasHandle, int, int, int, int, int, const double*, const double*, int,
               const double*, int, const double*, double*, int) = nullptr;
  // cublasGemmEx (cudaDataType_t and cublasComputeType_t / cublasGemmAlgo_t passed as int)
  int (*gemm_ex)(CublasHandle, int, int, int, int, int, const void*, const void*, int, int,
                 const void*, int, int, const void*, void*, int, int, int, int) = nullptr;
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
                  sym(&api.sgemm, "cublasSgemm_v2") && sym(&api.dgemm, "cublasDgemm_v2") &&
                  sym(&api.gemm_ex, "cublasGemmEx");
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
      api.set_math_mode(handle_, (allow_tf32 ? kCublasTf32TensorOpMath : kCublasDefaultMath) |
                                     kCublasDisallowReducedPrecisionReduction),
      "cublasSetMathMode"));
  return Status::Ok();
}

namespace {

// cudaDataType_t of a storage type.
template <typename T>
constexpr int cuda_data_type() {
  if constexpr (std::is_same_v<T, cpu::bf16>) return kCudaR16BF;
  else if constexpr (std::is_same_v<T, cpu::f16>) return kCudaR16F;
  else return kCudaR32F;
}

}  // namespace

template <typename In, typename Out>
Status BlasSession::gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const In* A,
                         int64_t lda, const In* B, int64_t ldb, bool accumulate, Out* C,
                         int64_t ldc) const {
  static_assert(std::is_same_v<In, Out> || std::is_same_v<Out, float>,
                "GEMM results are the operands' type or float32");
  if (M <= 0 || N <= 0) return Status::Ok();
  if (K <= 0) {  // empty sum: C = C, or 0 (all-zero bits in every storage type)
    if (!accumulate)
      RLSTM_CUDA_TRY(cudaMemset2DAsync(C, static_cast<size_t>(ldc) * sizeof(Out), 0,
                                       static_cast<size_t>(N) * sizeof(Out),
                                       static_cast<size_t>(M), static_cast<cudaStream_t>(stream_)));
    return Status::Ok();
  }
  for (int64_t v : {M, N, K, lda, ldb, ldc})
    if (v > INT_MAX)
      return Status::Error("GEMM dimension %lld exceeds cuBLAS's int range; split the batch",
                           static_cast<long long>(v));
  // cuBLAS is column-major: the row-major C = op(A) op(B) is the column-major
  // C^T = op(B)^T op(A)^T, so the operands swap.
  const CublasApi& api = state().api;
  const int op_a = trans_a ? kCublasOpT : kCublasOpN, op_b = trans_b ? kCublasOpT : kCublasOpN;
  if constexpr (std::is_same_v<In, double>) {
    const double alpha = 1, beta = accumulate ? 1 : 0;
    return check_cublas(api.dgemm(handle_, op_b, op_a, int(N), int(M), int(K), &alpha, B,
                                  int(ldb), A, int(lda), &beta, C, int(ldc)),
                        "cublasDgemm");
  } else if constexpr (std::is_same_v<In, float>) {
    const float alpha = 1, beta = accumulate ? 1 : 0;
    return check_cublas(api.sgemm(handle_, op_b, op_a, int(N), int(M), int(K), &alpha, B,
                                  int(ldb), A, int(lda), &beta, C, int(ldc)),
                        "cublasSgemm");
  } else {  // half operands: tensor cores, float32 accumulation (alpha, beta in float)
    const float alpha = 1, beta = accumulate ? 1 : 0;
    const int in_type = cuda_data_type<In>(), out_type = cuda_data_type<Out>();
    return check_cublas(
        api.gemm_ex(handle_, op_b, op_a, int(N), int(M), int(K), &alpha, B, in_type, int(ldb), A,
                    in_type, int(lda), &beta, C, out_type, int(ldc), kCublasCompute32F,
                    kCublasGemmDefault),
        "cublasGemmEx");
  }
}

#define RLSTM_GEMM(In, Out)                                                                   \
  template Status BlasSession::gemm<In, Out>(bool, bool, int64_t, int64_t, int64_t, const In*, \
                                             int64_t, const In*, int64_t, bool, Out*, int64_t)  \
      const;
RLSTM_GEMM(float, float)
RLSTM_GEMM(double, double)
RLSTM_GEMM(cpu::bf16, cpu::bf16)
RLSTM_GEMM(cpu::bf16, float)
RLSTM_GEMM(cpu::f16, cpu::f16)
RLSTM_GEMM(cpu::f16, float)
#undef RLSTM_GEMM

// ---- storage types per architecture ----------------------------------------------------------

const char* dtype_unsupported_reason(const char* dtype, int major, int minor) {
  thread_local char why[256];
  const std::string name = dtype ? dtype : "";
  if (name == "float32" || name == "float64" || name == "float16") return "";
  if (name == "bfloat16") {
    if (major >= 8) return "";
    std::snprintf(why, sizeof why,
                  "bfloat16 needs an NVIDIA GPU of compute capability 8.0 or newer (Ampere: "
                  "bf16 tensor cores); this one is %d.%d: use float16 or float32",
                  major, minor);
    return why;
  }
  std::snprintf(why, sizeof why,
                "unknown dtype '%s' (float32, float64, float16 or bfloat16 expected)",
                name.c_str());
  return why;
}

template <typename T>
Status check_dtype_support(int device) {
  if (!std::is_same_v<T, cpu::bf16>) return Status::Ok();  // every built architecture
  if (device < 0) RLSTM_CUDA_TRY(cudaGetDevice(&device));
  int major = 0, minor = 0;
  RLSTM_CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  RLSTM_CUDA_TRY(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  const char* why = dtype_unsupported_reason("bfloat16", major, minor);
  if (*why) return Status::Error("%s (device %d)", why, device);
  return Status::Ok();
}

template Status check_dtype_support<float>(int);
template Status check_dtype_support<double>(int);
template Status check_dtype_support<cpu::bf16>(int);
template Status check_dtype_support<cpu::f16>(int);

}  // namespace cuda
}  // namespace resetlstm
