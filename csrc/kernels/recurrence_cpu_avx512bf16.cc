// The bf16 CPU kernels with AVX512-BF16 (vdpbf16ps) GEMMs; float and double use the avx512
// build. Selected at run time on CPUs that report avx512_bf16 (flags set in CMakeLists.txt).
#define RLSTM_ISA avx512bf16
#define RLSTM_VECTOR_BYTES 64
#define RLSTM_ONLY_BF16
#include "recurrence_cpu_impl.h"
