// fastmi per-row math: ARCHITECTURE.md sections 3 to 5, once for C++ and CUDA.
//
// Plain inline functions of scalars, with no torch headers, shared by the CPU kernel
// (csrc/cpu) and the CUDA kernels (csrc/cuda). A is the accumulation type: float for
// float32/bfloat16/float16 inputs, double for float64.
//
//   softplus(x) = max(x, 0) + log1p(exp(-|x|))
//   a_i  = t softplus(-r_i) + (1 - t) softplus(r_i)          (real rows)
//   b_j  = softplus(f_j),  g_j = softplus(-f_j) | -softplus(f_j)   (fake rows)
//   e_jk = logsumexp(l_jk) - l_jk[c_jk]
//   u_jb = softplus(-v_jb) if c_jb = 1 else softplus(v_jb)
//   h_jd = 0.5 log(2 pi) + 0.5 s_jd + 0.5 (c_jd - mu_jd)^2 exp(-s_jd)
//
// On the host, float exp/log are branch-free polynomials (Cephes) built from arithmetic,
// selects and bit casts, so the CPU kernel runs them on vectors of lanes; libm has no
// vector entry points short of -ffast-math. The device uses CUDA's expf/logf/log1pf.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define FASTMI_FN __host__ __device__ __forceinline__
#else
#define FASTMI_FN inline __attribute__((always_inline))
#endif

namespace fastmi {

constexpr double kHalfLog2Pi = 0.918938533204672741780329736406;
constexpr double kLog2 = 0.693147180559945309417232121458;

// Where each partial sum lives in a sums vector: per-code categorical sums follow.
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

// ---- lanes ----------------------------------------------------------------------------
//
// Every function below is a template over a lane type V: a scalar (float or double, as
// in the CUDA kernels) or a vector of them (GCC vector extensions, in the CPU kernel).
// Lane<V> supplies what differs between the two: broadcasting a scalar, conversions,
// bit casts, max and abs (one instruction each on vectors), and exp/log. Selects are
// written as `mask ? a : b`, which is a per-lane blend for vectors; comparisons with NaN
// are false, which the NaN handling relies on.
template <typename V>
struct Lane;

// exp for float elements: exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln2 / 2, with
// Cephes' two-constant reduction and exp(r) = 1 + r + r^2 P(r), P of degree 4, fitted to
// the relative error of exp on that interval (max 6.7e-8 evaluated in float32, under one
// ulp: tests/test_numerics.py checks it; Cephes' degree-5 P buys nothing more in float).
// exp_reduced returns exp(r) and n for an x already clamped to the range its caller handles.
template <typename V>
FASTMI_FN V exp_reduced(V xc, V& n) {
  using L = Lane<V>;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  n = (xc * 1.44269504088896341f + magic) - magic;
  V r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  V z = r * r;
  V p = L::splat(1.3814612249e-3f);
  p = p * r + 8.3687101314e-3f;
  p = p * r + 4.1668387397e-2f;
  p = p * r + 1.6666520687e-1f;
  p = p * r + 4.9999993451e-1f;
  return p * z + r + 1.0f;
}

// exp(x) for any x: 2^n is applied as two halves so that results down to the subnormals
// and up to overflow come out right; a NaN passes the clamps and comes out NaN.
template <typename V>
FASTMI_FN V exp_poly(V x) {
  using L = Lane<V>;
  V xc = x < -104.0f ? L::splat(-104.0f) : x;
  xc = xc > 89.0f ? L::splat(89.0f) : xc;
  V n;
  V y = exp_reduced(xc, n);
  auto ni = L::to_int(n);
  auto n1 = ni >> 1;
  return y * L::from_bits((n1 + 127) << 23) * L::from_bits((ni - n1 + 127) << 23);
}

// exp(x) for x <= 0 (softmax numerators, exp(-|x|)): x is clamped from below at -87, so
// 2^n (n >= -126) is a normal float, the result never a subnormal (whose arithmetic can
// be slow) and one max replaces exp_poly's two clamps and two scales. Below -87 the
// result stays at exp(-87) = 1.6e-38, which no loss or gradient here can tell from the
// true value or from 0; a NaN passes the max (`x < c ? c : x` keeps x) and stays NaN.
template <typename V>
FASTMI_FN V exp_nonpos_poly(V x) {
  using L = Lane<V>;
  V n;
  V y = exp_reduced(x < -87.0f ? L::splat(-87.0f) : x, n);
  return y * L::from_bits((L::to_int(n) + 127) << 23);
}

// Cephes-style log for normal float elements (x >= 2^-126; every log here takes x >= 1):
// +inf and NaN pass through.
template <typename V>
FASTMI_FN V log_poly(V x) {
  using L = Lane<V>;
  auto b = L::bits(x);
  V e = L::to_float(((b >> 23) & 0xff) - 126);
  V m = L::from_bits((b & 0x007fffff) | 0x3f000000);  // mantissa in [0.5, 1)
  auto small = m < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  m = small ? m + m - 1.0f : m - 1.0f;
  V z = m * m;
  V p = L::splat(7.0376836292e-2f);
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  V y = p * m * z;
  y = y + e * -2.12194440e-4f;
  y = y - 0.5f * z;
  V result = m + y + e * 0.693359375f;
  return x < INFINITY ? result : x;
}

// log1p(y) for y in [0, 1] (here y = exp(-|x|)): log(1 + y) corrected for the rounding
// of 1 + y, log1p(y) = log(u) - ((u - 1) - y) / u with u = 1 + y, so that a tiny y gives
// y, not 0. The correction is at most half an ulp of u, so 1 / u on [1, 2] is taken as
// the chord 1.5 - 0.5 u (exact at both ends, off by < 12% in between: < 1e-8 absolute)
// instead of a vector division.
template <typename V>
FASTMI_FN V log1p_poly(V y) {
  V u = 1.0f + y;
  return log_poly(u) - ((u - 1.0f) - y) * (1.5f - 0.5f * u);
}

template <>
struct Lane<float> {
  using S = float;
  static FASTMI_FN float splat(float s) { return s; }
  static FASTMI_FN float max(float a, float b) { return a > b ? a : b; }
  static FASTMI_FN float abs(float x) { return x < 0.0f ? -x : x; }
  static FASTMI_FN int32_t to_int(float x) { return static_cast<int32_t>(x); }
  static FASTMI_FN float to_float(int32_t i) { return static_cast<float>(i); }
  static FASTMI_FN int32_t bits(float f) {
    int32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
  }
  static FASTMI_FN float from_bits(int32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
  }
#if defined(__CUDA_ARCH__)
  static FASTMI_FN float exp(float x) { return expf(x); }
  static FASTMI_FN float exp_nonpos(float x) { return expf(x); }
  static FASTMI_FN float log(float x) { return logf(x); }
  static FASTMI_FN float log1p(float x) { return log1pf(x); }
#else
  static FASTMI_FN float exp(float x) { return exp_poly(x); }
  static FASTMI_FN float exp_nonpos(float x) { return exp_nonpos_poly(x); }
  static FASTMI_FN float log(float x) { return log_poly(x); }
  static FASTMI_FN float log1p(float x) { return log1p_poly(x); }
#endif
};

template <>
struct Lane<double> {
  using S = double;
  static FASTMI_FN double splat(double s) { return s; }
  static FASTMI_FN double max(double a, double b) { return a > b ? a : b; }
  static FASTMI_FN double abs(double x) { return x < 0.0 ? -x : x; }
  static FASTMI_FN double exp(double x) { return ::exp(x); }
  static FASTMI_FN double exp_nonpos(double x) { return ::exp(x); }
  static FASTMI_FN double log(double x) { return ::log(x); }
#if defined(__CUDA_ARCH__)
  // log1p(y) for y in [0, 1] (its one use here: y = exp(-|x|)), as log1p_poly corrects
  // log(1 + y) for the rounding of 1 + y; CUDA's log1p divides, and the division's
  // slow-path subroutine call cost the fp64 kernels registers. 1 / u for u in [1, 2]:
  // the hardware estimate and two Newton steps.
  static FASTMI_FN double log1p(double y) {
    const double u = 1.0 + y;
    double r;
    asm("rcp.approx.ftz.f64 %0, %1;" : "=d"(r) : "d"(u));
    double e = fma(-u, r, 1.0);
    r = fma(r, e, r);
    e = fma(-u, r, 1.0);
    r = fma(r, e, r);
    return ::log(u) - ((u - 1.0) - y) * r;
  }
#else
  static FASTMI_FN double log1p(double x) { return ::log1p(x); }
#endif
};

template <typename V>
FASTMI_FN V fm_exp(V x) { return Lane<V>::exp(x); }
// exp(x) for x <= 0 or NaN; where the true value is below exp(-87) = 1.6e-38, the result
// may be off by up to that much.
template <typename V>
FASTMI_FN V fm_exp_nonpos(V x) { return Lane<V>::exp_nonpos(x); }
template <typename V>
FASTMI_FN V fm_log(V x) { return Lane<V>::log(x); }
template <typename V>
FASTMI_FN V fm_log1p(V x) { return Lane<V>::log1p(x); }

// max(x, 0); a NaN gives 0 (the log1p term carries it).
template <typename V>
FASTMI_FN V fm_max0(V x) {
  using S = typename Lane<V>::S;
  return Lane<V>::max(x, Lane<V>::splat(S(0)));
}
template <typename V>
FASTMI_FN V fm_abs(V x) { return Lane<V>::abs(x); }

// ---- section 3: per-row terms --------------------------------------------------------

// softplus(x) and softplus(-x), from one exp and one log1p.
template <typename V>
struct SoftplusPair {
  V pos;  // softplus(x)  = -log sigmoid(-x)
  V neg;  // softplus(-x) = -log sigmoid(x)
};
template <typename V>
FASTMI_FN SoftplusPair<V> softplus_pair(V x) {
  V tail = fm_log1p(fm_exp_nonpos(-fm_abs(x)));
  return {fm_max0(x) + tail, fm_max0(-x) + tail};
}

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

// sigmoid(x) and sigmoid(x) - 1 = -sigmoid(-x), from one exp: the "- 1" is folded in
// before any rounding to a 16-bit type.
template <typename V>
struct SigmoidPair {
  V p;     // sigmoid(x)
  V p_m1;  // sigmoid(x) - 1
};
template <typename V>
FASTMI_FN SigmoidPair<V> sigmoid_pair(V x) {
  using S = typename Lane<V>::S;
  V e = fm_exp_nonpos(-fm_abs(x));
  V inv = S(1) / (S(1) + e);
  V small = e * inv;  // sigmoid(-|x|)
  auto nonneg = x >= S(0);
  return {nonneg ? inv : small, nonneg ? -small : -inv};
}

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

// d/dr_i = gD (sigmoid(r) - t) / Br
template <typename V, typename A>
FASTMI_FN V real_grad(V r, const GradScales<A>& s) {
  return s.real * (sigmoid_pair(r).p - s.real_label);
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
  A d_adv = Br > 0 ? (p.real_label * sums[kRealNeg] + (A(1) - p.real_label) * sums[kRealPos]) * rr : A(0);
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
