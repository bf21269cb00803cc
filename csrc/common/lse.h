// fastmi: log-sum-exp, once for every C++ and CUDA kernel.
//
// A log-sum-exp is carried as Lse{m, s}: m the largest value seen (-inf before any) and
// s = sum exp(x - m), so that LSE = m + log(s) and softmax(x) = exp(x - m) / s. Every
// function is a template over a lane type V of csrc/common/fast_math.h: a scalar (CUDA
// threads, CPU rows) or a vector of CPU lanes, with selects for branches.
//
//   lse_push(l, v)       folds one value in, with ONE exp: exp(min - max) of (m, v)
//   lse_merge(a, b)      two partial results (lanes of a warp, CPU chunks)
//   lse_of(K, x, ex)     K values at hand (registers, a tile, a short row): their max
//                        first, then the sum of exp(x - max) (ex receives each term)
//   lse_from_max(m, K, x, ex)   lse_of's sum, for a max m the caller found: one row
//                        spread over the lanes of several vectors (CPU), m across them
//   lse_log(l)           m + log(s)
//   lse_minus(l, v)      log(s) - (v - m) = LSE - v: a categorical NLL when v is the code's logit
//
// Infinities, at their limits (docs/ARCHITECTURE.md, "Infinite inputs"): where IEEE would
// give inf - inf = NaN, sub_max takes x - m at its limit, so that a max of +inf makes the
// softmax uniform over the +inf values (each weighs exp(0) = 1) and LSE - v is log(n) for
// v one of the n at +inf, +inf for any other v; -inf values weigh 0. Finite inputs take
// the plain arithmetic, bit for bit: lse_of / lse_from_max switch to the limit path only
// when a max is not finite.
//
// NaN: a NaN value fails every comparison and turns s into NaN, so a NaN logit gives a
// NaN log-sum-exp, as in the reference.
#pragma once

#include <type_traits>

#include "fast_math.h"

namespace fastmi {

template <typename V>
struct Lse {
  V m;  // the largest value folded in (-inf: none yet)
  V s;  // sum of exp(x - m) over the values folded in
};

// x - m for a running max m of x, at its limit where IEEE gives inf - inf = NaN: with
// m = +inf, 0 for the +inf values and -inf for the others; with m = -inf (nothing but
// -inf so far), -inf. For finite m it is x - m, bit for bit; a NaN stays NaN.
template <typename V>
FASTMI_FN V sub_max(V x, V m) {
  using S = typename Lane<V>::S;
  const V inf = Lane<V>::splat(S(INFINITY)), zero = Lane<V>::splat(S(0));
  const V at_pos_inf = x == m ? zero : -inf;
  const V at_neg_inf = -inf;
  return m == inf ? at_pos_inf : (m == -inf ? at_neg_inf : x - m);
}

// Whether every lane of m is finite (checked once per log-sum-exp, not per value).
template <typename V>
FASTMI_FN bool all_finite(V m) {
  const V zero_if_finite = m - m;  // NaN for an infinite or NaN lane
  if constexpr (std::is_arithmetic_v<V>) {
    return zero_if_finite == zero_if_finite;
  } else {
    for (size_t i = 0; i < sizeof(V) / sizeof(m[0]); ++i)
      if (!(zero_if_finite[i] == zero_if_finite[i])) return false;
    return true;
  }
}

template <typename V>
FASTMI_FN Lse<V> lse_empty() {
  using S = typename Lane<V>::S;
  return {Lane<V>::splat(-S(INFINITY)), Lane<V>::splat(S(0))};
}

// One value in. When v is the new max the old sum is rescaled by exp(m - v) and v adds
// exp(0) = 1; otherwise v adds exp(v - m). Either way the exponent is min - max <= 0, so
// one exp_nonpos serves both (the first value: exp(-inf) = 0 rescales s = 0); sub_max
// takes it at the limit when both are +inf or -inf (v weighs 1 or 0). The rescaled
// sum is rounded before the 1 is added (fm_mul_unfused): on a CUDA device, where the
// product and the add would otherwise fuse into one FMA, that keeps every sum bit for bit
// what the CUDA kernels computed before they shared this function (a rescale, then an add).
template <typename V>
FASTMI_FN void lse_push(Lse<V>& l, V v) {
  using S = typename Lane<V>::S;
  const auto up = v > l.m;
  const V lo = up ? l.m : v;
  const V hi = up ? v : l.m;
  const V e = fm_exp_nonpos(sub_max(lo, hi));
  l.s = up ? fm_mul_unfused(l.s, e) + S(1) : l.s + e;
  l.m = hi;
}

// Two partial log-sum-exps. Symmetric in (a, b) bit for bit, so that both lanes of a
// butterfly step agree; an empty side (m = -inf) contributes its s = 0 without an exp.
template <typename V>
FASTMI_FN Lse<V> lse_merge(Lse<V> a, Lse<V> b) {
  const V M = Lane<V>::max(a.m, b.m);
  const V sa = a.m == M ? a.s : a.s * fm_exp_nonpos(a.m - M);
  const V sb = b.m == M ? b.s : b.s * fm_exp_nonpos(b.m - M);
  return {M, sa + sb};
}

namespace lse_detail {
// x(j) of an array or a callable j -> V.
template <typename V, typename X>
FASTMI_FN V value_at(X& x, int64_t j) {
  if constexpr (std::is_invocable_v<X&, int64_t>) return x(j);
  else return x[j];
}
}  // namespace lse_detail

// {m, sum of exp(x(j) - m)} for K values x(j), j < K, whose max m (lane by lane) the
// caller has: one exp per value; when ex is not null, ex[j] receives exp(x(j) - m). A
// CPU row read as several vectors takes its max across their lanes first, so that every
// lane's s is relative to the same m and the lanes' s add up to the row's.
template <typename V, typename X>
FASTMI_FN Lse<V> lse_from_max(V m, int64_t K, X&& x, V* ex) {
  V s = Lane<V>::splat(typename Lane<V>::S(0));
  if (all_finite(m)) {
    for (int64_t j = 0; j < K; ++j) {
      const V e = fm_exp_nonpos(lse_detail::value_at<V>(x, j) - m);
      if (ex != nullptr) ex[j] = e;
      s = s + e;
    }
  } else {  // a +inf, -inf or NaN max somewhere: the limit (sub_max)
    for (int64_t j = 0; j < K; ++j) {
      const V e = fm_exp_nonpos(sub_max(lse_detail::value_at<V>(x, j), m));
      if (ex != nullptr) ex[j] = e;
      s = s + e;
    }
  }
  return {m, s};
}

// The Lse of K values x(j), j < K, that are cheap to read twice: the max first, then one
// exp per value. When ex is not null, ex[j] receives exp(x(j) - max) (the backward's
// softmax numerators). X is an array or a callable j -> V.
template <typename V, typename X>
FASTMI_FN Lse<V> lse_of(int64_t K, X&& x, V* ex) {
  V mx = lse_detail::value_at<V>(x, 0);
  for (int64_t j = 1; j < K; ++j) mx = Lane<V>::max(lse_detail::value_at<V>(x, j), mx);
  return lse_from_max(mx, K, x, ex);
}

template <typename V>
FASTMI_FN V lse_log(const Lse<V>& l) {
  return l.m + fm_log(l.s);
}

// LSE - v, the categorical NLL of the class whose logit is v, as log(s) - (v - m): m + log(s)
// - v would round m + log(s) at m's magnitude first, which costs a confident prediction
// (v = m, s = 1 + tiny) all its digits. With a +inf max, sub_max makes it log(n) when v is
// one of the n logits at +inf and +inf otherwise (the limit).
template <typename V>
FASTMI_FN V lse_minus(const Lse<V>& l, V v) {
  return fm_log(l.s) - sub_max(v, l.m);
}

}  // namespace fastmi
