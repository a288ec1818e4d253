// Chooses, once per process, the fastest instruction set this CPU supports among those compiled
// in, and forwards to that build of the kernels.
#include "recurrence_cpu.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <type_traits>

namespace resetlstm {
namespace cpu {

#define RLSTM_DECLARE_ISA(ISA)                                                  \
  namespace ISA {                                                               \
  template <typename T>                                                         \
  int64_t forward_workspace_size(const Dims&, bool);                            \
  template <typename T>                                                         \
  int64_t backward_workspace_size(const Dims&, bool);                           \
  template <typename T>                                                         \
  void forward(const TaskRunner&, const ForwardArgs<T>&, T*);                   \
  template <typename T>                                                         \
  void backward(const TaskRunner&, const BackwardArgs<T>&, T*);                 \
  }

RLSTM_DECLARE_ISA(generic)
#if defined(RLSTM_HAVE_AVX2)
RLSTM_DECLARE_ISA(avx2)
#endif
#if defined(RLSTM_HAVE_AVX512)
RLSTM_DECLARE_ISA(avx512)
#endif
#if defined(RLSTM_HAVE_AVX512BF16)
RLSTM_DECLARE_ISA(avx512bf16)
#endif

const char* env_choice(const char* name, const char* const* allowed) {
  const char* value = std::getenv(name);
  if (!value || !*value) return nullptr;
  std::string accepted;
  for (const char* const* a = allowed; *a; ++a) {
    if (std::strcmp(value, *a) == 0) return *a;
    accepted += (accepted.empty() ? "" : ", ") + std::string(*a);
  }
  static std::mutex mutex;
  static std::set<std::string> warned;
  std::lock_guard<std::mutex> lock(mutex);
  if (warned.insert(std::string(name) + "=" + value).second)
    std::fprintf(stderr,
                 "resetlstm: ignoring %s='%s' (accepted: %s); using the automatic choice\n",
                 name, value, accepted.c_str());
  return nullptr;
}

namespace {

enum class Isa { kGeneric, kAvx2, kAvx512 };

// RESETLSTM_ISA=generic|avx2|avx512|avx512_bf16 caps the choice (for testing the fallbacks;
// avx512 and below run bf16 GEMMs emulated).
const char* isa_cap() {
  static const char* const kAllowed[] = {"generic", "avx2", "avx512", "avx512_bf16", nullptr};
  return env_choice("RESETLSTM_ISA", kAllowed);
}

Isa detect() {
  const char* cap = isa_cap();
  const bool allow_avx512 =
      !cap || std::strcmp(cap, "avx512") == 0 || std::strcmp(cap, "avx512_bf16") == 0;
  const bool allow_avx2 = allow_avx512 || (cap && std::strcmp(cap, "avx2") == 0);
#if defined(RLSTM_HAVE_AVX512)
  if (allow_avx512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"))
    return Isa::kAvx512;
#endif
#if defined(RLSTM_HAVE_AVX2)
  if (allow_avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return Isa::kAvx2;
#endif
  (void)allow_avx2;
  return Isa::kGeneric;
}

Isa isa() {
  static const Isa chosen = detect();
  return chosen;
}

bool detect_dpbf16() {
#if defined(RLSTM_HAVE_AVX512BF16)
  const char* cap = isa_cap();
  return isa() == Isa::kAvx512 && (!cap || std::strcmp(cap, "avx512_bf16") == 0) &&
         __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

bool dpbf16() {
  static const bool chosen = detect_dpbf16();
  return chosen;
}

}  // namespace

#if defined(RLSTM_HAVE_AVX512BF16)
#define RLSTM_DISPATCH_BF16(CALL)      \
  if constexpr (std::is_same_v<T, bf16>) \
    if (dpbf16()) return avx512bf16::CALL;
#else
#define RLSTM_DISPATCH_BF16(CALL)
#endif

#if defined(RLSTM_HAVE_AVX512) && defined(RLSTM_HAVE_AVX2)
#define RLSTM_DISPATCH(CALL)                               \
  RLSTM_DISPATCH_BF16(CALL)                                \
  switch (isa()) {                                         \
    case Isa::kAvx512: return avx512::CALL;                \
    case Isa::kAvx2: return avx2::CALL;                    \
    default: return generic::CALL;                         \
  }
#else
#define RLSTM_DISPATCH(CALL) return generic::CALL;
#endif

template <typename T>
int64_t forward_workspace_size(const Dims& dims, bool training) {
  RLSTM_DISPATCH(forward_workspace_size<T>(dims, training))
}
template <typename T>
int64_t backward_workspace_size(const Dims& dims, bool has_mask) {
  RLSTM_DISPATCH(backward_workspace_size<T>(dims, has_mask))
}
template <typename T>
void forward(const TaskRunner& runner, const ForwardArgs<T>& args, T* workspace) {
  RLSTM_DISPATCH(forward<T>(runner, args, workspace))
}
template <typename T>
void backward(const TaskRunner& runner, const BackwardArgs<T>& args, T* workspace) {
  RLSTM_DISPATCH(backward<T>(runner, args, workspace))
}

const char* selected_isa() {
  switch (isa()) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "generic";
  }
}

const char* bf16_gemm() { return dpbf16() ? "avx512_bf16" : "emulated"; }

const char* compiled_isas() {
#if defined(RLSTM_HAVE_AVX512BF16)
  return "avx512_bf16,avx512,avx2,generic";
#elif defined(RLSTM_HAVE_AVX512) && defined(RLSTM_HAVE_AVX2)
  return "avx512,avx2,generic";
#else
  return "generic";
#endif
}

template int64_t forward_workspace_size<float>(const Dims&, bool);
template int64_t forward_workspace_size<double>(const Dims&, bool);
template int64_t backward_workspace_size<float>(const Dims&, bool);
template int64_t backward_workspace_size<double>(const Dims&, bool);
template void forward<float>(const TaskRunner&, const ForwardArgs<float>&, float*);
template void forward<double>(const TaskRunner&, const ForwardArgs<double>&, double*);
template void backward<float>(const TaskRunner&, const BackwardArgs<float>&, float*);
template void backward<double>(const TaskRunner&, const BackwardArgs<double>&, double*);
template int64_t forward_workspace_size<bf16>(const Dims&, bool);
template int64_t backward_workspace_size<bf16>(const Dims&, bool);
template void forward<bf16>(const TaskRunner&, const ForwardArgs<bf16>&, bf16*);
template void backward<bf16>(const TaskRunner&, const BackwardArgs<bf16>&, bf16*);

}  // namespace cpu
}  // namespace resetlstm
