# The JAX binding: resetlstm._jax_ffi, the XLA FFI handlers (csrc/jax) as a pybind11 module.
# Included by CMakeLists.txt unless RESETLSTM_JAX=OFF. It needs only jaxlib's FFI headers
# (jaxlib/include/xla/ffi/api, a C API; nothing of jaxlib is linked), found without importing
# jax (importlib's find_spec locates the package without running it). AUTO builds the module
# when they are found; ON fails without them.

execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
    "import importlib.util, os; s = importlib.util.find_spec('jaxlib'); \
print(os.path.join(os.path.dirname(s.origin), 'include') if s and s.origin else '')"
  OUTPUT_VARIABLE RLSTM_JAX_INCLUDE OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(RLSTM_JAX_INCLUDE AND EXISTS "${RLSTM_JAX_INCLUDE}/xla/ffi/api/ffi.h")
  set(RLSTM_WITH_JAX ON)
elseif(RESETLSTM_JAX STREQUAL "ON")
  message(FATAL_ERROR "RESETLSTM_JAX=ON but jaxlib's XLA FFI headers were not found for "
                      "${Python_EXECUTABLE} (pip install jaxlib)")
else()
  message(STATUS "resetlstm: jaxlib not found; not building the JAX binding (_jax_ffi)")
endif()

if(RLSTM_WITH_JAX)
  pybind11_add_module(_jax_ffi MODULE csrc/jax/module.cc csrc/jax/ffi_cpu.cc)
  target_include_directories(_jax_ffi SYSTEM PRIVATE "${RLSTM_JAX_INCLUDE}")
  target_link_libraries(_jax_ffi PRIVATE resetlstm_kernels)
  if(RLSTM_WITH_CUDA)
    target_sources(_jax_ffi PRIVATE csrc/jax/ffi_cuda.cc)
    rlstm_add_native_cuda(_jax_ffi)
  endif()
  install(TARGETS _jax_ffi DESTINATION resetlstm)
  message(STATUS "resetlstm: JAX binding (_jax_ffi) against ${RLSTM_JAX_INCLUDE}")
endif()
