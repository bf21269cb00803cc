// fastmi critic_bound CPU kernels: the partials of a score matrix that is never stored,
// and their gradients, tile by tile. No torch headers: kernels.h is the interface,
// critic_binding.cpp the torch glue, which also supplies the GEMM.
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

#include "kernels.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#include "../../common/cpu/lanes.h"
#include "../../common/cpu/parallel.h"
#include "../../common/lse.h"

namespace fastmi {
namespace critic {

Tiles plan_tiles(int64_t B, int64_t N, int64_t tile) {
  Tiles t;
  if (tile > 0) {
    t.rows = t.cols = tile;
  } else {
    // rows: the largest power of two <= B / 4 in [8, kMaxTile], so that there are at
    // least 4 row tiles when B >= 32 (tasks that depend on each other are R - 1 apart)
    int64_t rows = 8;
    while (rows * 2 <= kMaxTile && rows * 2 * 4 <= B) rows *= 2;
    const int64_t R = (B + rows - 1) / rows;
    // cols: as many as rows, wider while N keeps at least R column tiles (the schedule
    // needs C >= R), so that a small B against a large N still makes large GEMMs
    int64_t cols = rows;
    while (cols * 2 <= kMaxTile && (N + cols * 2 - 1) / (cols * 2) >= R) cols *= 2;
    t.rows = rows;
    t.cols = cols;
  }
  t.R = (B + t.rows - 1) / t.rows;
  t.C = (N + t.cols - 1) / t.cols;
  return t;
}

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

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

// Row tile r at step t visits column tile (r + t) mod C. previous_visitor: the task that
// visited that column tile just before, as (row tile, step), or row tile -1 for its first
// visitor. Derivation: row tile r' visits column c at step (c - r') mod C. For r < R - 1
// the step t - 1 (the latest step before t) belongs to row tile r + 1, when t >= 1; at
// t = 0 nobody came before. For r = R - 1 every row tile r' < r visits c at step
// (t + r - r') mod C, which is below t only when it wraps, and is largest for r' = 0:
// step r + t - C, when that is >= 0. (tests/test_critic_cpu.py checks this against a
// brute-force ordering.)
}  // namespace

Visitor previous_visitor(const Tiles& tl, int64_t r, int64_t t) {
  if (r + 1 < tl.R) return t >= 1 ? Visitor{r + 1, t - 1} : Visitor{-1, -1};
  const int64_t t0 = r + t - tl.C;
  return t0 >= 0 ? Visitor{0, t0} : Visitor{-1, -1};
}

namespace {

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

// ---- forward ------------------------------------------------------------------------------

template <typename A>
struct ForwardPlan {
  bool row, col, neg, clip, neg_softplus, pos_sum, pos_softplus, correct;
  bool best() const { return row || correct; }
  bool neg_max() const { return neg || clip; }
  bool negatives() const { return neg_max() || neg_softplus; }

  explicit ForwardPlan(int64_t m)
      : row(has(m, kRowLseSum)), col(has(m, kColLseSum)), neg(has(m, kNegLse)), clip(has(m, kNegLseClip)),
        neg_softplus(has(m, kNegSoftplus)), pos_sum(has(m, kPosSum)), pos_softplus(has(m, kPosSoftplus)),
        correct(has(m, kCorrect)) {}
};

// The sums of one row tile, over its tasks in step order.
struct RowTileSums {
  double pos_sum = 0, pos_softplus = 0, neg_softplus = 0;
  Lse<double> neg = lse_empty<double>(), clip = lse_empty<double>();

  void add(const RowTileSums& o) {
    pos_sum += o.pos_sum;
    pos_softplus += o.pos_softplus;
    neg_softplus += o.neg_softplus;
    neg = lse_merge(neg, o.neg);
    clip = lse_merge(clip, o.clip);
  }
};

// What one task's tile gives each of its rows and columns, before the ordered updates.
template <typename A>
struct ForwardScratch {
  Scratch<A> dot;            // rows x cols dot products x_i . y_j, row-major, ld = the tile's columns
  Scratch<Lse<double>> row;  // per tile row: its log-sum-exp over the tile's columns
  Scratch<A> best;           // per tile row: its largest score in the tile ...
  Scratch<int64_t> best_j;   // ... and that score's first (global) column
  Scratch<A> col_max, col_sum;  // per tile column (padded to whole vectors): max_i S, sum_i exp(S - max)

  explicit ForwardScratch(const Tiles& tl)
      : dot(tl.rows * tl.cols), row(tl.rows), best(tl.rows), best_j(tl.rows), col_max(round_up(tl.cols)),
        col_sum(round_up(tl.cols)) {}
  static int64_t round_up(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }
};

template <typename A>
class Forward {
  using X = Lanes<A>;
  using V = typename X::V;
  using I = typename X::I;
  using L = typename X::L;

 public:
  Forward(const Problem<A>& p, const Tiles& tl)
      : p_(p), tl_(tl), plan_(p.compute), row_state_(plan_.row ? p.B : 0, lse_empty<double>()),
        best_(plan_.best() ? p.B : 0, -std::numeric_limits<A>::infinity()),
        best_j_(plan_.best() ? p.B : 0, std::numeric_limits<int64_t>::max()),
        col_state_(plan_.col ? p.N : 0, lse_empty<double>()), tile_sums_(tl.R) {}

  void run(const RunConfig& cfg, const Gemm<A>& gemm, double* partials, A* row_lse, A* col_lse) {
    run_tasks(
        tl_, cfg.threads, [&] { return ForwardScratch<A>(tl_); },
        [&](int64_t r, int64_t t, Progress& progress, ForwardScratch<A>& s) { task(r, t, progress, s, gemm); });
    finish(partials, row_lse, col_lse);
  }

 private:
  V scores(V dot) const { return dot * X::splat(p_.scale) + X::splat(p_.bias); }
  A score(A dot) const { return dot * p_.scale + p_.bias; }

  void task(int64_t r, int64_t t, Progress& progress, ForwardScratch<A>& s, const Gemm<A>& gemm) {
    const int64_t r0 = r * tl_.rows, rows = std::min(tl_.rows, p_.B - r0);
    const int64_t c = (r + t) % tl_.C, c0 = c * tl_.cols, cols = std::min(tl_.cols, p_.N - c0);
    gemm(false, true, rows, cols, p_.d, A(1), p_.x + r0 * p_.d, p_.d, p_.y + c0 * p_.d, p_.d, A(0), s.dot.data(),
         cols);
    RowTileSums sums;
    if (plan_.col) {
      std::fill_n(s.col_max.data(), ForwardScratch<A>::round_up(cols), -std::numeric_limits<A>::infinity());
      std::fill_n(s.col_sum.data(), ForwardScratch<A>::round_up(cols), A(0));
    }
    for (int64_t i = 0; i < rows; ++i) row_pass(s, i, r0 + i + p_.offset - c0, c0, cols, sums);
    if (plan_.col)
      for (int64_t i = 0; i < rows; ++i) column_sums(s, i, cols);

    progress.wait(r, t);  // this row tile's earlier steps are in
    for (int64_t i = 0; i < rows; ++i) {
      if (plan_.row) row_state_[r0 + i] = lse_merge(row_state_[r0 + i], s.row.data()[i]);
      if (plan_.best() && beats(s.best.data()[i], s.best_j.data()[i], best_[r0 + i], best_j_[r0 + i])) {
        best_[r0 + i] = s.best.data()[i];
        best_j_[r0 + i] = s.best_j.data()[i];
      }
    }
    tile_sums_[r].add(sums);
    if (plan_.col) {
      const Visitor before = previous_visitor(tl_, r, t);
      if (before.r >= 0) progress.wait(before.r, before.t + 1);  // this column tile's earlier visitors are in
      for (int64_t j = 0; j < cols; ++j)
        col_state_[c0 + j] = lse_merge(col_state_[c0 + j], Lse<double>{s.col_max.data()[j], s.col_sum.data()[j]});
    }
    progress.finish(r, t);
  }

  // Row i of the tile: pos is its positive's column in the tile (outside [0, cols): none).
  void row_pass(ForwardScratch<A>& s, int64_t i, int64_t pos, int64_t c0, int64_t cols, RowTileSums& sums) {
    const A inf = std::numeric_limits<A>::infinity();
    const A* dot = s.dot.data() + i * cols;
    const bool has_pos = pos >= 0 && pos < cols;
    const int64_t n_neg = cols - (has_pos ? 1 : 0);
    // the positive's column as a lane value (any value outside [0, cols) matches no lane)
    const auto pos_lane = static_cast<typename X::E>(has_pos ? pos : -1);
    auto load = [&](int64_t j0, int64_t n, auto tail) {
      V v = scores(load_row<V>(dot + j0, n, A(0)));
      if constexpr (decltype(tail)::value) v = X::live(n) ? v : X::splat(-inf);
      return v;
    };
    auto negative = [&](int64_t j0, int64_t n, auto tail) {  // lanes that are negatives of this row
      I is_neg = X::columns(j0) != pos_lane;
      if constexpr (decltype(tail)::value) is_neg = is_neg & X::live(n);
      return is_neg;
    };

    // pass 1: the row's best score and its first column, the negatives' max, the columns' max
    V best = X::splat(-inf), neg_max = X::splat(-inf);
    I best_j = X::iota();
    if (plan_.best() || plan_.neg_max() || plan_.col) {
      for_vectors(cols, [&](int64_t j0, int64_t n, auto tail) {
        const V v = load(j0, n, tail);
        if (plan_.best()) {
          const auto take = (v > best) | ((v != v) & (best == best));
          best = take ? v : best;
          best_j = take ? X::columns(j0) : best_j;
        }
        if (plan_.neg_max()) neg_max = L::max(negative(j0, n, tail) ? v : X::splat(-inf), neg_max);
        if (plan_.col) {
          V m;
          memcpy(&m, s.col_max.data() + j0, sizeof m);
          m = L::max(v, m);
          memcpy(s.col_max.data() + j0, &m, sizeof m);
        }
      });
    }
    A row_max = -inf;
    if (plan_.best()) {
      int64_t bj = std::numeric_limits<int64_t>::max();
      for (int64_t lane = 0; lane < kLanes; ++lane)
        if (beats(best[lane], static_cast<int64_t>(best_j[lane]), row_max, bj)) {
          row_max = best[lane];
          bj = best_j[lane];
        }
      s.best.data()[i] = row_max;
      s.best_j.data()[i] = c0 + bj;
    }

    // pass 2: sums of exponentials, each relative to its max (lse.h's Lse), and softplus
    auto exp_sum = [&](A m, auto term) -> A {  // sum over the live lanes of term(v, lanes) (masked to 0)
      V acc = X::splat(A(0));
      for_vectors(cols, [&](int64_t j0, int64_t n, auto tail) {
        const V v = load(j0, n, tail);
        acc = acc + term(v, j0, n, tail, m);
      });
      return hsum(acc);
    };
    if (plan_.row) {
      // an all -inf row (infinite inputs) has LSE -inf: no exp(-inf - -inf)
      const A sum = row_max == -inf ? A(0) : exp_sum(row_max, [&](V v, int64_t, int64_t n, auto tail, A m) {
        V e = fm_exp_nonpos(v - m);
        if constexpr (decltype(tail)::value) e = X::live(n) ? e : X::splat(A(0));
        return e;
      });
      s.row.data()[i] = Lse<double>{row_max, sum};
    }
    if (n_neg > 0) {
      const A m = hmax(neg_max);
      if (plan_.neg && m != -inf) {
        const A sum = exp_sum(m, [&](V v, int64_t j0, int64_t n, auto tail, A mx) {
          return negative(j0, n, tail) ? fm_exp_nonpos(v - mx) : X::splat(A(0));
        });
        sums.neg = lse_merge(sums.neg, Lse<double>{m, sum});
      }
      if (plan_.clip) {  // max clamp(S) = clamp(max S): clamp is monotone
        const A mc = std::min(std::max(m, -p_.clip), p_.clip);
        const A sum = exp_sum(mc, [&](V v, int64_t j0, int64_t n, auto tail, A mx) {
          return negative(j0, n, tail) ? fm_exp_nonpos(clamp_lanes(v, p_.clip) - mx) : X::splat(A(0));
        });
        sums.clip = lse_merge(sums.clip, Lse<double>{mc, sum});
      }
      if (plan_.neg_softplus) {
        const A sum = exp_sum(A(0), [&](V v, int64_t j0, int64_t n, auto tail, A) {
          return negative(j0, n, tail) ? softplus_pair(v).pos : X::splat(A(0));
        });
        sums.neg_softplus += sum;
      }
    }
    if (has_pos) {
      const A sp = score(dot[pos]);
      sums.pos_sum += sp;
      if (plan_.pos_softplus) sums.pos_softplus += softplus_pair(sp).neg;
    }
  }

  // The column sums of row i: col_sum[j] += exp(S[i, j] - col_max[j]), col_max being the
  // tile's column max (pass 1 of every row came first).
  void column_sums(ForwardScratch<A>& s, int64_t i, int64_t cols) {
    const A inf = std::numeric_limits<A>::infinity();
    const A* dot = s.dot.data() + i * cols;
    for_vectors(cols, [&](int64_t j0, int64_t n, auto tail) {
      const V v = scores(load_row<V>(dot + j0, n, A(0)));
      V m, acc;
      memcpy(&m, s.col_max.data() + j0, sizeof m);
      memcpy(&acc, s.col_sum.data() + j0, sizeof acc);
      V e = fm_exp_nonpos(v - m);
      e = m == -inf ? X::splat(A(0)) : e;  // an all -inf column (infinite inputs): LSE -inf
      if constexpr (decltype(tail)::value) e = X::live(n) ? e : X::splat(A(0));
      acc = acc + e;
      memcpy(s.col_sum.data() + j0, &acc, sizeof acc);
    });
  }

  void finish(double* partials, A* row_lse, A* col_lse) {
    std::fill_n(partials, kNumPartials, 0.0);
    RowTileSums total;
    for (const RowTileSums& t : tile_sums_) total.add(t);
    partials[kPosSum] = total.pos_sum;
    partials[kPosSoftplus] = total.pos_softplus;
    partials[kNegSoftplus] = total.neg_softplus;
    partials[kNegLse] = lse_log(total.neg);
    partials[kNegLseClip] = lse_log(total.clip);
    if (plan_.row) {
      double sum = 0;
      for (int64_t i = 0; i < p_.B; ++i) {
        const double lse = lse_log(row_state_[i]);
        sum += lse;
        if (row_lse != nullptr) row_lse[i] = static_cast<A>(lse);
      }
      partials[kRowLseSum] = sum;
    }
    if (plan_.col) {
      double sum = 0;
      for (int64_t j = 0; j < p_.N; ++j) {
        const double lse = lse_log(col_state_[j]);
        sum += lse;
        if (col_lse != nullptr) col_lse[j] = static_cast<A>(lse);
      }
      partials[kColLseSum] = sum;
    }
    if (plan_.correct) {
      int64_t correct = 0;
      for (int64_t i = 0; i < p_.B; ++i) correct += best_j_[i] == i + p_.offset;
      partials[kCorrect] = static_cast<double>(correct);
    }
    for (int k = 0; k < kNumPartials; ++k)
      if (!has(p_.compute, static_cast<Partial>(k))) partials[k] = 0.0;
  }

  const Problem<A>& p_;
  const Tiles tl_;
  const ForwardPlan<A> plan_;
  std::vector<Lse<double>> row_state_;  // per row: LSE over the column tiles so far
  std::vector<A> best_;                 // per row: the best score so far ...
  std::vector<int64_t> best_j_;         // ... and its column
  std::vector<Lse<double>> col_state_;  // per column: LSE over the row tiles so far
  std::vector<RowTileSums> tile_sums_;  // per row tile
};

// ---- backward -----------------------------------------------------------------------------

// The upstream grads of the differentiated partials (0 for the others), as the
// coefficients of G's terms (fastmi/critic/ops.py):
//   pos_sum       g on P                    row_lse_sum   g exp(S - row_lse[i])
//   col_lse_sum   g exp(S - col_lse[j])     neg_lse       g exp(S - neg_lse) on Neg
//   pos_softplus  -g sigmoid(-S) on P       neg_softplus  g sigmoid(S) on Neg
//   neg_lse_clip  g exp(S - neg_lse_clip) on Neg where -tau <= S <= tau
template <typename A>
struct Upstream {
  A pos = 0, row = 0, col = 0, neg = 0, pos_softplus = 0, neg_softplus = 0, clip = 0;
  bool use_row = false, use_col = false, use_neg = false, use_pos_softplus = false, use_neg_softplus = false,
       use_clip = false, use_pos = false;
  A neg_lse = 0, neg_lse_clip = 0;

  Upstream(int64_t m, const double* g, const double* partials) {
    use_pos = has(m, kPosSum);
    use_row = has(m, kRowLseSum);
    use_col = has(m, kColLseSum);
    use_neg = has(m, kNegLse);
    use_pos_softplus = has(m, kPosSoftplus);
    use_neg_softplus = has(m, kNegSoftplus);
    use_clip = has(m, kNegLseClip);
    pos = use_pos ? A(g[kPosSum]) : A(0);
    row = use_row ? A(g[kRowLseSum]) : A(0);
    col = use_col ? A(g[kColLseSum]) : A(0);
    neg = use_neg ? A(g[kNegLse]) : A(0);
    pos_softplus = use_pos_softplus ? A(g[kPosSoftplus]) : A(0);
    neg_softplus = use_neg_softplus ? A(g[kNegSoftplus]) : A(0);
    clip = use_clip ? A(g[kNegLseClip]) : A(0);
    neg_lse = A(partials[kNegLse]);
    neg_lse_clip = A(partials[kNegLseClip]);
  }
  bool negatives() const { return use_neg || use_neg_softplus || use_clip; }
};

template <typename A>
struct BackwardScratch {
  Scratch<A> dot;   // rows x cols dot products
  Scratch<A> grad;  // rows x cols G
  explicit BackwardScratch(const Tiles& tl) : dot(tl.rows * tl.cols), grad(tl.rows * tl.cols) {}
};

struct GradSums {
  double scale = 0, bias = 0;
};

template <typename A>
class Backward {
  using X = Lanes<A>;
  using V = typename X::V;
  using I = typename X::I;

 public:
  Backward(const Problem<A>& p, const Tiles& tl, const double* grad_partials, const double* partials,
           const A* row_lse, const A* col_lse)
      : p_(p), tl_(tl), up_(p.differentiate, grad_partials, partials), row_lse_(row_lse), col_lse_(col_lse),
        sums_(tl.R) {}

  void run(const RunConfig& cfg, const Gemm<A>& gemm, A* grad_x, A* grad_y, double* grad_scale, double* grad_bias) {
    run_tasks(
        tl_, cfg.threads, [&] { return BackwardScratch<A>(tl_); },
        [&](int64_t r, int64_t t, Progress& progress, BackwardScratch<A>& s) {
          task(r, t, progress, s, gemm, grad_x, grad_y);
        });
    GradSums total;
    for (const GradSums& g : sums_) {
      total.scale += g.scale;
      total.bias += g.bias;
    }
    *grad_scale = total.scale;
    *grad_bias = total.bias;
  }

 private:
  V scores(V dot) const { return dot * X::splat(p_.scale) + X::splat(p_.bias); }
  A score(A dot) const { return dot * p_.scale + p_.bias; }

  void task(int64_t r, int64_t t, Progress& progress, BackwardScratch<A>& s, const Gemm<A>& gemm, A* grad_x,
            A* grad_y) {
    const int64_t r0 = r * tl_.rows, rows = std::min(tl_.rows, p_.B - r0);
    const int64_t c = (r + t) % tl_.C, c0 = c * tl_.cols, cols = std::min(tl_.cols, p_.N - c0);
    const A* x_r = p_.x + r0 * p_.d;
    const A* y_c = p_.y + c0 * p_.d;
    gemm(false, true, rows, cols, p_.d, A(1), x_r, p_.d, y_c, p_.d, A(0), s.dot.data(), cols);
    GradSums sums;
    for (int64_t i = 0; i < rows; ++i) grad_row(s, r0 + i, i, r0 + i + p_.offset - c0, c0, cols, sums);

    progress.wait(r, t);  // dx rows of this row tile: in step order
    gemm(false, false, rows, p_.d, cols, p_.scale, s.grad.data(), cols, y_c, p_.d, A(t == 0 ? 0 : 1),
         grad_x + r0 * p_.d, p_.d);
    sums_[r].scale += sums.scale;
    sums_[r].bias += sums.bias;
    const Visitor before = previous_visitor(tl_, r, t);
    if (before.r >= 0) progress.wait(before.r, before.t + 1);  // dy rows of this column tile: in visitor order
    gemm(true, false, cols, p_.d, rows, p_.scale, s.grad.data(), cols, x_r, p_.d, A(before.r >= 0 ? 1 : 0),
         grad_y + c0 * p_.d, p_.d);
    progress.finish(r, t);
  }

  // G of row gi (tile row i; pos: its positive's column in the tile) into s.grad, and its
  // sums G * dot and G into sums.
  void grad_row(BackwardScratch<A>& s, int64_t gi, int64_t i, int64_t pos, int64_t c0, int64_t cols, GradSums& sums) {
    const A* dot = s.dot.data() + i * cols;
    A* grad = s.grad.data() + i * cols;
    const bool has_pos = pos >= 0 && pos < cols;
    const auto pos_lane = static_cast<typename X::E>(has_pos ? pos : -1);
    const A row_lse = up_.use_row ? row_lse_[gi] : A(0);
    V acc_scale = X::splat(A(0)), acc_bias = X::splat(A(0));
    for_vectors(cols, [&](int64_t j0, int64_t n, auto tail) {
      const V d = load_row<V>(dot + j0, n, A(0));
      const V v = scores(d);
      V g = X::splat(A(0));
      if (up_.use_row) g = g + X::splat(up_.row) * fm_exp_nonpos(v - row_lse);
      if (up_.use_col) g = g + X::splat(up_.col) * fm_exp_nonpos(v - load_row<V>(col_lse_ + c0 + j0, n, A(0)));
      if (up_.negatives()) {
        V gn = X::splat(A(0));
        if (up_.use_neg) gn = gn + X::splat(up_.neg) * fm_exp_nonpos(v - up_.neg_lse);
        if (up_.use_neg_softplus) gn = gn + X::splat(up_.neg_softplus) * sigmoid_pair(v).p;
        if (up_.use_clip) {
          const auto inside = (v >= -p_.clip) & (v <= p_.clip);  // where clamp passes the gradient, as torch's
          gn = gn + (inside ? X::splat(up_.clip) * fm_exp_nonpos(v - up_.neg_lse_clip) : X::splat(A(0)));
        }
        // overwrite, not multiply: an inf or NaN of the positive's lane stays out
        g = g + (X::columns(j0) != pos_lane ? gn : X::splat(A(0)));
      }
      if constexpr (decltype(tail)::value) g = X::live(n) ? g : X::splat(A(0));
      store_row(grad + j0, g, n);
      acc_scale = acc_scale + g * d;
      acc_bias = acc_bias + g;
    });
    double g_scale = hsum(acc_scale), g_bias = hsum(acc_bias);
    if (has_pos && (up_.use_pos || up_.use_pos_softplus)) {
      A on_pair = up_.pos;
      if (up_.use_pos_softplus) on_pair += up_.pos_softplus * sigmoid_pair(score(dot[pos])).p_m1;  // -g sigmoid(-S)
      grad[pos] += on_pair;
      g_scale += static_cast<double>(on_pair) * dot[pos];
      g_bias += on_pair;
    }
    sums.scale += g_scale;
    sums.bias += g_bias;
  }

  const Problem<A>& p_;
  const Tiles tl_;
  const Upstream<A> up_;
  const A* row_lse_;
  const A* col_lse_;
  std::vector<GradSums> sums_;  // per row tile, over its tasks in step order
};

}  // namespace

template <typename A>
void forward_kernel(const Problem<A>& p, const RunConfig& cfg, const Gemm<A>& gemm, double* partials, A* row_lse,
                    A* col_lse) {
  const Tiles tl = plan_tiles(p.B, p.N, cfg.tile);
  Forward<A>(p, tl).run(cfg, gemm, partials, row_lse, col_lse);
}

template <typename A>
void backward_kernel(const Problem<A>& p, const RunConfig& cfg, const Gemm<A>& gemm, const double* grad_partials,
                     const double* partials, const A* row_lse, const A* col_lse, A* grad_x, A* grad_y,
                     double* grad_scale, double* grad_bias) {
  if (p.differentiate == 0) {  // nothing to differentiate: G = 0
    std::fill_n(grad_x, p.B * p.d, A(0));
    std::fill_n(grad_y, p.N * p.d, A(0));
    *grad_scale = *grad_bias = 0.0;
    return;
  }
  const Tiles tl = plan_tiles(p.B, p.N, cfg.tile);
  Backward<A>(p, tl, grad_partials, partials, row_lse, col_lse).run(cfg, gemm, grad_x, grad_y, grad_scale, grad_bias);
}

FASTMI_CRITIC_CPU_ALL_KERNELS()

}  // namespace critic
}  // namespace fastmi
