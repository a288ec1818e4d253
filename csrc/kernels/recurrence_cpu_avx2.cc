// The CPU kernels compiled for one instruction set (flags set in CMakeLists.txt).
#define RLSTM_ISA avx2
#define RLSTM_VECTOR_BYTES 32
#include "recurrence_cpu_impl.h"
