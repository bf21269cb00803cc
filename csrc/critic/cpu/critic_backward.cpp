// fastmi critic_bound CPU kernels: the backward: dx, dy, dscale and dbias, recomputing each tile. No torch headers: kernels.h is the
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

FASTMI_CRITIC_CPU_BACKWARD(, float)
FASTMI_CRITIC_CPU_BACKWARD(, double)

}  // namespace critic
}  // namespace fastmi
