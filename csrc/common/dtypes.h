// fastmi: the storage dtypes of kernel inputs and outputs, and their conversions to and
// from the accumulation type, once for the CPU kernels, the CUDA kernels and the CUDA
// kernels' CPU emulation. No torch headers: a torch binding passes at::BFloat16 /
// at::Half data as bf16_t / f16_t (same bits).
//
//   to_acc(v)        float for float / bf16_t / f16_t, double for double (exact)
//   from_acc<T>(v)   back to T, rounding to nearest even (bf16, f16)
//
// On a CUDA device the conversions are the hardware's; elsewhere they are the bit
// manipulations below, which round the same way.
#pragma once

#include <cstdint>
#include <cstring>

#include "fast_math.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace fastmi {

struct bf16_t {
  uint16_t bits;
};
struct f16_t {
  uint16_t bits;
};

template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};

FASTMI_FN float float_from_bits(uint32_t b) {
  float f;
  memcpy(&f, &b, sizeof f);
  return f;
}
FASTMI_FN uint32_t bits_from_float(float f) {
  uint32_t b;
  memcpy(&b, &f, sizeof b);
  return b;
}

FASTMI_FN float to_acc(float v) { return v; }
FASTMI_FN double to_acc(double v) { return v; }
FASTMI_FN float to_acc(bf16_t v) { return float_from_bits(static_cast<uint32_t>(v.bits) << 16); }
FASTMI_FN float to_acc(f16_t v) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(v.bits));
#else
  const uint32_t sign = static_cast<uint32_t>(v.bits & 0x8000u) << 16;
  const uint32_t exp = (v.bits >> 10) & 0x1fu, mant = v.bits & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in float
    const float mag = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -mag : mag;
  }
  if (exp == 31) return float_from_bits(sign | 0x7f800000u | (mant << 13));
  return float_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
#endif
}

template <typename T>
FASTMI_FN T from_acc(typename AccOf<T>::type v);
template <>
FASTMI_FN float from_acc<float>(float v) { return v; }
template <>
FASTMI_FN double from_acc<double>(double v) { return v; }
template <>
FASTMI_FN bf16_t from_acc<bf16_t>(float v) {  // round to nearest even
#if defined(__CUDA_ARCH__)
  return bf16_t{__bfloat16_as_ushort(__float2bfloat16_rn(v))};
#else
  const uint32_t b = bits_from_float(v);
  if ((b & 0x7fffffffu) > 0x7f800000u) return bf16_t{static_cast<uint16_t>((b >> 16) | 0x40u)};
  return bf16_t{static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16)};
#endif
}
template <>
FASTMI_FN f16_t from_acc<f16_t>(float v) {  // round to nearest even
#if defined(__CUDA_ARCH__)
  return f16_t{__half_as_ushort(__float2half_rn(v))};
#else
  uint32_t f = bits_from_float(v);
  const uint32_t sign = f & 0x80000000u;
  f ^= sign;
  uint32_t h;
  if (f >= (143u << 23)) {  // >= 65536 (or inf / nan)
    h = f > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (f < (113u << 23)) {  // below 2^-14: a half subnormal; the float add rounds
    const uint32_t magic = 126u << 23;  // 0.5f: adding it aligns the half ulp 2^-24 to the float ulp
    h = bits_from_float(float_from_bits(f) + float_from_bits(magic)) - magic;
  } else {
    const uint32_t odd = (f >> 13) & 1u;
    f += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + odd;
    h = f >> 13;
  }
  return f16_t{static_cast<uint16_t>(h | (sign >> 16))};
#endif
}

}  // namespace fastmi
