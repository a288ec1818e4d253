// How the CPU kernels split a call over the runner's threads: batch rows (slabs advanced a
// chunk of steps at a time, no barrier: SlabSchedule) or, for small batches with a recurrent
// kernel larger than a core's L2, hidden units (a barrier per step: StepQueue); and where the
// forward's input projection runs (one GEMM before the loop, or per step inside each slab).
// Decisions from the CPU's cache sizes and the cell, with tuning switches that force either.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>

#include "cpu_caches.h"
#include "cpu_gemm_impl.h"
#include "cpu_parallel.h"
#include "recurrence_cpu.h"

namespace resetlstm {
namespace cpu {
namespace RLSTM_ISA {

// ---- small batches: hidden units split across threads, one barrier per step --------------
//
// With few rows per thread, the row-slab loops stream the whole recurrent kernel through each
// core every step for a handful of rows. Splitting the hidden units instead gives each thread
// all rows and a 1/threads share of the recurrent kernel (its 4 gate columns of a unit block,
// packed side by side), which stays in its L2; the price is a barrier per step, since the next
// step's GEMM reads every unit of h.
//
// Work items (s, u): step s, unit block u, claimed in order from one counter; an item of step s
// waits until every item of step s-1 is done. The earliest unfinished item never waits, so the
// loop finishes with any number of the runner's tasks actually running (one is enough): a busy
// or single-threaded pool cannot deadlock it.
class StepQueue {
 public:
  StepQueue(int64_t steps, int64_t per_step) : per_step_(per_step), total_(steps * per_step) {}
  // The next item, or -1 when all are claimed.
  int64_t claim() {
    const int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
    return i < total_ ? i : -1;
  }
  // Blocks until every item of steps < s is done (their writes visible).
  void wait_for_step(int64_t s) const { done_.wait_for(s * per_step_); }
  void finish() { done_.add(); }

 private:
  const int64_t per_step_, total_;
  alignas(64) std::atomic<int64_t> next_{0};  // own cache lines: claims do not disturb waiters
  WaitableCount done_;
};

// ---- the row split: slabs of rows whose time loops advance a chunk of steps at a time -------
//
// Rows never interact, so each slab runs its own time loop with no barrier. A slab per thread,
// each run start to end by one thread, made every call wait for the slowest thread: one whose
// core is shared with anything else (an environment worker, a data loader, a noisy neighbour)
// held its slab to the end at half speed while the others idled, and fwd+bwd took ~1.9x its
// quiet time beside one busy thread on 2 cores. Instead there are more slabs than threads, and
// a thread takes a chunk of steps of one slab at a time: the free slab with the fewest steps
// done (its own on a tie, for its caches). A slab's state lives in the shared buffers, so it
// moves to whichever thread is free at the end of a chunk; a thread that falls behind delays a
// chunk, not the call. It waits only while every unfinished slab is being advanced by another
// thread, which never blocks progress: the holders finish their chunks without waiting.
class SlabSchedule {
 public:
  struct Chunk {
    int64_t slab = -1;  // the slab claimed last (-1 before the first claim)
    int64_t index = 0;  // which of its chunks: 0 first (the start of the loop)
  };

  SlabSchedule(int64_t slabs, int64_t chunks)
      : slabs_(slabs), chunks_(chunks), slots_(new Slot[std::max<int64_t>(slabs, 1)]) {}

  // Claims the next chunk into *c; false once every chunk of every slab has been claimed and
  // run (then there is nothing left to wait for).
  bool next(Chunk* c) {
    for (;;) {
      const int64_t released = releases_.load();
      if (finished_.load(std::memory_order_acquire) >= slabs_) return false;
      int64_t best = -1, best_done = chunks_;
      for (int64_t s = 0; s < slabs_; ++s) {
        if (slots_[s].busy.load(std::memory_order_relaxed)) continue;
        const int64_t done = slots_[s].done.load(std::memory_order_relaxed);
        if (done < best_done || (done == best_done && done < chunks_ && s == c->slab))
          best = s, best_done = done;
      }
      if (best >= 0) {
        bool expected = false;
        if (slots_[best].busy.compare_exchange_strong(expected, true,
                                                      std::memory_order_acq_rel)) {
          const int64_t done = slots_[best].done.load(std::memory_order_acquire);
          if (done < chunks_) {
            c->slab = best;
            c->index = done;
            return true;
          }
          slots_[best].busy.store(false, std::memory_order_release);  // finished meanwhile
        }
        continue;  // another thread took it first: look again
      }
      // Every unfinished slab is held: its holder is running a chunk and will free it.
      releases_.wait_for(released + 1);
    }
  }

  // Marks chunk c done and frees its slab (the slab's writes visible to the next claimant).
  void done(const Chunk& c) {
    Slot& slot = slots_[c.slab];
    slot.done.store(c.index + 1, std::memory_order_relaxed);
    if (c.index + 1 == chunks_) finished_.fetch_add(1, std::memory_order_acq_rel);
    slot.busy.store(false, std::memory_order_release);
    releases_.add();
  }

 private:
  struct alignas(64) Slot {  // own cache lines: one slab's claims do not disturb the others'
    std::atomic<int64_t> done{0};
    std::atomic<bool> busy{false};
  };
  const int64_t slabs_, chunks_;
  std::unique_ptr<Slot[]> slots_;
  alignas(64) std::atomic<int64_t> finished_{0};
  WaitableCount releases_;  // slabs freed so far: what a thread with none free waits on
};

// Steps per chunk of the row split's time loops: about 16 chunks per sequence, so that a
// thread that falls behind costs the others at most a sixteenth of a slab's loop at the end.
// (A claim costs a scan of the slabs' flags, ~0.1 us; a step of a slab, microseconds.)
inline int64_t chunk_steps(int64_t T) { return std::max<int64_t>(1, ceil_div(T, int64_t{16})); }

// Runs body(b0, b1, step0, step1, first, last) for every chunk of every slab of `rows` rows over
// the runner's threads (SlabSchedule). Steps [step0, step1) count from the loop's start (the
// backward loop maps them to reversed time); first/last mark a slab's first and last chunk.
// A sequence of no steps still gets one (empty) chunk per slab.
template <typename Body>
void run_slabs(const TaskRunner& runner, int64_t B, int64_t T, int64_t rows, Body&& body) {
  const int64_t slabs = ceil_div(B, rows), steps = chunk_steps(T);
  const int64_t chunks = std::max<int64_t>(1, ceil_div(T, steps));
  SlabSchedule schedule(slabs, chunks);
  runner.run(std::min<int64_t>(runner.num_threads(), slabs), [&](int64_t) {
    SlabSchedule::Chunk c;
    while (schedule.next(&c)) {
      const int64_t b0 = c.slab * rows, b1 = std::min(B, b0 + rows);
      const int64_t t0 = std::min(T, c.index * steps), t1 = std::min(T, t0 + steps);
      body(b0, b1, t0, t1, c.index == 0, c.index + 1 == chunks);
      schedule.done(c);
    }
  });
}

// How to split the time loop over the runner's threads.
struct Split {
  bool columns = false;  // units across threads (else rows)
  int64_t units = 0;     // units per block when columns
};

// RESETLSTM_CPU_SPLIT=rows|columns forces a split where both are possible (tests, bench);
// read at every call.
inline const char* split_override() {
  static const char* const kAllowed[] = {"rows", "columns", nullptr};
  return env_choice("RESETLSTM_CPU_SPLIT", kAllowed);
}

template <typename Cell, typename T>
Split choose_split(const Dims& d, int threads) {
  constexpr int NR = Blocking<T>::NR, MR = Blocking<T>::MR;
  Split split;
  // Unit blocks must start on a panel of the packed kernels: H a multiple of NR. A two-stage
  // cell (the GRU without reset_after) needs every unit's r * h before its second GEMM, a
  // second barrier per step: it always splits rows.
  if (Cell::kTwoStage || threads < 2 || d.H % NR != 0 || d.T == 0 || d.B == 0) return split;
  const char* forced = split_override();
  if (forced && std::strcmp(forced, "rows") == 0) return split;
  const bool force_columns = forced && std::strcmp(forced, "columns") == 0;
  // Columns only pay for their per-step barrier when the recurrent kernel does not fit a
  // core's L2 (rows then stream all of it from L3 every step, for few rows per thread).
  // Measured with bench/kernel_bench on an AMD EPYC (Zen 5, 2 threads, 1 MiB L2 per core),
  // fwd+bwd: B = 16, H = 1024: columns 46.3-49.2 ms, rows 50.5-52.5; H = 512: 26.8 / 26.5;
  // H <= 256 (kernel <= L2): rows as fast or faster at B = 8-64 (the barrier costs more than
  // it saves; before the two counters got their own cache lines, much more).
  const int64_t kernel_bytes = Cell::kGates * d.H * d.H * static_cast<int64_t>(sizeof(T));
  const bool small_batch = d.B <= static_cast<int64_t>(threads) * 2 * MR;
  if (!force_columns && !(small_batch && kernel_bytes > 2 * l2_bytes())) return split;
  // About 4 blocks per thread for balance, at least one panel each.
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(d.H / NR, 4 * threads));
  split.columns = true;
  split.units = round_up(ceil_div(d.H, blocks), NR);
  return split;
}

// The input projection x W: hoisted (one GEMM over all B*T rows before the time loop, into z)
// or per step (each slab computes x_t W for its rows right before h R, into the same cached
// buffer). Per step saves z's trips through memory (and, in inference, faulting in the whole
// [B,T,G*H] scratch) but streams the packed kernel through every thread every step: each
// streamed byte then serves `rows` rows, cheap when the kernel stays in the core's L2, and
// from L3 once a slab has 8 rows or more. Measured through the TF op on an AMD EPYC (Zen 5,
// 2 threads, 1 MiB L2/core), per step vs hoisted: fwd 3-18 % faster from (16,50,128,128) to
// (1024,20,512,512), fwd+bwd -20 % .. +1 %; at B = 4, I = 2048 (4-row slab, 8 MiB kernel) per
// step was 2.6x slower, at B = 16 (8-row slabs) 15 % faster. RESETLSTM_CPU_INPUT=hoisted|
// per_step forces either.
template <typename Cell, typename T>
bool per_step_input_projection(const Dims& d, int64_t rows_per_slab) {
  static const char* const kAllowed[] = {"hoisted", "per_step", nullptr};
  if (const char* forced = env_choice("RESETLSTM_CPU_INPUT", kAllowed))
    return std::strcmp(forced, "per_step") == 0;
  const int64_t kernel_bytes = d.I * Cell::kGates * d.H * static_cast<int64_t>(sizeof(T));
  return kernel_bytes <= l2_bytes() / 2 || std::min(d.B, rows_per_slab) >= 8;
}

}  // namespace RLSTM_ISA
}  // namespace cpu
}  // namespace resetlstm
