// fastmi CUDA kernels: the tile layout's shared-memory tile. A block stages the 256 * W
// contiguous elements of 256 Q rows into shared memory with coalesced 16-byte loads,
// converted to the accumulation type, one row per thread; the odd row stride Wp makes the
// threads' reads of column j hit 32 distinct banks. The backward overwrites each row with
// its gradient and stores the tile back the same way.
#pragma once

#include "device.cuh"

namespace fastmi {
namespace cuda {

constexpr int kTileRows = kThreads;  // one row per thread

// The tile's row stride: W rounded up to odd.
FM_HD int odd_stride(int W) { return W | 1; }

// Row of element e of a tile: (e + 0.5) / W in float. Exact here: e < 256 * 40, so the
// quotient's rounding error (< 2^-22 * 257) is far below its distance 0.5 / W >= 0.0125
// from the nearest integer.
FM_DEV int row_of(int e, float inv_w) { return static_cast<int>((static_cast<float>(e) + 0.5f) * inv_w); }

// tile[r * Wp + c] = src[r * W + c] for the n = rows * W elements of a tile, 16 bytes per
// load where src is aligned (the tile starts at row 256 t: 512-byte multiples of q).
template <typename T, typename A>
FM_DEV void stage_tile(const T* __restrict__ src, int n, int W, int Wp, float inv_w, A* tile, bool vec, int tid) {
  constexpr int V = 16 / sizeof(T);
  const int n_vec = vec ? n / V : 0;
  for (int c = tid; c < n_vec; c += kThreads) {
    T vals[V];
    load16(src + c * V, vals);
    const int e = c * V;
    int r = row_of(e, inv_w), col = e - r * W;
#pragma unroll
    for (int v = 0; v < V; ++v) {
      tile[r * Wp + col] = to_acc(vals[v]);
      if (++col == W) {
        col = 0;
        ++r;
      }
    }
  }
  for (int e = n_vec * V + tid; e < n; e += kThreads) {
    const int r = row_of(e, inv_w);
    tile[r * Wp + (e - r * W)] = to_acc(src[e]);
  }
}

// dst[r * W + c] = tile[r * Wp + c], rounded once to T.
template <typename T, typename A>
FM_DEV void store_tile(T* __restrict__ dst, int n, int W, int Wp, float inv_w, const A* tile, bool vec, int tid) {
  constexpr int V = 16 / sizeof(T);
  const int n_vec = vec ? n / V : 0;
  for (int c = tid; c < n_vec; c += kThreads) {
    T vals[V];
    const int e = c * V;
    int r = row_of(e, inv_w), col = e - r * W;
#pragma unroll
    for (int v = 0; v < V; ++v) {
      vals[v] = from_acc<T>(tile[r * Wp + col]);
      if (++col == W) {
        col = 0;
        ++r;
      }
    }
    store16(dst + c * V, vals);
  }
  for (int e = n_vec * V + tid; e < n; e += kThreads) {
    const int r = row_of(e, inv_w);
    dst[e] = from_acc<T>(tile[r * Wp + (e - r * W)]);
  }
}

}  // namespace cuda
}  // namespace fastmi
