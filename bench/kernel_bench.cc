// Times the framework-free CPU kernels alone (no TF, no Python), for profiling with perf or
// callgrind:  kernel_bench [--isa avx2|avx512|avx512_bf16|generic] B T I H [threads] [reps]
//             [reset_fraction] [float|bf16]
// (KB_TIME_MAJOR=1 in the environment: time-major layout; KB_CELL=lstm|gru|gru_reset_before:
// the cell, default lstm, its FLOPs counted with its own gate count). --isa caps the kernels' instruction
// set (RESETLSTM_ISA) and fails unless the kernels then run exactly that one.
// Build: tools/dev-build && cmake --build build/dev --target kernel_bench
#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <cstring>
#include <type_traits>
#include <thread>
#include <vector>

#include "cpu_pool.h"
#include "recurrence_cpu.h"

namespace {

// The runner: a pool of `threads` workers kept for the whole run (cpu::WorkerPool, as _native
// keeps one), driven like the TF op's runner (cpu::run_claimed: the caller and up to one
// helper per worker claim the tasks), so that the times compare with the op's own time inside
// TF: threads started per call would add their start-up to every hand-off.
class Runner final : public resetlstm::cpu::TaskRunner {
 public:
  explicit Runner(int n) : n_(n), pool_(n > 1 ? n : 0) {}
  int num_threads() const override { return n_; }
  void run(int64_t tasks, resetlstm::cpu::FunctionRef<void(int64_t)> task) const override {
    resetlstm::cpu::run_claimed(
        tasks, n_ > 1 ? std::min<int64_t>(n_, tasks) : 0, task,
        [this](std::function<void()> job) { pool_.schedule(std::move(job)); });
  }

 private:
  int n_;
  mutable resetlstm::cpu::WorkerPool pool_;
};

double now_ms() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

template <typename T>
T from_float(float v) {
  if constexpr (std::is_same_v<T, resetlstm::cpu::bf16>) {
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    return resetlstm::cpu::bf16{static_cast<uint16_t>(u >> 16)};
  } else {
    return v;
  }
}

template <typename T>
int run(const resetlstm::cpu::Dims& d, int threads, int reps, double reset_fraction,
        const char* dtype_name) {
  using namespace resetlstm::cpu;
  const CellShape cs = cell_shape(d.cell);
  const int64_t BT = d.B * d.T, GH = cs.gates * d.H;
  std::mt19937 rng(0);
  std::uniform_real_distribution<float> u(-0.1f, 0.1f);
  auto fill = [&](std::vector<T>& v) {
    for (auto& x : v) x = from_float<T>(u(rng));
  };
  std::vector<T> x(BT * d.I), k(d.I * GH), rk(d.H * GH), b(cs.bias_rows * GH), y(BT * d.H),
      h(d.B * d.H), c(d.B * d.H), gates(BT * cs.saved * d.H), cells(BT * d.H), dy(BT * d.H),
      dx(BT * d.I), dk(k.size()), drk(rk.size()), db(b.size()), dh0(h.size()), dc0(c.size());
  fill(x), fill(k), fill(rk), fill(b), fill(dy);
  std::vector<char> resets(BT);
  std::bernoulli_distribution coin(reset_fraction);
  for (auto& r : resets) r = coin(rng);
  const Runner runner(threads);
  T* ws = static_cast<T*>(std::aligned_alloc(
      64, ((std::max(forward_workspace_size<T>(d, true), backward_workspace_size<T>(d, false)) *
            sizeof(T) + 63) / 64) * 64));
  ForwardArgs<T> f;
  f.dims = d;
  f.inputs = x.data(), f.kernel = k.data(), f.recurrent_kernel = rk.data(), f.bias = b.data();
  f.resets = reset_fraction > 0 ? reinterpret_cast<const bool*>(resets.data()) : nullptr;
  f.outputs = y.data(), f.h_final = h.data(), f.gates = gates.data();
  if (cs.cell_state) f.c_final = c.data(), f.cells = cells.data();
  BackwardArgs<T> g;
  g.dims = d;
  g.inputs = x.data(), g.kernel = k.data(), g.recurrent_kernel = rk.data(), g.resets = f.resets;
  g.outputs = y.data(), g.gates = gates.data(), g.d_outputs = dy.data();
  g.d_inputs = dx.data(), g.d_kernel = dk.data(), g.d_recurrent_kernel = drk.data(),
  g.d_bias = db.data(), g.d_h0 = dh0.data();
  if (cs.cell_state) g.cells = cells.data(), g.d_c0 = dc0.data();
  std::vector<double> tf, tb;
  for (int r = 0; r < reps + 1; ++r) {
    const double t0 = now_ms();
    forward<T>(runner, f, ws);
    const double t1 = now_ms();
    backward<T>(runner, g, ws);
    const double t2 = now_ms();
    if (r) tf.push_back(t1 - t0), tb.push_back(t2 - t1);
  }
  std::sort(tf.begin(), tf.end());
  std::sort(tb.begin(), tb.end());
  const double flop = 2.0 * BT * (d.I + d.H) * GH;
  const double mf = tf[tf.size() / 2], mb = tb[tb.size() / 2];
  const char* cell = d.cell == CellType::kLstm  ? ""
                     : d.cell == CellType::kGru ? "gru "
                                                : "gru(reset_before) ";
  std::printf("%s%s %s (bf16 GEMM %s) B=%ld T=%ld I=%ld H=%ld threads=%d: fwd %.2f ms (%.0f "
              "GFLOP/s), bwd %.2f ms (%.0f GFLOP/s), fwd+bwd %.2f ms\n",
              cell, dtype_name, selected_isa(), bf16_gemm(), d.B, d.T, d.I, d.H, threads, mf,
              flop / mf / 1e6, mb, 2 * flop / mb / 1e6, mf + mb);
  std::free(ws);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace resetlstm::cpu;
  const char* usage =
      "usage: %s [--isa avx2|avx512|avx512_bf16|generic] B T I H [threads] [reps] "
      "[reset_fraction] [float|bf16]\n";
  std::string isa;
  if (argc > 1 && std::strcmp(argv[1], "--isa") == 0) {
    if (argc < 3) {
      std::fprintf(stderr, usage, argv[0]);
      return 2;
    }
    isa = argv[2];
    // Read once, at the kernels' first dispatch, which has not happened yet.
    setenv("RESETLSTM_ISA", isa.c_str(), 1);
    argv += 2;
    argc -= 2;
  }
  if (argc < 5) {
    std::fprintf(stderr, usage, argv[0]);
    return 2;
  }
  if (!isa.empty()) {
    // avx512_bf16 selects the avx512 build with vdpbf16ps bf16 GEMMs.
    const std::string got = std::string(selected_isa()) +
                            (std::strcmp(bf16_gemm(), "avx512_bf16") == 0 ? "_bf16" : "");
    const bool ok = isa == "avx512" ? std::strcmp(selected_isa(), "avx512") == 0 : got == isa;
    if (!ok) {
      std::fprintf(stderr, "--isa %s: the kernels run %s (bf16 GEMM %s) on this CPU\n",
                   isa.c_str(), selected_isa(), bf16_gemm());
      return 2;
    }
  }
  Dims d;
  d.B = std::atol(argv[1]);
  d.T = std::atol(argv[2]);
  d.I = std::atol(argv[3]);
  d.H = std::atol(argv[4]);
  d.time_major = std::getenv("KB_TIME_MAJOR") != nullptr;
  const std::string cell = std::getenv("KB_CELL") ? std::getenv("KB_CELL") : "lstm";
  if (cell == "gru") {
    d.cell = CellType::kGru;
  } else if (cell == "gru_reset_before") {
    d.cell = CellType::kGruResetBefore;
  } else if (cell != "lstm") {
    std::fprintf(stderr, "KB_CELL must be lstm, gru or gru_reset_before, got %s\n", cell.c_str());
    return 2;
  }
  const int threads = argc > 5 ? std::atoi(argv[5]) : 1;
  const int reps = argc > 6 ? std::atoi(argv[6]) : 5;
  const double reset_fraction = argc > 7 ? std::atof(argv[7]) : 0.0;
  const std::string dtype = argc > 8 ? argv[8] : "float";
  if (dtype == "bf16") return run<bf16>(d, threads, reps, reset_fraction, "bf16");
  if (dtype != "float") {
    std::fprintf(stderr, "dtype must be float or bf16, got %s\n", dtype.c_str());
    return 2;
  }
  return run<float>(d, threads, reps, reset_fraction, "float");
}
