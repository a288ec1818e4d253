# The CUDA path: included by CMakeLists.txt when a CUDA compiler is found (RESETLSTM_CUDA AUTO/ON).
#
# - resetlstm_cuda: static library of the framework-free CUDA kernels (csrc/kernels/*.cu plus the
#   host support code). No TensorFlow header ever reaches nvcc (TF bundles CUDA 12.5 headers that
#   break nvcc 13).
# - The CUDA runtime is linked statically (CUDA::cudart_static, CUDA_RUNTIME_LIBRARY None) and
#   placed BEFORE libtensorflow_framework on the op's link line; otherwise ~10 cuda* symbols bind to
#   TF's exported CUDA-12 stand-ins (loads on a CPU machine, breaks on a GPU).
# - cuBLAS is not linked: it is loaded with dlopen at run time (cuBLAS 12 with TF, 13 with torch).
#
# rlstm_add_native_cuda(<pybind target>) and rlstm_add_tf_gpu(<op target>) attach it.

enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

# Real code for Turing..Hopper, plus compute_90 PTX so newer GPUs (Blackwell) JIT-compile it.
# nvcc 13 accepts sm_75 and newer only.
set(RESETLSTM_CUDA_ARCHITECTURES "75-real;80-real;86-real;89-real;90" CACHE STRING
    "CUDA architectures of the kernels (CMake CUDA_ARCHITECTURES syntax)")
set(RLSTM_CUDA_ARCHITECTURES "${RESETLSTM_CUDA_ARCHITECTURES}")

add_library(resetlstm_cuda STATIC
  csrc/kernels/recurrence_cuda_forward.cu
  csrc/kernels/recurrence_cuda_backward.cu
  csrc/kernels/cuda_support.cc)
target_include_directories(resetlstm_cuda PUBLIC csrc/kernels)
# PRIVATE: consumers get the static runtime only as a link dependency, not the CUDA 13 include
# directory (the TF op compiles against TF's CUDA 12.5 headers; the bindings include only
# recurrence_cuda.h, which needs no CUDA header). CMake appends such link-only dependencies at the END of
# the link line, after libtensorflow_framework, so the functions below also name the archive
# right after this library.
target_link_libraries(resetlstm_cuda PRIVATE CUDA::cudart_static ${CMAKE_DL_LIBS})
set_target_properties(resetlstm_cuda PROPERTIES
  CUDA_ARCHITECTURES "${RESETLSTM_CUDA_ARCHITECTURES}"
  CUDA_STANDARD 17
  CUDA_STANDARD_REQUIRED ON
  CUDA_RUNTIME_LIBRARY None
  POSITION_INDEPENDENT_CODE ON
  CXX_VISIBILITY_PRESET hidden
  CUDA_VISIBILITY_PRESET hidden
  VISIBILITY_INLINES_HIDDEN ON)
message(STATUS "resetlstm: CUDA ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${RESETLSTM_CUDA_ARCHITECTURES}")

# The pybind11 module: forward_cuda / backward_cuda / cuda_available (csrc/python/native_cuda.cc).
function(rlstm_add_native_cuda target)
  target_compile_definitions(${target} PRIVATE RLSTM_WITH_CUDA=1)
  set_target_properties(${target} PROPERTIES CUDA_RUNTIME_LIBRARY None)
  target_link_libraries(${target} PRIVATE resetlstm_cuda "${CUDA_cudart_static_LIBRARY}")
endfunction()

# The TF op library: the GPU OpKernels (GOOGLE_CUDA=1, TF's bundled CUDA headers for the .cc
# files only), the kernels, and the static CUDA runtime ahead of libtensorflow_framework.
function(rlstm_add_tf_gpu target)
  set(tf_cuda_include "")
  foreach(flag IN LISTS RLSTM_TF_CFLAGS)
    if(flag MATCHES "^-I(.+)$")
      set(dir "${CMAKE_MATCH_1}/third_party/gpus/cuda/include")
      if(EXISTS "${dir}")
        set(tf_cuda_include "${dir}")
      endif()
    endif()
  endforeach()
  if(NOT tf_cuda_include)
    message(FATAL_ERROR "resetlstm: TensorFlow's bundled CUDA headers (third_party/gpus/cuda/include) "
                        "were not found; configure with -DRESETLSTM_CUDA=OFF for a CPU-only op")
  endif()
  target_sources(${target} PRIVATE ${PROJECT_SOURCE_DIR}/csrc/tf/kernels_gpu.cc)
  target_compile_definitions(${target} PRIVATE GOOGLE_CUDA=1)
  target_include_directories(${target} SYSTEM PRIVATE "${tf_cuda_include}")
  set_target_properties(${target} PROPERTIES CUDA_RUNTIME_LIBRARY None)
  # The runtime archive by path (not CUDA::cudart_static, whose CUDA 13 include directory must
  # not reach TF's headers), so it lands before -l:libtensorflow_framework.so.2.
  target_link_libraries(${target} PRIVATE resetlstm_cuda "${CUDA_cudart_static_LIBRARY}")
endfunction()
