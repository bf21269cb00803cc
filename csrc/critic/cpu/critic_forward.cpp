// fastmi critic_bound CPU kernels: the forward: the partials of one row problem and the per-row / per-column
// log-sum-exps, tile by tile. No torch headers: kernels.h is the
// interface, tiles.h the schedule and lanes they share, critic_binding.cpp the torch glue,
// which also supplies the GEMM. The math is fastmi/critic/bounds.py's and ops.py's; the
// log-sum-exps are csrc/common/lse.h's, the exp / log / softplus / sigmoid
// csrc/common/fast_math.h's, on the vector lanes of csrc/common/cpu/lanes.h.

#include <algorithm>
#include <limits>
#include <vector>

#include "tiles.h"

namespace fastmi {
namespace critic {
namespace {

using namespace detail;

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

}  // namespace

template <typename A>
void forward_kernel(const Problem<A>& p, const RunConfig& cfg, const Gemm<A>& gemm, double* partials, A* row_lse,
                    A* col_lse) {
  const Tiles tl = plan_tiles(p.B, p.N, cfg.tile);
  Forward<A>(p, tl).run(cfg, gemm, partials, row_lse, col_lse);
}

FASTMI_CRITIC_CPU_FORWARD(, float)
FASTMI_CRITIC_CPU_FORWARD(, double)

}  // namespace critic
}  // namespace fastmi
