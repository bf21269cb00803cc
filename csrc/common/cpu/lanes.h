// fastmi CPU vector lanes: kLanes values processed at once as one GCC vector, for any
// op's CPU kernels. No torch headers.
//
// Plain arithmetic on the vector types below compiles to AVX2 / AVX-512 / SSE code on
// x86 and to NEON on aarch64 (GCC splits a 256-bit vector into two 128-bit halves), and
// `mask ? a : b` to a per-lane blend. Lane<f32xL> / Lane<f64xL> plug the vectors into
// the shared numerics of csrc/common/fast_math.h, so fast_math.h, lse.h and each op's
// math.h run on them unchanged. Here too:
//
//   load_row / store_row    up to kLanes contiguous values <-> one vector (storage dtype
//                           T <-> lane scalar; bfloat16 / float16 through dtypes.h)
//   load_lanes              lane r <- src[r * stride]: one column of kLanes rows
//   transpose8              8 vectors of 8 lanes, transposed in registers
//   hsum, hmax              the lanes' sum / max, in lane order (deterministic)
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "../dtypes.h"
#include "../fast_math.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace fastmi {

constexpr int64_t kLanes = 8;  // values per vector: one AVX2 vector of floats

typedef float f32xL __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t i32xL __attribute__((vector_size(kLanes * sizeof(int32_t))));
typedef double f64xL __attribute__((vector_size(kLanes * sizeof(double))));
typedef int64_t i64xL __attribute__((vector_size(kLanes * sizeof(int64_t))));

template <>
struct Lane<f32xL> {
  using S = float;
  using I = i32xL;
  static FASTMI_FN f32xL splat(float s) { return f32xL{} + s; }
  static FASTMI_FN i32xL to_int(f32xL x) { return __builtin_convertvector(x, i32xL); }
  static FASTMI_FN f32xL to_float(i32xL i) { return __builtin_convertvector(i, f32xL); }
  static FASTMI_FN i32xL bits(f32xL f) { return reinterpret_cast<i32xL>(f); }
  static FASTMI_FN f32xL from_bits(i32xL b) { return reinterpret_cast<f32xL>(b); }
  static FASTMI_FN f32xL exp(f32xL x) { return exp_poly(x); }
  static FASTMI_FN f32xL exp_nonpos(f32xL x) { return exp_nonpos_poly(x); }
  static FASTMI_FN f32xL log(f32xL x) { return log_poly(x); }
  static FASTMI_FN f32xL log1p(f32xL x) { return log1p_poly(x); }
  // a > b ? a : b (NaN in either: b). On AVX one instruction, which GCC does not pick for
  // the select by itself; elsewhere (SSE-only x86, aarch64) the select, same result.
  static FASTMI_FN f32xL max(f32xL a, f32xL b) {
#if defined(__AVX__)
    return _mm256_max_ps(a, b);
#else
    return a > b ? a : b;
#endif
  }
  static FASTMI_FN f32xL abs(f32xL x) { return from_bits(bits(x) & 0x7fffffff); }
};

// float64 is the accuracy path (gradcheck), not a speed path: libm, lane by lane.
template <>
struct Lane<f64xL> {
  using S = double;
  using I = i64xL;
  static FASTMI_FN f64xL splat(double s) { return f64xL{} + s; }
  template <typename F>
  static FASTMI_FN f64xL map(f64xL x, F f) {
    for (int64_t r = 0; r < kLanes; ++r) x[r] = f(x[r]);
    return x;
  }
  static FASTMI_FN f64xL exp(f64xL x) { return map(x, [](double v) { return std::exp(v); }); }
  static FASTMI_FN f64xL exp_nonpos(f64xL x) { return exp(x); }
  static FASTMI_FN f64xL log(f64xL x) { return map(x, [](double v) { return std::log(v); }); }
  static FASTMI_FN f64xL log1p(f64xL x) { return map(x, [](double v) { return std::log1p(v); }); }
  static FASTMI_FN f64xL max(f64xL a, f64xL b) { return a > b ? a : b; }
  static FASTMI_FN f64xL abs(f64xL x) { return x < 0.0 ? -x : x; }
};

// The vector, its integer twin and the twin's element for an accumulation type A.
template <typename A>
struct LaneOf;
template <>
struct LaneOf<float> {
  using V = f32xL;
  using I = i32xL;
  using E = int32_t;
};
template <>
struct LaneOf<double> {
  using V = f64xL;
  using I = i64xL;
  using E = int64_t;
};

// 0, 1, ..., kLanes - 1, as the lane type's mask type: `iota < nr` masks the live lanes.
template <typename I>
FASTMI_FN I lane_iota() {
  I iota{};
  for (int64_t r = 0; r < kLanes; ++r) iota[r] = r;
  return iota;
}

template <typename V>
FASTMI_FN typename Lane<V>::S hsum(V v) {  // in lane order: deterministic
  typename Lane<V>::S s = 0;
  for (int64_t r = 0; r < kLanes; ++r) s += v[r];
  return s;
}

// The lanes' max, folded in lane order with `a > b ? a : b` (a NaN in lane 0 stays, a NaN
// in a later lane is passed over; either way the sums that follow turn NaN).
template <typename V>
FASTMI_FN typename Lane<V>::S hmax(V v) {
  typename Lane<V>::S m = v[0];
  for (int64_t r = 1; r < kLanes; ++r) m = v[r] > m ? v[r] : m;
  return m;
}

// A stored value as a lane scalar S and back: float / double as they are, bfloat16 and
// float16 through dtypes.h (exact widening; narrowing rounds to nearest even). Except
// float16 on x86 with F16C: the hardware's conversions, one instruction per value or per
// vector (load_row, store_row) where dtypes.h takes a dozen; torch's at::Half uses them
// there too. They give dtypes.h's results for every value but NaN, whose payload the
// hardware keeps (quieted) where dtypes.h writes the canonical one.
#if defined(__F16C__)
#define FASTMI_X86_F16C 1
#endif

template <typename S, typename T>
FASTMI_FN S to_lane(T v) {
  if constexpr (std::is_same_v<T, S>) {
    return v;
  } else {
#if defined(FASTMI_X86_F16C)
    if constexpr (std::is_same_v<T, f16_t>) return static_cast<S>(_cvtsh_ss(v.bits));
#endif
    return static_cast<S>(to_acc(v));
  }
}
template <typename T, typename S>
FASTMI_FN T from_lane(S v) {
  if constexpr (std::is_same_v<T, S>) {
    return v;
  } else {
#if defined(FASTMI_X86_F16C)
    if constexpr (std::is_same_v<T, f16_t>) return f16_t{static_cast<uint16_t>(_cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT))};
#endif
    return from_acc<T>(v);
  }
}

// A vector whose lane r is src[r * stride] (converted to the lane scalar), built in
// registers from kLanes scalar loads: writing lanes one by one through memory and then
// reading the vector back stalls store-to-load forwarding. Lanes r >= nr repeat lane 0,
// so they read valid memory; their results are masked out.
template <typename V, typename T, size_t... R>
FASTMI_FN V gather_lanes(const T* src, int64_t stride, int64_t nr, std::index_sequence<R...>) {
  using S = typename Lane<V>::S;
  return V{to_lane<S>(src[(static_cast<int64_t>(R) < nr ? static_cast<int64_t>(R) : 0) * stride])...};
}
template <typename V, typename T>
FASTMI_FN V load_lanes(const T* src, int64_t stride, int64_t nr) {
  return gather_lanes<V>(src, stride, nr, std::make_index_sequence<kLanes>{});
}

// n <= kLanes contiguous values x[0..n) as a vector of lane scalars; lanes past n get
// `pad`. float (and double) rows are one vector load, bfloat16 a widening shift, float16
// one conversion with F16C.
template <typename V, typename T>
FASTMI_FN V load_row(const T* x, int64_t n, typename Lane<V>::S pad) {
  using S = typename Lane<V>::S;
  V v;
  if (n == kLanes) {
    if constexpr (std::is_same_v<T, S>) {
      memcpy(&v, x, sizeof v);
      return v;
    } else if constexpr (std::is_same_v<T, bf16_t> && std::is_same_v<S, float>) {
      typedef uint16_t u16xL __attribute__((vector_size(kLanes * sizeof(uint16_t))));
      u16xL raw;
      memcpy(&raw, x, sizeof raw);
      return reinterpret_cast<V>(__builtin_convertvector(raw, i32xL) << 16);
#if defined(FASTMI_X86_F16C)
    } else if constexpr (std::is_same_v<T, f16_t> && std::is_same_v<V, f32xL>) {
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
#endif
    } else {
      return load_lanes<V>(x, 1, kLanes);
    }
  }
  v = Lane<V>::splat(pad);
  for (int64_t r = 0; r < n; ++r) v[r] = to_lane<S>(x[r]);
  return v;
}

// Stores lanes [0, n) of v to dst, converted to T.
template <typename T, typename V>
FASTMI_FN void store_row(T* dst, V v, int64_t n) {
  if constexpr (std::is_same_v<T, typename Lane<V>::S>) {
    if (n == kLanes) {
      memcpy(dst, &v, sizeof v);
      return;
    }
  }
#if defined(FASTMI_X86_F16C)
  if constexpr (std::is_same_v<T, f16_t> && std::is_same_v<V, f32xL>) {
    if (n == kLanes) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
      return;
    }
  }
#endif
  for (int64_t r = 0; r < n; ++r) dst[r] = from_lane<T>(v[r]);
}

// Transposes 8 vectors of 8 lanes in registers (its own inverse): 8 rows of 8 columns
// in, 8 columns of 8 rows out. __builtin_shuffle with constant masks compiles to the
// unpack / shuffle / permute sequence of an AVX 8x8 transpose (to zips on NEON).
template <typename V>
FASTMI_FN void transpose8(V* v) {
  static_assert(kLanes == 8, "transpose8 is an 8x8 transpose");
  using I = typename LaneOf<typename Lane<V>::S>::I;
  auto mix = [](V a, V b, I mask) { return __builtin_shuffle(a, b, mask); };
  const I lo{0, 8, 1, 9, 4, 12, 5, 13}, hi{2, 10, 3, 11, 6, 14, 7, 15};
  const I even{0, 1, 8, 9, 4, 5, 12, 13}, odd{2, 3, 10, 11, 6, 7, 14, 15};
  const I low{0, 1, 2, 3, 8, 9, 10, 11}, high{4, 5, 6, 7, 12, 13, 14, 15};
  V t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = mix(v[2 * i], v[2 * i + 1], lo);
    t[2 * i + 1] = mix(v[2 * i], v[2 * i + 1], hi);
  }
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 2; ++i) {
      u[4 * h + 2 * i] = mix(t[4 * h + i], t[4 * h + i + 2], even);
      u[4 * h + 2 * i + 1] = mix(t[4 * h + i], t[4 * h + i + 2], odd);
    }
  // u[c] holds column c (low half) and c + 4 (high half) of rows 0-3, u[4 + c] of rows 4-7
  for (int c = 0; c < 4; ++c) {
    v[c] = mix(u[c], u[4 + c], low);
    v[c + 4] = mix(u[c], u[4 + c], high);
  }
}

}  // namespace fastmi
