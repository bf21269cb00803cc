// fastmi CUDA kernels: reductions across the threads of a warp or a block. Every combine
// leaves the same bits in every thread that takes part, and adds in an order fixed by the
// block shape alone, so that results repeat bit for bit from run to run.
#pragma once

#include "device.cuh"

namespace fastmi {
namespace cuda {

// Butterfly sum: every lane ends with the same bits (each step adds the same two values,
// and IEEE addition commutes).
template <typename V>
FM_DEV V warp_sum(V v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += shfl_xor(v, o);
  return v;
}

// A running log-sum-exp: m = max of the values seen (-inf before any), s = sum exp(x - m).
template <typename A>
struct Lse {
  A m, s;
};

// Folds one value in: one exp, two when the max moves. A NaN value fails the comparison
// and makes s NaN, so a NaN logit makes the code's term NaN, as in the reference.
template <typename A>
FM_DEV void lse_push(Lse<A>& l, A v) {
  if (v > l.m) {
    l.s *= fm_exp(l.m - v);  // 0 * exp(-inf) = 0 for the first value
    l.m = v;
  }
  l.s += fm_exp(v - l.m);
}

// Merges two partial log-sum-exps. Symmetric in (a, b) bit for bit, so both lanes of a
// butterfly step agree; an empty side (m = -inf) contributes its s = 0 without an exp.
template <typename A>
FM_DEV Lse<A> lse_merge(Lse<A> a, Lse<A> b) {
  const A M = a.m > b.m ? a.m : b.m;
  const A sa = a.m == M ? a.s : a.s * fm_exp(a.m - M);
  const A sb = b.m == M ? b.s : b.s * fm_exp(b.m - M);
  return {M, sa + sb};
}

template <typename A>
FM_DEV Lse<A> warp_lse(Lse<A> l) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) l = lse_merge(l, Lse<A>{shfl_xor(l.m, o), shfl_xor(l.s, o)});
  return l;
}

// The lane-local log-sum-exp of x[lane], x[lane + step], ... below K; four loads are
// issued before their values are folded in, so that each lane keeps four in flight.
template <typename T, typename A>
FM_DEV Lse<A> strided_lse(const T* x, int K, int lane, int step) {
  Lse<A> l{-A(INFINITY), A(0)};
  int j = lane;
  for (; j < K - 3 * step; j += 4 * step) {
    const A v0 = to_acc(x[j]), v1 = to_acc(x[j + step]), v2 = to_acc(x[j + 2 * step]), v3 = to_acc(x[j + 3 * step]);
    lse_push(l, v0);
    lse_push(l, v1);
    lse_push(l, v2);
    lse_push(l, v3);
  }
  for (; j < K; j += step) lse_push(l, to_acc(x[j]));
  return l;
}

// A warp per row: lane l of warp w; the categorical sums of the row go to slot w.
struct WarpRows {
  static constexpr int kSize = 32;
  int lane, warp;
  template <typename A>
  FM_DEV Lse<A> combine(Lse<A> l, A*) const {
    return warp_lse(l);
  }
  FM_DEV int slot() const { return warp; }
  FM_DEV bool leader() const { return lane == 0; }
};

// A block per row: the warps' results meet in shared memory and every thread merges them
// in warp order, so that all threads hold the same bits. Every thread must call combine.
struct BlockRows {
  static constexpr int kSize = kThreads;
  int lane, warp;
  template <typename A>
  FM_DEV Lse<A> combine(Lse<A> l, A* scratch) const {
    l = warp_lse(l);
    __syncthreads();  // the previous combine's readers are done with scratch
    if ((lane & 31) == 0) {
      scratch[2 * warp] = l.m;
      scratch[2 * warp + 1] = l.s;
    }
    __syncthreads();
    Lse<A> r{scratch[0], scratch[1]};
    for (int w = 1; w < kWarps; ++w) r = lse_merge(r, Lse<A>{scratch[2 * w], scratch[2 * w + 1]});
    return r;
  }
  FM_DEV int slot() const { return 0; }
  FM_DEV bool leader() const { return lane == 0; }
};

}  // namespace cuda
}  // namespace fastmi
