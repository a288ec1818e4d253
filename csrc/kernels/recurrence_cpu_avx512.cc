// The CPU kernels compiled for one instruction set (flags set in CMakeLists.txt).
#define RLSTM_ISA avx512
#define RLSTM_VECTOR_BYTES 64
#include "recurrence_cpu_impl.h"
