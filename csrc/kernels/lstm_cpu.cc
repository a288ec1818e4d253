// Chooses, once per process, the fastest instruction set this CPU supports among those compiled
// in, and forwards to that build of the kernels.
#include "lstm_cpu.h"

#include <cstdlib>
#include <cstring>

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

namespace {

enum class Isa { kGeneric, kAvx2, kAvx512 };

Isa detect() {
  // RESETLSTM_ISA=generic|avx2|avx512 caps the choice (for testing the fallbacks).
  const char* cap = std::getenv("RESETLSTM_ISA");
  const bool allow_avx512 = !cap || std::strcmp(cap, "avx512") == 0;
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

}  // namespace

#if defined(RLSTM_HAVE_AVX512) && defined(RLSTM_HAVE_AVX2)
#define RLSTM_DISPATCH(CALL)                               \
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

const char* compiled_isas() {
#if defined(RLSTM_HAVE_AVX512) && defined(RLSTM_HAVE_AVX2)
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

}  // namespace cpu
}  // namespace resetlstm
