// A CPU emulation of the CUDA primitives that the kernels of csrc/infogan/cuda use, so that
// the kernels themselves (not a re-implementation) run and are tested on machines without a
// GPU: g++ -DFASTMI_CUDA_EMULATION compiles launch.cu (and the .cuh files it includes) with
// this header in place of the CUDA runtime (fastmi.infogan.cuda.emulation_extension builds
// it); csrc/infogan/cuda/device.cuh is where the kernels choose between the two.
//
// Each CUDA thread is a fiber (ucontext) on the calling OS thread. A block runs until
// every fiber waits at a barrier or has finished; then the barriers whose members have
// all arrived are released:
//   __syncthreads()          every unfinished thread of the block;
//   __syncwarp(), shuffles   all 32 lanes of the warp (a shuffle is write, barrier, read,
//                            barrier, so a lane that is absent deadlocks, as on the GPU).
// Fibers run in a freshly shuffled order at every step, and at random either all warps
// abreast or one warp as far as it gets before the next, so that a read of shared memory
// that lacks a barrier before it sees stale or too-new data in some schedule and makes a
// test fail; a barrier that not every thread reaches is reported as a deadlock. Dynamic shared memory
// starts filled with 0xFF bytes (NaN), so a read of a slot nobody wrote shows up as NaN.
// Blocks run one after another, so this finds no race between the blocks of one launch;
// deferred launches (set_deferred / run_deferred) interleave the blocks of launches on
// different emulated streams, as concurrent streams and CUDA graphs do.
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __grid_constant__

struct uint4 {
  unsigned int x, y, z, w;
};

namespace fastmi_emu {

struct Dim3 {
  unsigned int x = 1, y = 1, z = 1;
};

enum class Wait { kRunnable, kBlock, kWarp, kDone };

struct Fiber {
  ucontext_t ctx;
  Wait wait = Wait::kRunnable;
};

// A launch held back to run later, interleaved with other streams' launches (see
// set_deferred): its grid, block size, shared memory, body and (emulated) stream.
struct Pending {
  unsigned int grid, threads;
  size_t smem_bytes;
  std::function<void()> body;
  int stream;
};

struct Emulator {
  Dim3 grid, block, block_idx;
  std::vector<Fiber> fibers;
  std::vector<char> stacks;
  std::vector<uint64_t> lanes;          // one shuffle slot per thread
  std::vector<uint64_t> smem;           // 8-byte aligned dynamic shared memory
  std::function<void()> body;
  ucontext_t scheduler;
  int current = -1;
  uint64_t rng = 0x9E3779B97F4A7C15ull;
  std::string error;
  bool deferred = false;          // launches queue up instead of running (set_deferred)
  int stream = 0;                 // the emulated stream new launches go to
  std::vector<Pending> pending;   // queued launches, in launch order
};

inline Emulator& emu() {
  static thread_local Emulator e;
  return e;
}

constexpr size_t kStackBytes = 256 * 1024;

inline uint64_t next_random(Emulator& e) {  // xorshift64*
  e.rng ^= e.rng >> 12;
  e.rng ^= e.rng << 25;
  e.rng ^= e.rng >> 27;
  return e.rng * 2685821657736338717ull;
}

inline void fiber_main() {
  Emulator& e = emu();
  e.body();
  e.fibers[e.current].wait = Wait::kDone;  // uc_link returns to the scheduler
}

inline void wait_at(Wait w) {
  Emulator& e = emu();
  const int me = e.current;
  e.fibers[me].wait = w;
  swapcontext(&e.fibers[me].ctx, &e.scheduler);
}

// Runs the runnable fibers of threads [lo, hi) once each, in a shuffled order.
inline bool run_runnable(Emulator& e, std::vector<int>& order, unsigned int lo, unsigned int hi) {
  order.resize(hi - lo);
  std::iota(order.begin(), order.end(), static_cast<int>(lo));
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[next_random(e) % i]);
  bool ran = false;
  for (int t : order) {
    if (e.fibers[t].wait != Wait::kRunnable) continue;
    e.current = t;
    swapcontext(&e.scheduler, &e.fibers[t].ctx);
    ran = true;
  }
  return ran;
}

// Releases warp w's barrier when all its lanes wait there.
inline bool release_warp(Emulator& e, unsigned int w, unsigned int threads) {
  const unsigned int lo = w * 32, hi = lo + 32 < threads ? lo + 32 : threads;
  for (unsigned int l = lo; l < hi; ++l)
    if (e.fibers[l].wait != Wait::kWarp) return false;
  for (unsigned int l = lo; l < hi; ++l) e.fibers[l].wait = Wait::kRunnable;
  return true;
}

// Runs one block to completion; false (with e.error set) on a deadlock. Each step is,
// at random, breadth-first (every runnable thread once, then every complete warp barrier
// released) or depth-first (warps in a random order, each run as far as it gets before
// the next starts: a warp that races ahead of a delayed one, as the hardware allows).
inline bool run_block(unsigned int threads) {
  Emulator& e = emu();
  e.fibers.assign(threads, Fiber{});
  if (e.stacks.size() < threads * kStackBytes) e.stacks.resize(threads * kStackBytes);
  e.lanes.assign(threads, 0);
  for (unsigned int t = 0; t < threads; ++t) {
    Fiber& f = e.fibers[t];
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = e.stacks.data() + t * kStackBytes;
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = &e.scheduler;
    makecontext(&f.ctx, fiber_main, 0);
  }
  const unsigned int warps = (threads + 31) / 32;
  std::vector<int> order, warp_order(warps);
  for (;;) {
    bool progress = false;
    if (next_random(e) & 1) {
      std::iota(warp_order.begin(), warp_order.end(), 0);
      for (unsigned int i = warps; i > 1; --i) std::swap(warp_order[i - 1], warp_order[next_random(e) % i]);
      for (int w : warp_order) {
        const unsigned int lo = w * 32, hi = lo + 32 < threads ? lo + 32 : threads;
        while (run_runnable(e, order, lo, hi) || release_warp(e, w, threads)) progress = true;
      }
    } else {
      progress = run_runnable(e, order, 0, threads);
      for (unsigned int w = 0; w < warps; ++w) progress |= release_warp(e, w, threads);
    }
    unsigned int done = 0, at_block = 0;
    for (const Fiber& f : e.fibers) {
      done += f.wait == Wait::kDone;
      at_block += f.wait == Wait::kBlock;
    }
    if (done == threads) return true;
    if (at_block > 0 && at_block + done == threads) {
      for (Fiber& f : e.fibers)
        if (f.wait == Wait::kBlock) f.wait = Wait::kRunnable;
      continue;
    }
    if (!progress) {
      e.error = "emulated kernel deadlocked: threads of block " + std::to_string(e.block_idx.x) +
                " wait at different barriers (a __syncthreads or shuffle that not every thread reaches)";
      return false;
    }
  }
}

// Runs block b of a launch, with fresh (NaN-filled) shared memory.
inline bool run_one_block(const Pending& launch, unsigned int b) {
  Emulator& e = emu();
  e.grid = {launch.grid, 1, 1};
  e.block = {launch.threads, 1, 1};
  e.body = launch.body;
  e.smem.resize(launch.smem_bytes / 8 + 2);
  e.block_idx = {b, 0, 0};
  std::memset(e.smem.data(), 0xFF, e.smem.size() * 8);
  const bool ok = run_block(launch.threads);
  e.body = nullptr;
  return ok;
}

// Runs body() as a grid of `grid` blocks of `threads` threads; 0 or an error code. With
// launches deferred, it only queues the launch on the current emulated stream.
inline int launch(unsigned int grid, unsigned int threads, size_t smem_bytes, std::function<void()> body) {
  Emulator& e = emu();
  if (threads % 32 != 0 || threads == 0 || grid == 0) {
    e.error = "emulated launch: bad configuration";
    return 9;  // cudaErrorInvalidConfiguration
  }
  Pending launch{grid, threads, smem_bytes, std::move(body), e.stream};
  if (e.deferred) {
    e.pending.push_back(std::move(launch));
    return 0;
  }
  for (unsigned int b = 0; b < grid; ++b)
    if (!run_one_block(launch, b)) return 999;  // cudaErrorUnknown
  return 0;
}

// Concurrent streams, emulated: while deferred, launches queue up on the emulated stream
// set by set_stream; run_deferred() then runs them with their blocks interleaved across
// streams (one block of each stream's current launch in turn), each stream's launches in
// order, as two streams of a GPU may. A design that lets two launches share state fails
// here; the blocks of one launch still run one after another.
inline void set_deferred(bool on) { emu().deferred = on; }
inline void set_stream(int stream) { emu().stream = stream; }

inline int run_deferred() {
  Emulator& e = emu();
  std::vector<Pending> pending = std::move(e.pending);
  e.pending.clear();
  e.deferred = false;
  std::vector<int> streams;
  for (const Pending& launch : pending)
    if (std::find(streams.begin(), streams.end(), launch.stream) == streams.end()) streams.push_back(launch.stream);
  std::vector<size_t> next(streams.size(), 0);      // each stream's current launch
  std::vector<unsigned int> block(streams.size(), 0);  // and its next block
  auto launch_of = [&](size_t s) -> const Pending* {
    for (size_t i = next[s]; i < pending.size(); ++i)
      if (pending[i].stream == streams[s]) return &pending[i];
    return nullptr;
  };
  for (bool progress = true; progress;) {
    progress = false;
    for (size_t s = 0; s < streams.size(); ++s) {
      const Pending* launch = launch_of(s);
      if (launch == nullptr) continue;
      if (!run_one_block(*launch, block[s]++)) return 999;
      progress = true;
      if (block[s] == launch->grid) {  // the launch is done: the stream's next one
        next[s] = static_cast<size_t>(launch - pending.data()) + 1;
        block[s] = 0;
      }
    }
  }
  return 0;
}

inline Dim3 thread_idx() { return {static_cast<unsigned int>(emu().current), 0, 0}; }
inline unsigned char* dynamic_smem() { return reinterpret_cast<unsigned char*>(emu().smem.data()); }

template <typename V>
V shfl_xor(V v, int lane_mask) {
  static_assert(sizeof(V) <= 8, "shuffle of a value wider than 8 bytes");
  Emulator& e = emu();
  const int me = e.current;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof v);
  e.lanes[me] = bits;
  wait_at(Wait::kWarp);
  const uint64_t theirs = e.lanes[(me & ~31) | ((me & 31) ^ lane_mask)];
  wait_at(Wait::kWarp);
  V out;
  std::memcpy(&out, &theirs, sizeof out);
  return out;
}

}  // namespace fastmi_emu

#define threadIdx (::fastmi_emu::thread_idx())
#define blockIdx (::fastmi_emu::emu().block_idx)
#define blockDim (::fastmi_emu::emu().block)
#define gridDim (::fastmi_emu::emu().grid)

inline void __syncthreads() { ::fastmi_emu::wait_at(::fastmi_emu::Wait::kBlock); }
inline void __syncwarp(unsigned int = 0xffffffffu) { ::fastmi_emu::wait_at(::fastmi_emu::Wait::kWarp); }
inline void __threadfence() {}
template <typename V>
V __shfl_xor_sync(unsigned int, V v, int lane_mask) {
  return ::fastmi_emu::shfl_xor(v, lane_mask);
}
inline unsigned int atomicAdd(unsigned int* p, unsigned int v) {
  const unsigned int old = *p;
  *p = old + v;
  return old;
}
inline unsigned int atomicExch(unsigned int* p, unsigned int v) {
  const unsigned int old = *p;
  *p = v;
  return old;
}
template <typename V>
V __ldcg(const V* p) {
  return *p;
}
