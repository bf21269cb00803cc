// fastmi shared numerics: exp / log / log1p for scalars and CPU vector lanes, and the
// softplus and sigmoid pairs every op's per-element math builds on. Plain inline
// functions, no torch headers: the CPU kernels (csrc/<op>/cpu) and the CUDA kernels
// (csrc/<op>/cuda) include this one header.
//
//   softplus(x) = max(x, 0) + log1p(exp(-|x|))            softplus_pair: (softplus(x), softplus(-x))
//   sigmoid(x)  = 1 / (1 + exp(-x))                        sigmoid_pair:  (sigmoid(x), sigmoid(x) - 1)
//
// Which exp / log each target runs, on purpose:
// - CPU, float: branch-free polynomials (Cephes) built from arithmetic, selects and bit
//   casts (exp_poly, log_poly, log1p_poly below), so that the CPU kernels run them on
//   vectors of lanes; libm has no vector entry points short of -ffast-math.
// - CPU, double: libm (the float64 path is the accuracy path, for gradcheck).
// - CUDA device: the CUDA math library's expf / logf / log1pf, and for double a log1p
//   that avoids a division's slow path (see Lane<double>).
// - Triton (kernels/common/numerics.py): tl.exp / tl.log.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__CUDACC__)
#define FASTMI_FN __host__ __device__ __forceinline__
#else
#define FASTMI_FN inline __attribute__((always_inline))
#endif

namespace fastmi {

constexpr double kHalfLog2Pi = 0.918938533204672741780329736406;
constexpr double kLog2 = 0.693147180559945309417232121458;

// ---- lanes ----------------------------------------------------------------------------
//
// Every function below is a template over a lane type V: a scalar (float or double, as
// in the CUDA kernels) or a vector of them (GCC vector extensions, in the CPU kernels:
// csrc/common/cpu/lanes.h).
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

// a * b, rounded on its own before anything is added to it. On a CUDA device nvcc and
// ptxas fuse `a * b + c` into one FMA (one rounding instead of two) wherever they see it;
// __fmul_rn / __dmul_rn are products they never fuse. On the CPU, the plain product: the
// host compiler's -ffp-contract decides, as for every other product in these headers.
template <typename V>
FASTMI_FN V fm_mul_unfused(V a, V b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<V, float>) return __fmul_rn(a, b);
  else if constexpr (std::is_same_v<V, double>) return __dmul_rn(a, b);
  else return a * b;
#else
  return a * b;
#endif
}

// max(x, 0); a NaN gives 0 (the log1p term carries it).
template <typename V>
FASTMI_FN V fm_max0(V x) {
  using S = typename Lane<V>::S;
  return Lane<V>::max(x, Lane<V>::splat(S(0)));
}
template <typename V>
FASTMI_FN V fm_abs(V x) { return Lane<V>::abs(x); }

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


}  // namespace fastmi
