// The InfoGAN loss's per-row math: ARCHITECTURE.md sections 3 to 5, once for C++ and CUDA.
//
// Plain inline functions of scalars or CPU vector lanes (csrc/common/fast_math.h), with
// no torch headers, shared by the CPU kernels (csrc/infogan/cpu) and the CUDA kernels
// (csrc/infogan/cuda). A is the accumulation type: float for float32/bfloat16/float16
// inputs, double for float64.
//
//   softplus(x) = max(x, 0) + log1p(exp(-|x|))
//   a_i  = t softplus(-r_i) + (1 - t) softplus(r_i)          (real rows)
//   b_j  = softplus(f_j),  g_j = softplus(-f_j) | -softplus(f_j)   (fake rows)
//   e_jk = logsumexp(l_jk) - l_jk[c_jk]                       (csrc/common/lse.h)
//   u_jb = softplus(-v_jb) if c_jb = 1 else softplus(v_jb)
//   h_jd = 0.5 log(2 pi) + 0.5 s_jd + 0.5 (c_jd - mu_jd)^2 exp(-s_jd)
#pragma once

#include "../common/fast_math.h"

namespace fastmi {

// Where each partial sum lives in a sums vector: per-code categorical sums follow. The
// one C++ definition (kernels/infogan/config.py holds the Python one; tests/test_layout.py
// checks that they agree).
enum SumIndex : int {
  kRealNeg = 0,  // sum_i softplus(-r_i)
  kRealPos = 1,  // sum_i softplus(r_i)
  kFakePos = 2,  // sum_j softplus(f_j)
  kFakeNeg = 3,  // sum_j softplus(-f_j)
  kBern = 4,     // sum_{j,b} u_jb
  kCont = 5,     // sum_{j,d} h_jd
  kCat0 = 6,     // sum_j e_jk, one per categorical code
};
constexpr int kFixedSums = 6;
// Where each diagnostic lives in the stats vector: mi_categorical follows.
enum StatIndex : int { kJsd = 0, kMiBern = 1, kMiCont = 2, kMiCat0 = 3 };

// ---- section 3: per-row terms --------------------------------------------------------

// u = -log Bernoulli(c | sigmoid(v)) for c in {0, 1}.
template <typename V>
FASTMI_FN V bernoulli_nll(V v, V c) {
  using S = typename Lane<V>::S;
  SoftplusPair<V> sp = softplus_pair(v);
  return c > S(0.5) ? sp.neg : sp.pos;
}

// h = -log N(c | mu, exp(s)), given inv_var = exp(-s).
template <typename V>
FASTMI_FN V gaussian_nll(V mu, V s, V inv_var, V c) {
  using S = typename Lane<V>::S;
  V d = c - mu;
  return S(kHalfLog2Pi) + S(0.5) * s + S(0.5) * d * d * inv_var;
}

// ---- section 5: gradients ------------------------------------------------------------

// d/dv of u: sigmoid(v) - c.
template <typename V>
FASTMI_FN V bernoulli_grad(V v, V c) {
  using S = typename Lane<V>::S;
  SigmoidPair<V> s = sigmoid_pair(v);
  return c > S(0.5) ? s.p_m1 : s.p;
}

// d/dmu and d/ds of h (before the lambda_cont / B scale).
template <typename V>
FASTMI_FN V gaussian_grad_mu(V mu, V inv_var, V c) { return (mu - c) * inv_var; }
template <typename V>
FASTMI_FN V gaussian_grad_logvar(V mu, V inv_var, V c) {
  using S = typename Lane<V>::S;
  V d = c - mu;
  return S(0.5) * (S(1) - d * d * inv_var);
}

// The scalar options of one call.
template <typename A>
struct LossParams {
  int n_categorical, n_bernoulli, n_continuous;
  bool learned_std, minimax, sum_reduction;
  A fixed_logvar, prior_entropy, lambda_cat, lambda_cont, real_label;
};

// Upstream-grad scales of the backward (section 5), for Br real and Bf fake rows.
template <typename A>
struct GradScales {
  A real;        // gD / Br
  A real_label;  // t
  A fake_d;      // gD / Bf
  A fake_g;      // gG / Bf (negated for minimax)
  A cat;         // (gD + gG + gI) lambda_cat / Bf
  A cont;        // (gD + gG + gI) lambda_cont / Bf
};
template <typename A>
FASTMI_FN GradScales<A> grad_scales(const LossParams<A>& p, A gD, A gG, A gI, int64_t Br, int64_t Bf) {
  A rr = p.sum_reduction ? A(1) : A(1) / A(Br > 0 ? Br : 1);
  A rf = p.sum_reduction ? A(1) : A(1) / A(Bf);
  A g = gD + gG + gI;
  return {gD * rr, p.real_label, gD * rf, gG * rf, g * p.lambda_cat * rf, g * p.lambda_cont * rf};
}

// d/dr_i = gD (sigmoid(r) - t) / Br, as gD (t (sigmoid(r) - 1) + (1 - t) sigmoid(r)) / Br:
// sigmoid(r) - t with t = 1 cancels to 0 in float once r > ~17, where the true value is
// -exp(-r); sigmoid_pair's "- 1" keeps it.
template <typename V, typename A>
FASTMI_FN V real_grad(V r, const GradScales<A>& s) {
  const SigmoidPair<V> sg = sigmoid_pair(r);
  return s.real * (s.real_label * sg.p_m1 + (A(1) - s.real_label) * sg.p);
}
// d/df_j = gD sigmoid(f) / Bf + gG (sigmoid(f) - 1) / Bf      (non-saturating)
//        | gD sigmoid(f) / Bf - gG sigmoid(f) / Bf              (minimax)
template <typename V, typename A>
FASTMI_FN V fake_grad(V f, const GradScales<A>& s, bool minimax) {
  SigmoidPair<V> sg = sigmoid_pair(f);
  return s.fake_d * sg.p + s.fake_g * (minimax ? -sg.p : sg.p_m1);
}

// ---- section 4: the outputs from the partial sums -----------------------------------

// The reciprocals finalize() scales by: 1 / max(Br, 1) and 1 / Bq.
template <typename A>
struct RowScale {
  A inv_real, inv_q;
};

// losses = {discriminator, generator, info}; stats = {jsd, mi_bern, mi_cont, mi_cat...}.
// Br / Bf is 0 when real / fake logits are absent; Bq is the number of Q rows; log_size(k)
// is log K_k and inv holds the row counts' reciprocals. The CUDA kernels pass both from
// the host: on the device a division is a slow-path subroutine call, and a kernel that
// calls one gets a register budget that made ptxas spill.
template <typename A, typename LogSize>
FASTMI_FN void finalize_scaled(const A* sums, LogSize log_size, const LossParams<A>& p, int64_t Br, int64_t Bf,
                               int64_t Bq, RowScale<A> inv, A* losses, A* stats) {
  const A nan = A(NAN);
  A rr = p.sum_reduction ? A(1) : inv.inv_real;
  A rq = p.sum_reduction ? A(1) : inv.inv_q;
  // a term of weight 0 is left out: 0 * softplus(+inf) would be NaN
  const A t = p.real_label;
  const A real = t == A(1)   ? sums[kRealNeg]
                 : t == A(0) ? sums[kRealPos]
                             : t * sums[kRealNeg] + (A(1) - t) * sums[kRealPos];
  A d_adv = Br > 0 ? real * rr : A(0);
  A g_adv = A(0);
  if (Bf > 0) {
    d_adv += sums[kFakePos] * rq;
    g_adv = (p.minimax ? -sums[kFakePos] : sums[kFakeNeg]) * rq;
  }
  A cat = sums[kBern];
  for (int k = 0; k < p.n_categorical; ++k) cat += sums[kCat0 + k];
  A info = p.lambda_cat * cat * rq + p.lambda_cont * sums[kCont] * rq;
  losses[0] = d_adv + info;
  losses[1] = g_adv + info;
  losses[2] = info;

  stats[kJsd] = (Br > 0 && Bf > 0)
                    ? A(kLog2) - A(0.5) * (sums[kRealNeg] * inv.inv_real + sums[kFakePos] * inv.inv_q)
                    : nan;
  stats[kMiBern] = p.n_bernoulli > 0 ? A(p.n_bernoulli) * A(kLog2) - sums[kBern] * inv.inv_q : nan;
  stats[kMiCont] = p.n_continuous > 0 ? A(p.n_continuous) * p.prior_entropy - sums[kCont] * inv.inv_q : nan;
  for (int k = 0; k < p.n_categorical; ++k) stats[kMiCat0 + k] = log_size(k) - sums[kCat0 + k] * inv.inv_q;
}

// finalize_scaled with log K_k and the reciprocals computed here from the class and row
// counts (cat_sizes: any integer array).
template <typename A, typename Size>
FASTMI_FN void finalize(const A* sums, const Size* cat_sizes, const LossParams<A>& p, int64_t Br, int64_t Bf,
                        int64_t Bq, A* losses, A* stats) {
  finalize_scaled(sums, [cat_sizes](int k) { return fm_log(A(cat_sizes[k])); }, p, Br, Bf, Bq,
                  RowScale<A>{A(1) / A(Br > 0 ? Br : 1), A(1) / A(Bq)}, losses, stats);
}

}  // namespace fastmi
