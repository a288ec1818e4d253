// pybind11 module resetlstm._jax_ffi: the XLA FFI handlers as PyCapsules for
// jax.ffi.register_ffi_target, and the host-side facts the Python lowering needs (shape
// validation with the messages every binding gives, workspace sizes, the CPU's bf16 support).
// Needs no JAX at run time: XLA's FFI is a C API, and its headers (from jaxlib) are only used
// at build time.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "ffi_args.h"
#include "ffi_handlers.h"

#include "../kernels/recurrence_cpu.h"
#include "../kernels/recurrence_shapes.h"
#if RLSTM_WITH_CUDA
#include "../kernels/recurrence_cuda.h"
#endif

namespace py = pybind11;

namespace resetlstm {
namespace jaxffi {
namespace {

using OptShape = std::optional<std::vector<int64_t>>;

Shape ToShape(const OptShape& dims) {
  if (!dims) return Shape::absent();
  Shape s;
  s.rank = static_cast<int>(dims->size());
  s.dims = *dims;
  return s;
}

py::dict Targets(XLA_FFI_Handler* forward, XLA_FFI_Handler* backward) {
  py::dict targets;
  targets["forward"] = py::capsule(reinterpret_cast<void*>(forward));
  targets["backward"] = py::capsule(reinterpret_cast<void*>(backward));
  return targets;
}

}  // namespace
}  // namespace jaxffi
}  // namespace resetlstm

PYBIND11_MODULE(_jax_ffi, m) {
  using namespace resetlstm;
  using namespace resetlstm::jaxffi;
  m.doc() = "resetlstm's XLA FFI handlers (see resetlstm.jax).";
  m.def(
      "cpu_targets",
      [] { return Targets(cpu_forward_handler(), cpu_backward_handler()); },
      "{'forward': capsule, 'backward': capsule}: the CPU handlers.");
  m.def(
      "cuda_targets",
      [] {
#if RLSTM_WITH_CUDA
        return Targets(cuda_forward_handler(), cuda_backward_handler());
#else
        return py::dict();
#endif
      },
      "The CUDA handlers as cpu_targets gives the CPU ones; {} when CUDA is not built in.");
  m.def(
      "check_shapes",
      [](const OptShape& inputs, const OptShape& kernel, const OptShape& recurrent_kernel,
         const OptShape& bias, const OptShape& resets, const OptShape& mask, const OptShape& h0,
         const OptShape& c0, const OptShape& recurrent_dropout_mask, bool time_major, int cell) {
        RecurrenceShapes s{ToShape(inputs), ToShape(kernel), ToShape(recurrent_kernel),
                           ToShape(bias),   ToShape(resets), ToShape(mask),
                           ToShape(h0),     ToShape(c0),     ToShape(recurrent_dropout_mask)};
        cpu::Dims d;
        const cpu::CellType type = CellOf(cell);
        const std::string error = check_shapes(s, type, time_major, &d);
        if (!error.empty()) throw py::value_error(std::string(op_name(type)) + ": " + error);
        return py::make_tuple(d.B, d.T, d.I, d.H);
      },
      py::arg("inputs"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("resets"), py::arg("mask"), py::arg("h0"), py::arg("c0"),
      py::arg("recurrent_dropout_mask"), py::arg("time_major"), py::arg("cell") = 0,
      "Validates argument shapes (None: absent) as every binding does for `cell` (0 LSTM, 1 GRU "
      "with reset_after, 2 without); returns (B, T, I, H) or raises ValueError naming the "
      "argument, the expected and the received shape.");
  m.def(
      "workspace_bytes",
      [](const std::string& platform, const std::string& direction, const std::string& dtype,
         int64_t B, int64_t T, int64_t I, int64_t H, bool time_major, bool flag, int cell) {
        const cpu::Dims d{B, T, I, H, time_major, CellOf(cell)};
        const Direction dir = direction == "forward" ? Direction::kForward : Direction::kBackward;
        int64_t bytes = -1;
        if (platform == "cpu") bytes = cpu_workspace_bytes(dir, dtype.c_str(), d, flag);
#if RLSTM_WITH_CUDA
        if (platform == "cuda") bytes = cuda_workspace_bytes(dir, dtype.c_str(), d, flag);
#endif
        if (bytes < 0)
          throw py::value_error("reset_lstm: no " + dtype + " kernels on platform " + platform);
        return bytes;
      },
      py::arg("platform"), py::arg("direction"), py::arg("dtype"), py::arg("B"), py::arg("T"),
      py::arg("I"), py::arg("H"), py::arg("time_major"), py::arg("flag"), py::arg("cell") = 0,
      "Bytes of the workspace result of a call (flag: training for 'forward', has_mask for "
      "'backward').");
  m.def("bf16_gemm", &cpu::bf16_gemm,
        "How bf16 GEMMs run on this CPU: 'avx512_bf16' (vdpbf16ps) or 'emulated'.");
  m.def("selected_isa", &cpu::selected_isa, "SIMD instruction set the CPU kernels run with.");
#if RLSTM_WITH_CUDA
  m.attr("cuda_built") = true;
  m.def("cuda_dtype_unsupported_reason", &cuda::dtype_unsupported_reason, py::arg("dtype"),
        py::arg("major"), py::arg("minor"),
        "Why `dtype` cannot run on a GPU of compute capability major.minor; '' when it can.");
#else
  m.attr("cuda_built") = false;
#endif
}
