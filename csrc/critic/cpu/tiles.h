// fastmi critic_bound CPU kernels: what the forward (critic_forward.cpp) and the backward
// (critic_backward.cpp) share: the task schedule and its threads, the vector-lane helpers.
// No torch headers (kernels.h is the interface).
//
// Scores S = scale (x y^T) + bias, B x N, positives S[i, i + offset]. The math is
// fastmi/critic/bounds.py's and ops.py's; the log-sum-exps are csrc/common/lse.h's, the
// exp / log / softplus / sigmoid csrc/common/fast_math.h's, on the vector lanes of
// csrc/common/cpu/lanes.h, the threading csrc/common/cpu/parallel.h's.
//
// Tiles. S is cut into R row tiles of Tiles::rows rows and C >= R column tiles of
// Tiles::cols columns. A task computes one tile's dot products x_r y_c^T with one GEMM
// into its thread's scratch (rows x cols values: the only score storage) and then, in
// the forward, reduces it in one fused pass per row (row max and first argmax, the
// negatives' max, the row / negative / clipped log-sum-exps, softplus sums, the
// positive) and per column (column max, column log-sum-exp); in the backward it forms
// G = dL/dS of the tile into a second scratch tile, then dx_r += scale G y_c and
// dy_c += scale G^T x_r (two more GEMMs on the same scratch).
//
// Determinism. A row tile's state (its rows' running log-sum-exps and argmax, its dx
// rows, its partial sums) must take its tiles' contributions in one fixed order, and a
// column tile's state (its columns' log-sum-exps, its dy rows) likewise, whichever thread
// runs which tile and however many there are; no float atomics, no per-thread copies.
// The tasks are (r, t) for r < R, t < C: row tile r visits column tile c = (r + t) mod C
// at step t. Row tile r's tasks apply in step order; column tile c's visitors apply in
// step order too, and at each step the R row tiles are at R distinct columns, so a
// column's visitor order is fixed by (R, C) alone: previous_visitor says whose turn came
// before. Tasks are handed out in step-major order k = t R + r (for_each_chunk); a task
// computes its tile at once and waits only before each ordered update, for the task that
// must precede it, which was handed out R - 1 or more tasks earlier (so it never waits
// while R - 1 >= the thread count, and never deadlocks: every wait is on an earlier
// task). The result is bit-identical for any thread count. Sums over a row tile's tasks
// are double, added across row tiles in row-tile order at the end.
//
// Memory beyond the inputs and gradients: O(B + N) (per row: a log-sum-exp and the best
// score so far; per column: a log-sum-exp) and, per thread, two tiles of scores and a
// few rows and columns of partials. The forward's outputs are the partials and the
// per-row / per-column log-sum-exps (O(B + N)); the backward recomputes S from them.
// Nothing B x N is ever allocated.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <thread>
#include <type_traits>

#include "../../common/cpu/lanes.h"
#include "../../common/cpu/parallel.h"
#include "../../common/lse.h"
#include "kernels.h"

namespace fastmi {
namespace critic {
namespace detail {

// ---- the schedule -----------------------------------------------------------------------

// Thrown in a waiting task once another task has failed: it unblocks the wait; the
// first failure is what the caller sees.
struct Cancelled {};

// Each row tile's finished tasks (all of its steps < done[r] are done) and the failure
// flag. A task is finished once every one of its updates is visible (release / acquire).
class Progress {
 public:
  explicit Progress(int64_t R) : done_(new std::atomic<int64_t>[R]) {
    for (int64_t r = 0; r < R; ++r) done_[r].store(0, std::memory_order_relaxed);
  }
  void finish(int64_t r, int64_t t) { done_[r].store(t + 1, std::memory_order_release); }
  // Until row tile r has finished `steps` tasks. Spins briefly, then yields the core: on
  // a machine shared with other processes the task waited for may not be running.
  void wait(int64_t r, int64_t steps) const {
    for (int spin = 0; done_[r].load(std::memory_order_acquire) < steps; ++spin) {
      if (aborted_.load(std::memory_order_relaxed)) throw Cancelled{};
      if (spin >= 32) std::this_thread::yield();
    }
  }
  void abort() { aborted_.store(true, std::memory_order_relaxed); }
  bool aborted() const { return aborted_.load(std::memory_order_relaxed); }

 private:
  std::unique_ptr<std::atomic<int64_t>[]> done_;
  std::atomic<bool> aborted_{false};
};

// Runs task(r, t, progress) for every task on up to `threads` threads (module comment).
// make_scratch() builds a thread's scratch before its first task. The first exception a
// task throws is rethrown here, after every thread has stopped.
template <typename MakeScratch, typename Task>
void run_tasks(const Tiles& tl, int threads, MakeScratch&& make_scratch, Task&& task) {
  Progress progress(tl.R);
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  const int64_t tasks = tl.R * tl.C;
  for_each_chunk(tasks, threads, [&](auto next) {
    try {
      auto scratch = make_scratch();
      for (int64_t k = next(); k < tasks && !progress.aborted(); k = next()) task(k % tl.R, k / tl.R, progress, scratch);
    } catch (const Cancelled&) {
    } catch (...) {
      if (!failed.exchange(true)) error = std::current_exception();
      progress.abort();
    }
  });
  if (error) std::rethrow_exception(error);
}

// ---- lanes ------------------------------------------------------------------------------

template <typename A>
struct Lanes {
  using V = typename LaneOf<A>::V;
  using I = typename LaneOf<A>::I;
  using E = typename LaneOf<A>::E;
  using L = Lane<V>;
  static V splat(A s) { return L::splat(s); }
  static I iota() { return lane_iota<I>(); }
  static I columns(int64_t j0) { return iota() + static_cast<E>(j0); }  // lane r: column j0 + r
  static I live(int64_t n) { return iota() < static_cast<E>(n); }       // lanes r < n
};

// Calls f(j0, n, tail) for the vectors of a row of n_cols values: full vectors of kLanes
// (tail = std::false_type) and at most one shorter last one (std::true_type), so that
// the full ones carry no mask.
template <typename F>
FASTMI_FN void for_vectors(int64_t n_cols, F&& f) {
  int64_t j = 0;
  for (; j + kLanes <= n_cols; j += kLanes) f(j, kLanes, std::false_type{});
  if (j < n_cols) f(j, n_cols - j, std::true_type{});
}

// clamp(v, -tau, tau) as torch.clamp: NaN stays NaN.
template <typename V, typename A>
FASTMI_FN V clamp_lanes(V v, A tau) {
  V c = v < -tau ? Lane<V>::splat(-tau) : v;
  return c > tau ? Lane<V>::splat(tau) : c;
}

// Whether (v, j) beats (best, bj) as torch.argmax sees a row: a larger value, a NaN over
// a number, or an equal value (NaN equal to NaN) at a smaller index.
template <typename A>
FASTMI_FN bool beats(A v, int64_t j, A best, int64_t bj) {
  const bool v_nan = v != v, b_nan = best != best;
  if (v_nan != b_nan) return v_nan;
  if (v_nan || v == best) return j < bj;
  return v > best;
}

}  // namespace detail
}  // namespace critic
}  // namespace fastmi
