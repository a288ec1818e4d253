// The CUDA kernels in resetlstm._native, on device arrays of any DLPack producer that can also
// allocate (torch CUDA tensors, CuPy arrays):
//
//   forward_cuda(inputs, kernel, recurrent_kernel, bias, resets=None, mask=None, h0=None,
//                c0=None, time_major=False, training=True, allow_tf32=False, stream=None,
//                recurrent_dropout_mask=None)
//       -> (outputs, h_T, c_T, gates, cell_states)
//   backward_cuda(inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0, outputs, gates,
//                 cell_states, d_outputs, d_h, d_c, time_major=False, allow_tf32=False,
//                 stream=None, recurrent_dropout_mask=None)
//       -> (d_inputs, d_kernel, d_recurrent_kernel, d_bias, d_h0, d_c0)
//   cuda_available() -> bool, cuda_unavailable_reason() -> str,
//   cuda_dtype_unsupported_reason(dtype, major, minor) -> str
//
// The same arguments as forward/backward (numpy, CPU), num_threads aside; float32, float64,
// float16 and bfloat16 (half types: float32 accumulation and cell state, see recurrence_cuda.h).
// Results and the workspace are allocated with the library of `inputs` on its device; the work
// is enqueued on `stream` (an int cudaStream_t; default: that library's current stream) without
// host synchronisation. Arguments are read through __dlpack__ (C-contiguous, on one CUDA device).
//
// Every argument (kind, device, dtype, shape, contiguity) is validated from its DLPack metadata
// before anything needs a GPU (CUDA runtime, cuBLAS, the array library's allocator), so the
// error paths run, and are tested, on machines without one.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

namespace py = pybind11;

#if RLSTM_WITH_CUDA

#include <unistd.h>

#include <cstring>
#include <optional>
#include <vector>

#include "../kernels/recurrence_cuda.h"
#include "../kernels/recurrence_shapes.h"
#include "dlpack_abi.h"

namespace resetlstm {
namespace {

using dlpack::DLManagedTensor;
using OptObject = std::optional<py::object>;

// ---- reading DLPack arrays ----------------------------------------------------------------------

// A device array borrowed through DLPack: the capsule stays alive (its destructor returns the
// export to the producer) as long as this object.
struct DeviceArray {
  py::object capsule;
  void* data = nullptr;
  std::vector<int64_t> shape;
  dlpack::DLDataType dtype{};
  int device = -1;

  Shape shape_for_check() const {
    Shape s;
    s.rank = static_cast<int>(shape.size());
    s.dims = shape;
    return s;
  }
};

std::string type_name(const py::handle& obj) {
  return py::str(py::type::handle_of(obj).attr("__qualname__")).cast<std::string>();
}

std::string module_of(const py::handle& obj) {
  return py::str(py::type::handle_of(obj).attr("__module__")).cast<std::string>();
}

// DLPack's stream argument: our stream, with the legacy default stream spelled 1 (0 is invalid).
int64_t dlpack_stream(int64_t stream) { return stream == 0 ? 1 : stream; }

// Raises unless `obj` is a DLPack array in CUDA (or managed) memory.
void require_cuda_array(const py::handle& obj, const char* name) {
  if (!py::hasattr(obj, "__dlpack__") || !py::hasattr(obj, "__dlpack_device__"))
    throw py::type_error(std::string("reset_lstm (CUDA): `") + name +
                         "` must be a CUDA array with DLPack support (a torch CUDA tensor or a "
                         "CuPy array), got " + type_name(obj));
  const auto dev = obj.attr("__dlpack_device__")().cast<std::pair<int, int>>();
  if (dev.first != dlpack::kDLCUDA && dev.first != dlpack::kDLCUDAManaged)
    throw py::value_error(std::string("reset_lstm (CUDA): `") + name +
                          "` is not in CUDA device memory (DLPack device type " +
                          std::to_string(dev.first) +
                          "); move it to the GPU, or use resetlstm._native.forward/backward for "
                          "CPU arrays");
}

// Compact row-major, as numpy and torch define it: the strides of size-1 dimensions do not
// matter, and an array with a size-0 dimension has no elements to lay out (producers export
// such dimensions with arbitrary strides).
bool is_c_contiguous(const std::vector<int64_t>& shape, const int64_t* strides) {
  for (int64_t d : shape)
    if (d == 0) return true;
  int64_t expected = 1;
  for (size_t k = shape.size(); k-- > 0;) {
    if (shape[k] != 1 && strides[k] != expected) return false;
    expected *= shape[k];
  }
  return true;
}

DeviceArray import_array(py::handle obj_in, const char* name, int64_t stream) {
  py::object obj = py::reinterpret_borrow<py::object>(obj_in);
  // torch refuses to export tensors that require grad; the kernels only read them.
  if (module_of(obj).rfind("torch", 0) == 0 && py::hasattr(obj, "requires_grad") &&
      obj.attr("requires_grad").cast<bool>())
    obj = obj.attr("detach")();
  require_cuda_array(obj, name);
  DeviceArray a;
  a.capsule = obj.attr("__dlpack__")(py::arg("stream") = dlpack_stream(stream));
  PyObject* cap = a.capsule.ptr();
  if (!PyCapsule_IsValid(cap, "dltensor"))
    throw py::type_error(std::string("reset_lstm (CUDA): `") + name +
                         "`.__dlpack__() did not return a 'dltensor' capsule");
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
  const dlpack::DLTensor& t = managed->dl_tensor;
  a.device = t.device.device_id;
  a.dtype = t.dtype;
  a.shape.assign(t.shape, t.shape + t.ndim);
  a.data = static_cast<char*>(t.data) + t.byte_offset;
  if (t.dtype.lanes != 1)
    throw py::value_error(std::string("reset_lstm (CUDA): `") + name + "` has vector lanes");
  if (t.strides && !is_c_contiguous(a.shape, t.strides))
    throw py::value_error(std::string("reset_lstm (CUDA): `") + name +
                          "` must be C-contiguous (.contiguous() in torch, "
                          "cupy.ascontiguousarray)");
  return a;
}

std::optional<DeviceArray> import_optional(const OptObject& obj, const char* name,
                                           int64_t stream) {
  if (!obj || obj->is_none()) return std::nullopt;
  return import_array(*obj, name, stream);
}

bool is_float(const dlpack::DLDataType& t, int bits) {
  return t.code == dlpack::kDLFloat && t.bits == bits;
}

bool is_bfloat16(const dlpack::DLDataType& t) {
  return t.code == dlpack::kDLBfloat && t.bits == 16;
}

// Runs fn(T{}) with the kernels' storage type for the (validated) float dtype of `inputs`.
template <typename Fn>
py::tuple with_storage_type(const dlpack::DLDataType& t, Fn&& fn) {
  if (is_float(t, 32)) return fn(float{});
  if (is_float(t, 64)) return fn(double{});
  if (is_float(t, 16)) return fn(cpu::f16{});
  return fn(cpu::bf16{});
}

std::string dtype_str(const dlpack::DLDataType& t) {
  const char* kind = t.code == dlpack::kDLFloat   ? "float"
                     : t.code == dlpack::kDLInt   ? "int"
                     : t.code == dlpack::kDLUInt  ? "uint"
                     : t.code == dlpack::kDLBool  ? "bool"
                     : t.code == dlpack::kDLBfloat ? "bfloat"
                                                   : "code";
  return std::string(kind) + std::to_string(t.bits);
}

void check_same(const DeviceArray& ref, const std::optional<DeviceArray>& a, const char* name) {
  if (!a) return;
  if (a->device != ref.device)
    throw py::value_error(std::string("reset_lstm (CUDA): `") + name + "` is on CUDA device " +
                          std::to_string(a->device) + " but `inputs` on device " +
                          std::to_string(ref.device));
  if (a->dtype.code != ref.dtype.code || a->dtype.bits != ref.dtype.bits)
    throw py::value_error(std::string("reset_lstm (CUDA): `") + name + "` has dtype " +
                          dtype_str(a->dtype) + " but `inputs` has " + dtype_str(ref.dtype) +
                          "; all float arguments must share one dtype");
}

void check_flags(const DeviceArray& ref, const std::optional<DeviceArray>& a, const char* name) {
  if (!a) return;
  if (a->device != ref.device)
    throw py::value_error(std::string("reset_lstm (CUDA): `") + name + "` is on CUDA device " +
                          std::to_string(a->device) + " but `inputs` on device " +
                          std::to_string(ref.device));
  if (a->dtype.code != dlpack::kDLBool || a->dtype.bits != 8)
    throw py::value_error(std::string("reset_lstm (CUDA): `") + name +
                          "` must be a bool array, got " + dtype_str(a->dtype));
}

Shape shape_of(const std::optional<DeviceArray>& a) {
  return a ? a->shape_for_check() : Shape::absent();
}

template <typename P>
P* ptr(const std::optional<DeviceArray>& a) {
  return a ? static_cast<P*>(a->data) : nullptr;
}

// ---- allocating with the library of `inputs` ---------------------------------------------------

enum class Library { kTorch, kCuPy };

Library library_of(const py::handle& inputs) {
  const std::string mod = module_of(inputs);
  if (mod.rfind("torch", 0) == 0) return Library::kTorch;
  if (mod.rfind("cupy", 0) == 0) return Library::kCuPy;
  throw py::type_error(
      "reset_lstm (CUDA): results are allocated with the library of `inputs`; torch CUDA "
      "tensors and CuPy arrays are supported, got " + type_name(inputs));
}

// Makes the device of a CuPy array current for the guard's lifetime.
class CuPyDeviceScope {
 public:
  explicit CuPyDeviceScope(const py::handle& array) : device_(array.attr("device")) {
    device_.attr("__enter__")();
  }
  ~CuPyDeviceScope() {
    try {
      device_.attr("__exit__")(py::none(), py::none(), py::none());
    } catch (...) {  // never throw from a destructor
    }
  }

 private:
  py::object device_;
};

// The library's current stream on the device of `inputs`.
int64_t current_stream(Library lib, const py::handle& inputs) {
  if (lib == Library::kTorch)
    return py::module_::import("torch")
        .attr("cuda")
        .attr("current_stream")(inputs.attr("device"))
        .attr("cuda_stream")
        .cast<int64_t>();
  CuPyDeviceScope scope(inputs);
  return py::module_::import("cupy")
      .attr("cuda")
      .attr("get_current_stream")()
      .attr("ptr")
      .cast<int64_t>();
}

// An uninitialised array of `inputs`' dtype on its device.
py::object empty_like(Library lib, const py::handle& inputs, const std::vector<int64_t>& shape) {
  py::tuple dims(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) dims[i] = py::int_(shape[i]);
  if (lib == Library::kTorch) return inputs.attr("new_empty")(dims);
  CuPyDeviceScope scope(inputs);
  return py::module_::import("cupy").attr("empty")(dims, py::arg("dtype") = inputs.attr("dtype"));
}

// ---- availability ------------------------------------------------------------------------------

// Adds pip's cuBLAS locations on sys.path to the loader's candidates (once).
void register_cublas_candidates() {
  static bool done = false;
  if (done) return;
  done = true;
  std::vector<std::string> paths;
  for (const py::handle& entry : py::module_::import("sys").attr("path")) {
    if (!py::isinstance<py::str>(entry)) continue;
    const std::string dir = entry.cast<std::string>();
    if (dir.empty()) continue;
    for (const char* rel : {"/nvidia/cu13/lib/libcublas.so.13",
                            "/nvidia/cublas/lib/libcublas.so.13",
                            "/nvidia/cublas/lib/libcublas.so.12"}) {
      const std::string path = dir + rel;
      if (access(path.c_str(), R_OK) == 0) paths.push_back(path);
    }
  }
  std::vector<const char*> c_paths;
  for (const std::string& p : paths) c_paths.push_back(p.c_str());
  cuda::add_cublas_candidates(c_paths.data(), static_cast<int>(c_paths.size()));
}

std::string unavailable_reason() {
  register_cublas_candidates();
  const char* reason = nullptr;
  if (cuda::available(&reason)) return "";
  return reason ? reason : "unknown reason";
}

void require_cuda() {
  static bool ok = false;  // once available, stays available
  if (ok) return;
  const std::string why = unavailable_reason();
  if (!why.empty()) throw std::runtime_error("reset_lstm (CUDA): CUDA is not available: " + why);
  ok = true;
}

void raise_on_error(const cuda::Status& s) {
  if (!s.ok) throw std::runtime_error(std::string("reset_lstm (CUDA): ") + s.message);
}

std::vector<int64_t> seq_shape(const cpu::Dims& d, int64_t width) {
  return d.time_major ? std::vector<int64_t>{d.T, d.B, width}
                      : std::vector<int64_t>{d.B, d.T, width};
}

// Stream and the validated float arrays common to both directions (the library of `inputs` is
// looked up after validation, for allocating the results).
struct Common {
  cpu::CellType cell = cpu::CellType::kLstm;
  Library lib = Library::kTorch;
  int64_t stream = 0;
  cpu::Dims dims;
  DeviceArray inputs;
  std::optional<DeviceArray> kernel, rkernel, bias, resets, mask, h0, c0, rdrop;
};

Common import_common(cpu::CellType cell, const py::object& inputs, const py::object& kernel,
                     const py::object& rkernel, const py::object& bias, const OptObject& resets,
                     const OptObject& mask, const OptObject& h0, const OptObject& c0,
                     const OptObject& rdrop, bool time_major, const OptObject& stream) {
  require_cuda_array(inputs, "inputs");  // before asking its library for a stream
  const bool lstm = cell == cpu::CellType::kLstm;
  const char* h0_name = lstm ? "initial_state[0] (h)" : "initial_state";
  Common c;
  c.cell = cell;
  c.stream = stream && !stream->is_none() ? stream->cast<int64_t>()
                                          : current_stream(library_of(inputs), inputs);
  c.inputs = import_array(inputs, "inputs", c.stream);
  c.kernel = import_array(kernel, "kernel", c.stream);
  c.rkernel = import_array(rkernel, "recurrent_kernel", c.stream);
  c.bias = import_array(bias, "bias", c.stream);
  c.resets = import_optional(resets, "resets", c.stream);
  c.mask = import_optional(mask, "mask", c.stream);
  c.h0 = import_optional(h0, h0_name, c.stream);
  c.c0 = import_optional(c0, "initial_state[1] (c)", c.stream);
  c.rdrop = import_optional(rdrop, "recurrent_dropout_mask", c.stream);
  if (!is_float(c.inputs.dtype, 32) && !is_float(c.inputs.dtype, 64) &&
      !is_float(c.inputs.dtype, 16) && !is_bfloat16(c.inputs.dtype))
    throw py::value_error(std::string(op_name(cell)) + " (CUDA): `inputs` must be float32, "
                          "float64, float16 or bfloat16, got " + dtype_str(c.inputs.dtype));
  check_same(c.inputs, c.kernel, "kernel");
  check_same(c.inputs, c.rkernel, "recurrent_kernel");
  check_same(c.inputs, c.bias, "bias");
  check_same(c.inputs, c.h0, h0_name);
  check_same(c.inputs, c.c0, "initial_state[1] (c)");
  check_same(c.inputs, c.rdrop, "recurrent_dropout_mask");
  check_flags(c.inputs, c.resets, "resets");
  check_flags(c.inputs, c.mask, "mask");
  if (lstm && c.h0.has_value() != c.c0.has_value())
    throw py::value_error("reset_lstm: `initial_state` needs both h0 and c0, or neither");
  RecurrenceShapes s{c.inputs.shape_for_check(), shape_of(c.kernel), shape_of(c.rkernel),
                     shape_of(c.bias), shape_of(c.resets), shape_of(c.mask), shape_of(c.h0),
                     shape_of(c.c0),     shape_of(c.rdrop)};
  const std::string error = check_shapes(s, cell, time_major, &c.dims);
  if (!error.empty()) throw py::value_error(std::string(op_name(cell)) + ": " + error);
  return c;
}

// After validation: the GPU must be usable, and results are allocated with the library of
// `inputs`.
void prepare_launch(Common& c, const py::object& inputs) {
  require_cuda();
  c.lib = library_of(inputs);
}

cuda::LaunchOptions options_for(const Common& c, bool allow_tf32) {
  cuda::LaunchOptions o;
  o.stream = reinterpret_cast<void*>(static_cast<intptr_t>(c.stream));
  o.device = c.inputs.device;
  o.allow_tf32 = allow_tf32;
  return o;
}

template <typename T>
py::tuple forward_typed(const py::object& inputs, Common& c, bool training, bool allow_tf32) {
  const cpu::Dims& d = c.dims;
  const cpu::CellShape cs = cpu::cell_shape(c.cell);
  const std::vector<int64_t> none{0};
  py::object outputs = empty_like(c.lib, inputs, seq_shape(d, d.H));
  py::object h = empty_like(c.lib, inputs, {d.B, d.H});
  py::object cst = empty_like(c.lib, inputs, cs.cell_state ? std::vector<int64_t>{d.B, d.H} : none);
  py::object gates = empty_like(c.lib, inputs, training ? seq_shape(d, cs.saved * d.H) : none);
  py::object cells =
      empty_like(c.lib, inputs, training && cs.cell_state ? seq_shape(d, d.H) : none);
  py::object workspace = empty_like(c.lib, inputs, {cuda::forward_workspace_size<T>(d, training)});
  const auto y_a = import_array(outputs, "outputs", c.stream), h_a = import_array(h, "h", c.stream),
             c_a = import_array(cst, "c", c.stream), g_a = import_array(gates, "gates", c.stream),
             cell_a = import_array(cells, "cells", c.stream),
             w_a = import_array(workspace, "workspace", c.stream);

  cpu::ForwardArgs<T> a;
  a.dims = d;
  a.inputs = static_cast<const T*>(c.inputs.data);
  a.kernel = ptr<const T>(c.kernel);
  a.recurrent_kernel = ptr<const T>(c.rkernel);
  a.bias = ptr<const T>(c.bias);
  a.resets = ptr<const bool>(c.resets);
  a.mask = ptr<const bool>(c.mask);
  a.h0 = ptr<const T>(c.h0);
  a.recurrent_dropout_mask = ptr<const T>(c.rdrop);
  a.outputs = static_cast<T*>(y_a.data);
  a.h_final = static_cast<T*>(h_a.data);
  a.gates = training ? static_cast<T*>(g_a.data) : nullptr;
  if (cs.cell_state) {
    a.c0 = ptr<const T>(c.c0);
    a.c_final = static_cast<T*>(c_a.data);
    a.cells = training ? static_cast<T*>(cell_a.data) : nullptr;
  }
  cuda::Status status;
  {
    py::gil_scoped_release release;
    status = cuda::forward<T>(a, w_a.data, options_for(c, allow_tf32));
  }
  raise_on_error(status);
  if (!cs.cell_state) return py::make_tuple(outputs, h, gates);
  return py::make_tuple(outputs, h, cst, gates, cells);
}

template <typename T>
py::tuple backward_typed(const py::object& inputs, Common& c, const DeviceArray& outputs,
                         const DeviceArray& gates, const std::optional<DeviceArray>& cells,
                         const std::optional<DeviceArray>& d_outputs,
                         const std::optional<DeviceArray>& d_h,
                         const std::optional<DeviceArray>& d_c, bool allow_tf32) {
  const cpu::Dims& d = c.dims;
  const cpu::CellShape cs = cpu::cell_shape(c.cell);
  const int64_t GH = cs.gates * d.H;
  py::object dx = empty_like(c.lib, inputs, seq_shape(d, d.I));
  py::object dk = empty_like(c.lib, inputs, {d.I, GH});
  py::object drk = empty_like(c.lib, inputs, {d.H, GH});
  py::object db = empty_like(c.lib, inputs, cs.bias_rows > 1 ? std::vector<int64_t>{2, GH}
                                                             : std::vector<int64_t>{GH});
  py::object dh0 = empty_like(c.lib, inputs, {d.B, d.H});
  py::object dc0 = empty_like(c.lib, inputs, cs.cell_state ? std::vector<int64_t>{d.B, d.H}
                                                           : std::vector<int64_t>{0});
  py::object workspace =
      empty_like(c.lib, inputs, {cuda::backward_workspace_size<T>(d, c.mask.has_value())});
  const auto dx_a = import_array(dx, "d_inputs", c.stream),
             dk_a = import_array(dk, "d_kernel", c.stream),
             drk_a = import_array(drk, "d_recurrent_kernel", c.stream),
             db_a = import_array(db, "d_bias", c.stream),
             dh0_a = import_array(dh0, "d_h0", c.stream),
             dc0_a = import_array(dc0, "d_c0", c.stream),
             w_a = import_array(workspace, "workspace", c.stream);

  cpu::BackwardArgs<T> a;
  a.dims = d;
  a.inputs = static_cast<const T*>(c.inputs.data);
  a.kernel = ptr<const T>(c.kernel);
  a.recurrent_kernel = ptr<const T>(c.rkernel);
  a.resets = ptr<const bool>(c.resets);
  a.mask = ptr<const bool>(c.mask);
  a.h0 = ptr<const T>(c.h0);
  a.recurrent_dropout_mask = ptr<const T>(c.rdrop);
  a.outputs = static_cast<const T*>(outputs.data);
  a.gates = static_cast<const T*>(gates.data);
  a.d_outputs = ptr<const T>(d_outputs);
  a.d_h_final = ptr<const T>(d_h);
  a.d_inputs = static_cast<T*>(dx_a.data);
  a.d_kernel = static_cast<T*>(dk_a.data);
  a.d_recurrent_kernel = static_cast<T*>(drk_a.data);
  a.d_bias = static_cast<T*>(db_a.data);
  a.d_h0 = static_cast<T*>(dh0_a.data);
  if (cs.cell_state) {
    a.c0 = ptr<const T>(c.c0);
    a.cells = ptr<const T>(cells);
    a.d_c_final = ptr<const T>(d_c);
    a.d_c0 = static_cast<T*>(dc0_a.data);
  }
  cuda::Status status;
  {
    py::gil_scoped_release release;
    status = cuda::backward<T>(a, w_a.data, options_for(c, allow_tf32));
  }
  raise_on_error(status);
  if (!cs.cell_state) return py::make_tuple(dx, dk, drk, db, dh0);
  return py::make_tuple(dx, dk, drk, db, dh0, dc0);
}

// The backward binding of any cell: validates what the forward left and the upstream gradients
// (cells, d_c: cells with a cell state only), then launches.
py::tuple backward_any(cpu::CellType cell, const py::object& inputs, const py::object& kernel,
                       const py::object& recurrent_kernel, const py::object& bias,
                       const OptObject& resets, const OptObject& mask, const OptObject& h0,
                       const OptObject& c0, const py::object& outputs, const py::object& gates,
                       const OptObject& cells, const OptObject& d_outputs, const OptObject& d_h,
                       const OptObject& d_c, bool time_major, bool allow_tf32,
                       const OptObject& stream, const OptObject& recurrent_dropout_mask) {
  Common c = import_common(cell, inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0,
                           recurrent_dropout_mask, time_major, stream);
  const cpu::Dims& d = c.dims;
  std::optional<DeviceArray> y = import_array(outputs, "outputs", c.stream),
                             g = import_array(gates, "gates", c.stream),
                             cl = import_optional(cells, "cell_states", c.stream),
                             dy = import_optional(d_outputs, "d_outputs", c.stream),
                             dh = import_optional(d_h, "d_h", c.stream),
                             dc = import_optional(d_c, "d_c", c.stream);
  if (cpu::cell_shape(cell).cell_state && !cl)
    throw py::value_error("reset_lstm backward (CUDA): `cell_states` is required (the "
                          "forward's, training=True)");
  using Named = std::pair<const std::optional<DeviceArray>*, const char*>;
  for (auto [a, name] : {Named{&y, "outputs"}, Named{&g, "gates"}, Named{&cl, "cell_states"},
                         Named{&dy, "d_outputs"}, Named{&dh, "d_h"}, Named{&dc, "d_c"}})
    check_same(c.inputs, *a, name);
  BackwardShapes bs;
  bs.outputs = shape_of(y);
  bs.gates = shape_of(g);
  bs.cells = shape_of(cl);
  bs.d_outputs = shape_of(dy);
  bs.d_h = shape_of(dh);
  bs.d_c = shape_of(dc);
  const std::string error = check_backward_shapes(bs, d);
  if (!error.empty())
    throw py::value_error(std::string(op_name(cell)) + " backward (CUDA): " + error);
  prepare_launch(c, inputs);
  return with_storage_type(c.inputs.dtype, [&](auto t) {
    return backward_typed<decltype(t)>(inputs, c, *y, *g, cl, dy, dh, dc, allow_tf32);
  });
}

cpu::CellType gru_cell_type(bool reset_after) {
  return reset_after ? cpu::CellType::kGru : cpu::CellType::kGruResetBefore;
}

}  // namespace

void register_cuda_functions(py::module_& m) {
  m.def(
      "forward_cuda",
      [](const py::object& inputs, const py::object& kernel, const py::object& recurrent_kernel,
         const py::object& bias, const OptObject& resets, const OptObject& mask,
         const OptObject& h0, const OptObject& c0, bool time_major, bool training,
         bool allow_tf32, const OptObject& stream, const OptObject& recurrent_dropout_mask) {
        Common c = import_common(cpu::CellType::kLstm, inputs, kernel, recurrent_kernel, bias,
                                 resets, mask, h0, c0, recurrent_dropout_mask, time_major, stream);
        prepare_launch(c, inputs);
        return with_storage_type(c.inputs.dtype, [&](auto t) {
          return forward_typed<decltype(t)>(inputs, c, training, allow_tf32);
        });
      },
      py::arg("inputs"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("resets") = py::none(), py::arg("mask") = py::none(), py::arg("h0") = py::none(),
      py::arg("c0") = py::none(), py::arg("time_major") = false, py::arg("training") = true,
      py::arg("allow_tf32") = false, py::arg("stream") = py::none(),
      py::arg("recurrent_dropout_mask") = py::none(),
      "Forward over a sequence on the GPU (torch CUDA tensors or CuPy arrays). Returns (outputs, "
      "h_T, c_T, gates, cell_states) of the library of `inputs`; gates and cell_states are empty "
      "when training=False. Enqueued on `stream` (int cudaStream_t; default: the library's "
      "current stream), no host synchronisation. allow_tf32: float32 GEMMs may use TF32. "
      "float16 / bfloat16 arrays run tensor-core GEMMs with float32 accumulation and a float32 "
      "cell state; bfloat16 needs compute capability 8.0+.");
  m.def(
      "backward_cuda",
      [](const py::object& inputs, const py::object& kernel, const py::object& recurrent_kernel,
         const py::object& bias, const OptObject& resets, const OptObject& mask,
         const OptObject& h0, const OptObject& c0, const py::object& outputs,
         const py::object& gates, const py::object& cells, const OptObject& d_outputs,
         const OptObject& d_h, const OptObject& d_c, bool time_major, bool allow_tf32,
         const OptObject& stream, const OptObject& recurrent_dropout_mask) {
        return backward_any(cpu::CellType::kLstm, inputs, kernel, recurrent_kernel, bias,
                            resets, mask, h0, c0, outputs, gates, cells, d_outputs, d_h, d_c,
                            time_major, allow_tf32, stream, recurrent_dropout_mask);
      },
      py::arg("inputs"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("resets"), py::arg("mask"), py::arg("h0"), py::arg("c0"), py::arg("outputs"),
      py::arg("gates"), py::arg("cell_states"), py::arg("d_outputs"), py::arg("d_h"),
      py::arg("d_c"), py::arg("time_major") = false, py::arg("allow_tf32") = false,
      py::arg("stream") = py::none(), py::arg("recurrent_dropout_mask") = py::none(),
      "Backward (BPTT) on the GPU. Returns (d_inputs, d_kernel, d_recurrent_kernel, d_bias, d_h0, "
      "d_c0) of the library of `inputs`.");
  m.def(
      "gru_forward_cuda",
      [](const py::object& inputs, const py::object& kernel, const py::object& recurrent_kernel,
         const py::object& bias, const OptObject& resets, const OptObject& mask,
         const OptObject& h0, bool time_major, bool training, bool allow_tf32,
         const OptObject& stream, const OptObject& recurrent_dropout_mask, bool reset_after) {
        Common c = import_common(gru_cell_type(reset_after), inputs, kernel, recurrent_kernel,
                                 bias, resets, mask, h0, std::nullopt, recurrent_dropout_mask,
                                 time_major, stream);
        prepare_launch(c, inputs);
        return with_storage_type(c.inputs.dtype, [&](auto t) {
          return forward_typed<decltype(t)>(inputs, c, training, allow_tf32);
        });
      },
      py::arg("inputs"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("resets") = py::none(), py::arg("mask") = py::none(), py::arg("h0") = py::none(),
      py::arg("time_major") = false, py::arg("training") = true, py::arg("allow_tf32") = false,
      py::arg("stream") = py::none(), py::arg("recurrent_dropout_mask") = py::none(),
      py::arg("reset_after") = true,
      "GRU forward on the GPU (as forward_cuda; Keras layout, bias [2, 3H] with reset_after, "
      "[3H] without). Returns (outputs, h_T, gates).");
  m.def(
      "gru_backward_cuda",
      [](const py::object& inputs, const py::object& kernel, const py::object& recurrent_kernel,
         const py::object& bias, const OptObject& resets, const OptObject& mask,
         const OptObject& h0, const py::object& outputs, const py::object& gates,
         const OptObject& d_outputs, const OptObject& d_h, bool time_major, bool allow_tf32,
         const OptObject& stream, const OptObject& recurrent_dropout_mask, bool reset_after) {
        return backward_any(gru_cell_type(reset_after), inputs, kernel, recurrent_kernel, bias,
                            resets, mask, h0, std::nullopt, outputs, gates, std::nullopt,
                            d_outputs, d_h, std::nullopt, time_major, allow_tf32, stream,
                            recurrent_dropout_mask);
      },
      py::arg("inputs"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("resets"), py::arg("mask"), py::arg("h0"), py::arg("outputs"), py::arg("gates"),
      py::arg("d_outputs"), py::arg("d_h"), py::arg("time_major") = false,
      py::arg("allow_tf32") = false, py::arg("stream") = py::none(),
      py::arg("recurrent_dropout_mask") = py::none(), py::arg("reset_after") = true,
      "GRU backward on the GPU. Returns (d_inputs, d_kernel, d_recurrent_kernel, d_bias, d_h0).");
  m.def(
      "cuda_available", [] { return unavailable_reason().empty(); },
      "Whether forward_cuda/backward_cuda can run: NVIDIA driver (R580+ for this CUDA 13 build), "
      "a CUDA device and cuBLAS (libcublas.so.13 or .so.12) present. See "
      "cuda_unavailable_reason().");
  m.def(
      "cuda_dtype_unsupported_reason",
      [](const std::string& dtype, int major, int minor) {
        return std::string(cuda::dtype_unsupported_reason(dtype.c_str(), major, minor));
      },
      py::arg("dtype"), py::arg("major"), py::arg("minor"),
      "Why `dtype` cannot run on a GPU of compute capability major.minor ('' when it can).");
  m.def("cuda_unavailable_reason", &unavailable_reason,
        "Why the CUDA path cannot run here ('' when it can).");
  m.def(
      "cuda_cublas_library", [] { return std::string(cuda::cublas_library()); },
      "The cuBLAS library the CUDA path loaded ('' before its first use).");
}

}  // namespace resetlstm

#else  // !RLSTM_WITH_CUDA

namespace resetlstm {

void register_cuda_functions(py::module_& m) {
  static const char* kReason =
      "resetlstm was built without CUDA (RESETLSTM_CUDA=OFF, or no nvcc at build time)";
  auto unavailable = [](py::args, py::kwargs) -> py::object {
    throw std::runtime_error(std::string("reset_lstm (CUDA): ") + kReason);
  };
  m.def("forward_cuda", unavailable, "Not available: built without CUDA.");
  m.def("backward_cuda", unavailable, "Not available: built without CUDA.");
  m.def("gru_forward_cuda", unavailable, "Not available: built without CUDA.");
  m.def("gru_backward_cuda", unavailable, "Not available: built without CUDA.");
  m.def("cuda_available", [] { return false; }, "False: built without CUDA.");
  m.def("cuda_unavailable_reason", [] { return std::string(kReason); });
  m.def("cuda_dtype_unsupported_reason", [](const std::string&, int, int) {
    return std::string(kReason);
  });
  m.def("cuda_cublas_library", [] { return std::string(); });
}

}  // namespace resetlstm

#endif  // RLSTM_WITH_CUDA
