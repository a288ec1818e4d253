// pybind11 module resetlstm._native: the framework-free kernels on numpy arrays, without
// TensorFlow. Used to test the kernels directly and on machines without TF.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdlib>
#include <locale>
#include <new>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>

#include "../kernels/cpu_pool.h"
#include "../kernels/gate_layout.h"
#include "../kernels/recurrence_cpu.h"
#include "../kernels/recurrence_shapes.h"
#include "openmp_team.h"

namespace py = pybind11;

namespace resetlstm {
// forward_cuda, backward_cuda, cuda_available, ... (native_cuda.cc; stubs in a CPU-only build).
void register_cuda_functions(py::module_& m);

namespace {

// The process's worker pool, started on the first multi-threaded call with one worker per CPU
// but the caller's, and kept (never destroyed: its threads may be waiting when the interpreter
// exits). A forked child has none of its parent's threads (DataLoader workers, DDP and
// multiprocessing start processes so), so it starts a pool of its own and leaves the parent's
// copy untouched; the lookup's mutex is held across fork() so the child never inherits it
// locked.
struct ProcessPool {
  std::mutex mu;
  cpu::WorkerPool* pool = nullptr;

  static ProcessPool& get() {
    static ProcessPool* state = [] {
      auto* s = new ProcessPool;
      pthread_atfork([] { get().mu.lock(); }, [] { get().mu.unlock(); },
                     [] {
                       get().pool = nullptr;  // the parent's workers do not exist here
                       get().mu.unlock();
                     });
      return s;
    }();
    return *state;
  }
  static cpu::WorkerPool& pool_for_this_process() {
    ProcessPool& s = get();
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.pool == nullptr) {
      const int cpus = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
      s.pool = new cpu::WorkerPool(cpus - 1);
    }
    return *s.pool;
  }
};

// num_threads tasks' worth of parallelism (0: one per CPU) on the process's pool.
// num_threads < 0 reports |num_threads| threads but runs the tasks one after another on the
// caller, as a busy pool may: the kernels must never need two tasks running at once.
class PoolRunner final : public cpu::TaskRunner {
 public:
  explicit PoolRunner(int threads)
      : threads_(threads > 0   ? threads
                 : threads < 0 ? -threads
                               : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))),
        serial_(threads < 0) {}
  int num_threads() const override { return threads_; }
  bool serial() const { return serial_ || threads_ <= 1; }
  void run(int64_t num_tasks, cpu::FunctionRef<void(int64_t)> task) const override {
    if (serial() || num_tasks <= 1) {
      for (int64_t i = 0; i < num_tasks; ++i) task(i);
      return;
    }
    ProcessPool::pool_for_this_process().run(num_tasks, threads_, task);
  }

 private:
  int threads_;
  bool serial_;
};

// Runs one kernel call, body(runner), with num_threads as PoolRunner takes it: as one parallel
// region of an attached OpenMP runtime's team (openmp_team.h), else on the process's pool.
void RunKernel(int num_threads, cpu::FunctionRef<void(const cpu::TaskRunner&)> body) {
  const PoolRunner pool(num_threads);
  if (!pool.serial() && openmp::run_region(pool.num_threads(), body)) return;
  body(pool);
}

// The kernels' scratch memory, kept per calling thread (cpu::thread_buffer): a fresh
// allocation per call would be faulted in page by page every time.
template <typename T>
T* ThreadWorkspace(int64_t elements) {
  struct Workspace;
  return static_cast<T*>(
      cpu::thread_buffer<Workspace>(static_cast<size_t>(std::max<int64_t>(elements, 1)) * sizeof(T)));
}

using OptArray = std::optional<py::array>;

Shape ShapeOf(const OptArray& a) {
  if (!a) return Shape::absent();
  Shape s;
  s.rank = static_cast<int>(a->ndim());
  for (int i = 0; i < s.rank; ++i) s.dims.push_back(a->shape(i));
  return s;
}

// The float arguments must all have the dtype of `inputs`; no silent conversion.
void CheckDtype(const char* op, const py::dtype& want, const OptArray& a, const char* name) {
  if (a && !a->dtype().is(want))
    throw py::value_error(std::string(op) + ": `" + name + "` has dtype " +
                          py::str(a->dtype()).cast<std::string>() + " but `inputs` has " +
                          py::str(want).cast<std::string>() +
                          "; all float arguments must share one dtype");
}

// numpy element type of a kernel storage type: bf16 travels as its 16 bits (uint16), viewed
// from / back to ml_dtypes' bfloat16 at the module boundary.
template <typename T>
struct NumpyOf {
  using type = T;
};
template <>
struct NumpyOf<cpu::bf16> {
  using type = uint16_t;
};

template <typename T>
using Arr = py::array_t<typename NumpyOf<T>::type, py::array::c_style | py::array::forcecast>;

template <typename T, typename Array>
const T* Ptr(const std::optional<Array>& a) {
  return a ? reinterpret_cast<const T*>(a->data()) : nullptr;
}

template <typename T>
T* MutPtr(Arr<T>& a) {
  return reinterpret_cast<T*>(a.mutable_data());
}

// A new C-contiguous array for a result, in memory from the C allocator rather than numpy's:
// numpy asks the kernel for transparent huge pages on large arrays (madvise), and where the
// kernel then compacts memory synchronously on the first touch (the common defrag=madvise
// setting) a large training forward stalls for tens of ms: 120 ms instead of 78 at (256, 50,
// 256, 256) on an AMD EPYC Zen 4 VM. The array owns the memory through a capsule.
template <typename T>
Arr<T> NewArray(const std::vector<py::ssize_t>& shape) {
  size_t count = 1;
  for (auto n : shape) count *= static_cast<size_t>(n);
  const size_t bytes = (std::max<size_t>(count, 1) * sizeof(T) + 63) & ~size_t(63);
  void* data = std::aligned_alloc(64, bytes);
  if (!data) throw std::bad_alloc();
  py::capsule owner(data, [](void* p) { std::free(p); });
  return Arr<T>(shape, reinterpret_cast<typename NumpyOf<T>::type*>(data), owner);
}

template <typename T>
std::optional<Arr<T>> Contig(const OptArray& a) {
  if (!a) return std::nullopt;
  return Arr<T>::ensure(*a);
}

cpu::Dims Validate(const RecurrenceShapes& s, cpu::CellType cell, bool time_major) {
  cpu::Dims d;
  const std::string error = check_shapes(s, cell, time_major, &d);
  if (!error.empty()) throw py::value_error(std::string(op_name(cell)) + ": " + error);
  return d;
}

std::vector<py::ssize_t> SeqShape(const cpu::Dims& d, int64_t width) {
  return d.time_major ? std::vector<py::ssize_t>{d.T, d.B, width}
                      : std::vector<py::ssize_t>{d.B, d.T, width};
}

// One forward call of any cell. Returns (outputs, h_T, c_T, gates, cell_states) for a cell with
// a cell state, else (outputs, h_T, gates); the saved activations are empty when training is
// false.
template <typename T>
py::tuple Forward(cpu::CellType cell, const py::array& inputs, const py::array& kernel,
                  const py::array& rkernel, const py::array& bias, const OptArray& resets,
                  const OptArray& mask, const OptArray& h0, const OptArray& c0,
                  const OptArray& rdrop, bool time_major, bool training, int num_threads) {
  const cpu::CellShape cs = cpu::cell_shape(cell);
  RecurrenceShapes s{ShapeOf(inputs), ShapeOf(kernel), ShapeOf(rkernel), ShapeOf(bias),
                     ShapeOf(resets),  ShapeOf(mask),   ShapeOf(h0),      ShapeOf(c0),
                     ShapeOf(rdrop)};
  if (cs.cell_state && h0.has_value() != c0.has_value())
    throw py::value_error("reset_lstm: `initial_state` needs both h0 and c0, or neither");
  const cpu::Dims d = Validate(s, cell, time_major);
  auto x = Contig<T>(inputs), k = Contig<T>(kernel), rk = Contig<T>(rkernel), b = Contig<T>(bias);
  auto h0a = Contig<T>(h0), c0a = Contig<T>(c0), mda = Contig<T>(rdrop);
  auto ra = Contig<bool>(resets), ma = Contig<bool>(mask);

  const std::vector<py::ssize_t> none{0};
  Arr<T> outputs = NewArray<T>(SeqShape(d, d.H)), h = NewArray<T>({d.B, d.H}),
         c = NewArray<T>(cs.cell_state ? std::vector<py::ssize_t>{d.B, d.H} : none);
  Arr<T> gates = NewArray<T>(training ? SeqShape(d, cs.saved * d.H) : none);
  Arr<T> cells = NewArray<T>(training && cs.cell_state ? SeqShape(d, d.H) : none);
  cpu::ForwardArgs<T> a;
  a.dims = d;
  a.inputs = Ptr<T>(x);
  a.kernel = Ptr<T>(k);
  a.recurrent_kernel = Ptr<T>(rk);
  a.bias = Ptr<T>(b);
  a.resets = Ptr<bool>(ra);
  a.mask = Ptr<bool>(ma);
  a.h0 = Ptr<T>(h0a);
  a.recurrent_dropout_mask = Ptr<T>(mda);
  a.outputs = MutPtr<T>(outputs);
  a.h_final = MutPtr<T>(h);
  a.gates = training ? MutPtr<T>(gates) : nullptr;
  if (cs.cell_state) {
    a.c0 = Ptr<T>(c0a);
    a.c_final = MutPtr<T>(c);
    a.cells = training ? MutPtr<T>(cells) : nullptr;
  }
  T* ws = ThreadWorkspace<T>(cpu::forward_workspace_size<T>(d, training));
  {
    py::gil_scoped_release release;
    RunKernel(num_threads, [&](const cpu::TaskRunner& runner) { cpu::forward<T>(runner, a, ws); });
  }
  if (!cs.cell_state) return py::make_tuple(outputs, h, gates);
  return py::make_tuple(outputs, h, c, gates, cells);
}

// One backward call of any cell: (d_inputs, d_kernel, d_recurrent_kernel, d_bias, d_h0[, d_c0]).
template <typename T>
py::tuple Backward(cpu::CellType cell, const py::array& inputs, const py::array& kernel,
                   const py::array& rkernel, const py::array& bias, const OptArray& resets,
                   const OptArray& mask, const OptArray& h0, const OptArray& c0,
                   const py::array& outputs, const py::array& gates, const OptArray& cells,
                   const OptArray& d_outputs, const OptArray& d_h, const OptArray& d_c,
                   const OptArray& rdrop, bool time_major, int num_threads) {
  const cpu::CellShape cs = cpu::cell_shape(cell);
  RecurrenceShapes s{ShapeOf(inputs), ShapeOf(kernel), ShapeOf(rkernel), ShapeOf(bias),
                     ShapeOf(resets),  ShapeOf(mask),   ShapeOf(h0),      ShapeOf(c0),
                     ShapeOf(rdrop)};
  const cpu::Dims d = Validate(s, cell, time_major);
  BackwardShapes bs;
  bs.outputs = ShapeOf(outputs);
  bs.gates = ShapeOf(gates);
  bs.cells = ShapeOf(cells);
  bs.d_outputs = ShapeOf(d_outputs);
  bs.d_h = ShapeOf(d_h);
  bs.d_c = ShapeOf(d_c);
  const std::string error = check_backward_shapes(bs, d);
  if (!error.empty()) throw py::value_error(std::string(op_name(cell)) + " backward: " + error);

  auto x = Contig<T>(inputs), k = Contig<T>(kernel), rk = Contig<T>(rkernel);
  auto h0a = Contig<T>(h0), c0a = Contig<T>(c0), ya = Contig<T>(outputs), ga = Contig<T>(gates),
       ca = Contig<T>(cells), dya = Contig<T>(d_outputs), dha = Contig<T>(d_h),
       dca = Contig<T>(d_c), mda = Contig<T>(rdrop);
  auto ra = Contig<bool>(resets), ma = Contig<bool>(mask);

  const int64_t GH = cs.gates * d.H;
  const std::vector<py::ssize_t> bias_shape =
      cs.bias_rows > 1 ? std::vector<py::ssize_t>{cs.bias_rows, GH} : std::vector<py::ssize_t>{GH};
  Arr<T> dx = NewArray<T>(SeqShape(d, d.I)), dk = NewArray<T>({d.I, GH}),
         drk = NewArray<T>({d.H, GH}), db = NewArray<T>(bias_shape),
         dh0 = NewArray<T>({d.B, d.H}),
         dc0 = NewArray<T>(cs.cell_state ? std::vector<py::ssize_t>{d.B, d.H}
                                         : std::vector<py::ssize_t>{0});
  cpu::BackwardArgs<T> a;
  a.dims = d;
  a.inputs = Ptr<T>(x);
  a.kernel = Ptr<T>(k);
  a.recurrent_kernel = Ptr<T>(rk);
  a.resets = Ptr<bool>(ra);
  a.mask = Ptr<bool>(ma);
  a.h0 = Ptr<T>(h0a);
  a.recurrent_dropout_mask = Ptr<T>(mda);
  a.outputs = Ptr<T>(ya);
  a.gates = Ptr<T>(ga);
  a.d_outputs = Ptr<T>(dya);
  a.d_h_final = Ptr<T>(dha);
  a.d_inputs = MutPtr<T>(dx);
  a.d_kernel = MutPtr<T>(dk);
  a.d_recurrent_kernel = MutPtr<T>(drk);
  a.d_bias = MutPtr<T>(db);
  a.d_h0 = MutPtr<T>(dh0);
  if (cs.cell_state) {
    a.c0 = Ptr<T>(c0a);
    a.cells = Ptr<T>(ca);
    a.d_c_final = Ptr<T>(dca);
    a.d_c0 = MutPtr<T>(dc0);
  }
  T* ws = ThreadWorkspace<T>(cpu::backward_workspace_size<T>(d, mask.has_value()));
  {
    py::gil_scoped_release release;
    RunKernel(num_threads, [&](const cpu::TaskRunner& runner) { cpu::backward<T>(runner, a, ws); });
  }
  if (!cs.cell_state) return py::make_tuple(dx, dk, drk, db, dh0);
  return py::make_tuple(dx, dk, drk, db, dh0, dc0);
}

bool IsFloat(const py::dtype& dt, char kind_size) {
  return dt.kind() == 'f' && dt.itemsize() == (kind_size == 'f' ? 4 : 8);
}

// ml_dtypes' bfloat16 (the numpy dtype TF and JAX use; numpy has none of its own).
bool IsBfloat16(const py::dtype& dt) {
  return dt.itemsize() == 2 && py::str(dt.attr("name")).cast<std::string>() == "bfloat16";
}

// bfloat16 arrays as their raw 16 bits (uint16) for the bf16 kernels, and back.
OptArray Bits(const OptArray& a) {
  if (!a) return a;
  return py::array(a->attr("view")("uint16"));
}
py::tuple ViewAs(const py::tuple& results, const py::dtype& dt) {
  py::tuple out(results.size());
  for (size_t i = 0; i < results.size(); ++i) out[i] = results[i].attr("view")(dt);
  return out;
}

const char* kFloatTypes = "float32, float64 or bfloat16 (ml_dtypes)";

[[noreturn]] void RefuseDtype(cpu::CellType cell, const py::dtype& dt) {
  throw py::value_error(std::string(op_name(cell)) + ": `inputs` must be " + kFloatTypes +
                        ", got " + py::str(dt).cast<std::string>());
}

// Forward of `cell` in the storage type of `inputs` (every float argument must share it).
py::tuple ForwardAny(cpu::CellType cell, const py::array& inputs, const py::array& kernel,
                     const py::array& recurrent_kernel, const py::array& bias,
                     const OptArray& resets, const OptArray& mask, const OptArray& h0,
                     const OptArray& c0, bool time_major, bool training, int num_threads,
                     const OptArray& recurrent_dropout_mask) {
  const char* op = op_name(cell);
  const bool lstm = cell == cpu::CellType::kLstm;
  const py::dtype dt = inputs.dtype();
  for (auto [a, name] : {std::pair<OptArray, const char*>{kernel, "kernel"},
                         {recurrent_kernel, "recurrent_kernel"}, {bias, "bias"},
                         {h0, lstm ? "initial_state[0] (h)" : "initial_state"},
                         {c0, "initial_state[1] (c)"},
                         {recurrent_dropout_mask, "recurrent_dropout_mask"}})
    CheckDtype(op, dt, a, name);
  if (IsFloat(dt, 'f'))
    return Forward<float>(cell, inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0,
                          recurrent_dropout_mask, time_major, training, num_threads);
  if (IsFloat(dt, 'd'))
    return Forward<double>(cell, inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0,
                           recurrent_dropout_mask, time_major, training, num_threads);
  if (IsBfloat16(dt))
    return ViewAs(Forward<cpu::bf16>(cell, *Bits(inputs), *Bits(kernel), *Bits(recurrent_kernel),
                                     *Bits(bias), resets, mask, Bits(h0), Bits(c0),
                                     Bits(recurrent_dropout_mask), time_major, training,
                                     num_threads),
                  dt);
  RefuseDtype(cell, dt);
}

// Backward of `cell` in the storage type of `inputs`.
py::tuple BackwardAny(cpu::CellType cell, const py::array& inputs, const py::array& kernel,
                      const py::array& recurrent_kernel, const py::array& bias,
                      const OptArray& resets, const OptArray& mask, const OptArray& h0,
                      const OptArray& c0, const py::array& outputs, const py::array& gates,
                      const OptArray& cells, const OptArray& d_outputs, const OptArray& d_h,
                      const OptArray& d_c, bool time_major, int num_threads,
                      const OptArray& recurrent_dropout_mask) {
  const char* op = op_name(cell);
  const bool lstm = cell == cpu::CellType::kLstm;
  const py::dtype dt = inputs.dtype();
  for (auto [a, name] : {std::pair<OptArray, const char*>{kernel, "kernel"},
                         {recurrent_kernel, "recurrent_kernel"}, {bias, "bias"},
                         {h0, lstm ? "initial_state[0] (h)" : "initial_state"},
                         {c0, "initial_state[1] (c)"}, {outputs, "outputs"}, {gates, "gates"},
                         {cells, "cell_states"}, {d_outputs, "d_outputs"}, {d_h, "d_h"},
                         {d_c, "d_c"}, {recurrent_dropout_mask, "recurrent_dropout_mask"}})
    CheckDtype(op, dt, a, name);
  if (IsFloat(dt, 'f'))
    return Backward<float>(cell, inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0,
                           outputs, gates, cells, d_outputs, d_h, d_c, recurrent_dropout_mask,
                           time_major, num_threads);
  if (IsFloat(dt, 'd'))
    return Backward<double>(cell, inputs, kernel, recurrent_kernel, bias, resets, mask, h0, c0,
                            outputs, gates, cells, d_outputs, d_h, d_c, recurrent_dropout_mask,
                            time_major, num_threads);
  if (IsBfloat16(dt))
    return ViewAs(Backward<cpu::bf16>(cell, *Bits(inputs), *Bits(kernel), *Bits(recurrent_kernel),
                                      *Bits(bias), resets, mask, Bits(h0), Bits(c0),
                                      *Bits(outputs), *Bits(gates), Bits(cells), Bits(d_outputs),
                                      Bits(d_h), Bits(d_c), Bits(recurrent_dropout_mask),
                                      time_major, num_threads),
                  dt);
  RefuseDtype(cell, dt);
}

cpu::CellType GruCellType(bool reset_after) {
  return reset_after ? cpu::CellType::kGru : cpu::CellType::kGruResetBefore;
}

// layout::gate_transpose on a C-contiguous 2-D array of 2-, 4- or 8-byte elements (any float
// type: a copy of the bits). Returns a new array of the same dtype.
py::array GateTranspose(const py::array& src, int gates, const std::vector<int>& order,
                        bool to_kernel) {
  const char* op = "gate_transpose";
  if (src.ndim() != 2 || !(src.flags() & py::array::c_style))
    throw std::invalid_argument(std::string(op) + ": `src` must be a C-contiguous 2-D array");
  if (gates < 1 || static_cast<int>(order.size()) != gates)
    throw std::invalid_argument(std::string(op) + ": `order` must hold `gates` entries");
  std::vector<bool> seen(gates, false);
  for (int g : order) {
    if (g < 0 || g >= gates || seen[g])
      throw std::invalid_argument(std::string(op) + ": `order` must be a permutation of "
                                  "0..gates-1");
    seen[g] = true;
  }
  const int64_t rows = src.shape(0), cols = src.shape(1);
  const int64_t blocked = to_kernel ? rows : cols;  // the axis that holds the gate blocks
  if (blocked % gates != 0)
    throw std::invalid_argument(std::string(op) + ": the gate axis (" + std::to_string(blocked) +
                                ") is not a multiple of gates = " + std::to_string(gates));
  const int64_t H = blocked / gates, n = to_kernel ? cols : rows;
  py::array dst(src.dtype(), std::vector<py::ssize_t>{cols, rows});
  const void* in = src.data();
  void* out = dst.mutable_data();
  {
    py::gil_scoped_release release;
    switch (src.itemsize()) {
      case 2:
        layout::gate_transpose(static_cast<const uint16_t*>(in), static_cast<uint16_t*>(out), n,
                               H, gates, order.data(), to_kernel);
        break;
      case 4:
        layout::gate_transpose(static_cast<const uint32_t*>(in), static_cast<uint32_t*>(out), n,
                               H, gates, order.data(), to_kernel);
        break;
      case 8:
        layout::gate_transpose(static_cast<const uint64_t*>(in), static_cast<uint64_t*>(out), n,
                               H, gates, order.data(), to_kernel);
        break;
      default:
        throw std::invalid_argument(std::string(op) + ": elements of 2, 4 or 8 bytes only");
    }
  }
  return dst;
}

}  // namespace
}  // namespace resetlstm

PYBIND11_MODULE(_native, m) {
  using namespace resetlstm;
  m.doc() = "resetlstm kernels on numpy arrays (no TensorFlow).";
  m.def(
      "forward",
      [](const py::array& inputs, const py::array& kernel, const py::array& recurrent_kernel,
         const py::array& bias, const OptArray& resets, const OptArray& mask, const OptArray& h0,
         const OptArray& c0, bool time_major, bool training, int num_threads,
         const OptArray& recurrent_dropout_mask) {
        return ForwardAny(cpu::CellType::kLstm, inputs, kernel, recurrent_kernel, bias, resets,
                          mask, h0, c0, time_major, training, num_threads,
                          recurrent_dropout_mask);
      },
      py::arg("inputs"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("resets") = py::none(), py::arg("mask") = py::none(), py::arg("h0") = py::none(),
      py::arg("c0") = py::none(), py::arg("time_major") = false, py::arg("training") = true,
      py::arg("num_threads") = 0, py::arg("recurrent_dropout_mask") = py::none(),
      "LSTM forward over a sequence (float32, float64, or ml_dtypes.bfloat16: the bf16 kernels, "
      "float32 accumulation and cell state). Returns (outputs, h_T, c_T, gates, cell_states); "
      "gates and cell_states are empty when training=False. recurrent_dropout_mask [B, H]: "
      "every step reads recurrent_dropout_mask * h in the recurrent matmul.");
  m.def(
      "backward",
      [](const py::array& inputs, const py::array& kernel, const py::array& recurrent_kernel,
         const py::array& bias, const OptArray& resets, const OptArray& mask, const OptArray& h0,
         const OptArray& c0, const py::array& outputs, const py::array& gates,
         const py::array& cells, const OptArray& d_outputs, const OptArray& d_h,
         const OptArray& d_c, bool time_major, int num_threads,
         const OptArray& recurrent_dropout_mask) {
        return BackwardAny(cpu::CellType::kLstm, inputs, kernel, recurrent_kernel, bias, resets,
                           mask, h0, c0, outputs, gates, cells, d_outputs, d_h, d_c, time_major,
                           num_threads, recurrent_dropout_mask);
      },
      py::arg("inputs"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("resets"), py::arg("mask"), py::arg("h0"), py::arg("c0"), py::arg("outputs"),
      py::arg("gates"), py::arg("cell_states"), py::arg("d_outputs"), py::arg("d_h"),
      py::arg("d_c"), py::arg("time_major") = false, py::arg("num_threads") = 0,
      py::arg("recurrent_dropout_mask") = py::none(),
      "LSTM backward (BPTT); recurrent_dropout_mask as given to forward. Returns (d_inputs, "
      "d_kernel, d_recurrent_kernel, d_bias, d_h0, d_c0).");
  m.def(
      "gru_forward",
      [](const py::array& inputs, const py::array& kernel, const py::array& recurrent_kernel,
         const py::array& bias, const OptArray& resets, const OptArray& mask, const OptArray& h0,
         bool time_major, bool training, int num_threads, const OptArray& recurrent_dropout_mask,
         bool reset_after) {
        return ForwardAny(GruCellType(reset_after), inputs, kernel, recurrent_kernel, bias, resets,
                          mask, h0, std::nullopt, time_major, training, num_threads,
                          recurrent_dropout_mask);
      },
      py::arg("inputs"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("resets") = py::none(), py::arg("mask") = py::none(), py::arg("h0") = py::none(),
      py::arg("time_major") = false, py::arg("training") = true, py::arg("num_threads") = 0,
      py::arg("recurrent_dropout_mask") = py::none(), py::arg("reset_after") = true,
      "GRU forward over a sequence, Keras layout (kernel [I, 3H], recurrent_kernel [H, 3H], gates "
      "z, r, h; bias [2, 3H] with reset_after=True, [3H] without). Returns (outputs, h_T, gates); "
      "gates (the saved activations) is empty when training=False.");
  m.def(
      "gru_backward",
      [](const py::array& inputs, const py::array& kernel, const py::array& recurrent_kernel,
         const py::array& bias, const OptArray& resets, const OptArray& mask, const OptArray& h0,
         const py::array& outputs, const py::array& gates, const OptArray& d_outputs,
         const OptArray& d_h, bool time_major, int num_threads,
         const OptArray& recurrent_dropout_mask, bool reset_after) {
        return BackwardAny(GruCellType(reset_after), inputs, kernel, recurrent_kernel, bias, resets,
                           mask, h0, std::nullopt, outputs, gates, std::nullopt, d_outputs, d_h,
                           std::nullopt, time_major, num_threads, recurrent_dropout_mask);
      },
      py::arg("inputs"), py::arg("kernel"), py::arg("recurrent_kernel"), py::arg("bias"),
      py::arg("resets"), py::arg("mask"), py::arg("h0"), py::arg("outputs"), py::arg("gates"),
      py::arg("d_outputs"), py::arg("d_h"), py::arg("time_major") = false,
      py::arg("num_threads") = 0, py::arg("recurrent_dropout_mask") = py::none(),
      py::arg("reset_after") = true,
      "GRU backward (BPTT). Returns (d_inputs, d_kernel, d_recurrent_kernel, d_bias, d_h0).");
  m.def("gate_transpose", &GateTranspose, py::arg("src"), py::arg("gates"), py::arg("order"),
        py::arg("to_kernel"),
        "A torch.nn.LSTM / GRU weight [G*H, n] as the kernels' [n, G*H] (to_kernel=True; Keras "
        "gate block j is torch's row block order[j]) or back (to_kernel=False), in one copy.");
  m.def("selected_isa", &cpu::selected_isa, "SIMD instruction set the CPU kernels run with.");
  m.def(
      "use_openmp_runtime",
      [](const std::string& path) {
        const std::string error = openmp::attach(path);
        if (!error.empty()) throw py::value_error("use_openmp_runtime: " + error);
      },
      py::arg("path"),
      "Run the kernels' threads on the team of the OpenMP runtime at `path` (already loaded in "
      "this process, e.g. PyTorch's libgomp) instead of _native's own pool; the PyTorch front "
      "end attaches torch's. Raises ValueError if it is not loaded or not an OpenMP runtime; "
      "'' goes back to the own pool.");
  m.def("openmp_runtime", &openmp::attached,
        "The OpenMP runtime the kernels' threads run on ('' when _native's own pool).");
  m.def(
      "_install_grouping_cpp_locale",
      [] {
        // For tests: a process-wide C++ locale that groups digits ("1,024"), as a library
        // calling std::locale::global(std::locale("en_US.UTF-8")) would install.
        struct Grouping : std::numpunct<char> {
          char do_thousands_sep() const override { return ','; }
          std::string do_grouping() const override { return "\3"; }
        };
        std::locale::global(std::locale(std::locale::classic(), new Grouping));
      },
      "Test hook: sets std::locale::global to a digit-grouping locale (irreversible).");
  m.def(
      "_cpp_global_locale", [] { return std::locale().name(); },
      "Name of the process-wide C++ locale (std::locale::global); 'C' unless some library in the "
      "process changed it. A diagnostic (tools/diagnose_cpp_runtime.py).");
  m.def("compiled_isas", &cpu::compiled_isas, "SIMD instruction sets compiled in.");
  m.def("bf16_gemm", &cpu::bf16_gemm,
        "How bf16 GEMMs run on this CPU: 'avx512_bf16' (vdpbf16ps) or 'emulated'.");
  register_cuda_functions(m);
}
