// fastmi CUDA kernels: reductions across the threads of a warp or a block. Every combine
// leaves the same bits in every thread that takes part, and adds in an order fixed by the
// block shape alone, so that results repeat bit for bit from run to run.
#pragma once

#include "../../common/lse.h"
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

// The log-sum-exp of a warp's lanes (csrc/common/lse.h), left in every lane: lse_merge is
// symmetric bit for bit, so both lanes of each butterfly step get the same result.
template <typename A>
FM_DEV Lse<A> warp_lse(Lse<A> lse) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) lse = lse_merge(lse, Lse<A>{shfl_xor(lse.m, o), shfl_xor(lse.s, o)});
  return lse;
}

// The lane-local log-sum-exp of x[lane], x[lane + step], ... below K, online (lse_push: one
// exp per element); four loads are issued before their values are folded in, so that each
// lane keeps four in flight.
template <typename T, typename A>
FM_DEV Lse<A> strided_lse(const T* x, int K, int lane, int step) {
  Lse<A> lse = lse_empty<A>();
  int j = lane;
  for (; j < K - 3 * step; j += 4 * step) {
    const A v0 = to_acc(x[j]), v1 = to_acc(x[j + step]), v2 = to_acc(x[j + 2 * step]), v3 = to_acc(x[j + 3 * step]);
    lse_push(lse, v0);
    lse_push(lse, v1);
    lse_push(lse, v2);
    lse_push(lse, v3);
  }
  for (; j < K; j += step) lse_push(lse, to_acc(x[j]));
  return lse;
}

// A warp per row: lane l of warp w; the categorical sums of the row go to slot w.
struct WarpRows {
  static constexpr int kSize = 32;
  int lane, warp;
  template <typename A>
  FM_DEV Lse<A> combine(Lse<A> lse, A*) const {
    return warp_lse(lse);
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
  FM_DEV Lse<A> combine(Lse<A> lse, A* scratch) const {
    lse = warp_lse(lse);
    __syncthreads();  // the previous combine's readers are done with scratch
    if ((lane & 31) == 0) {
      scratch[2 * warp] = lse.m;
      scratch[2 * warp + 1] = lse.s;
    }
    __syncthreads();
    Lse<A> merged{scratch[0], scratch[1]};
    for (int w = 1; w < kWarps; ++w) merged = lse_merge(merged, Lse<A>{scratch[2 * w], scratch[2 * w + 1]});
    return merged;
  }
  FM_DEV int slot() const { return 0; }
  FM_DEV bool leader() const { return lane == 0; }
};

}  // namespace cuda
}  // namespace fastmi
