// The CPU kernels compiled for one instruction set (flags set in CMakeLists.txt).
#define RLSTM_ISA generic
#define RLSTM_VECTOR_BYTES 16
#include "recurrence_cpu_impl.h"
