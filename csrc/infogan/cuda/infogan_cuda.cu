// fastmi fused CUDA kernels: the InfoGAN losses and MI bounds of one batch in ONE launch,
// and every gradient in ONE more launch that recomputes from the inputs.
//
// The per-row math is csrc/infogan/math.h (ARCHITECTURE.md sections 3 to 5),
// shared with the CPU kernel; this file maps rows onto threads and reduces. It includes
// no torch header: csrc/infogan/cuda/binding.cpp validates and allocates, then calls the plain C
// launchers declared in infogan_cuda.h.
//
// Layouts (chosen by plan_launch from B and W; FASTMI_LAYOUT_* in infogan_cuda.h):
//   tile   a thread per Q row. A block stages 256 rows (256 * W contiguous elements) into
//          shared memory with coalesced 16-byte loads, as the accumulation type, with an
//          odd row stride so that thread-per-row reads hit 32 distinct banks; the backward
//          writes the row's gradients back into the tile and stores it the same way.
//          Used when a row fits (Wp * sizeof(acc) * 256 <= 40 KB) and W <= 32, or wider
//          with at least 16384 rows. 256 threads, grid = min(tiles, resident blocks).
//   warp   a warp per row, read straight from global memory: lanes stride over each
//          categorical block with an online log-sum-exp (one exp per element), combined
//          across lanes by a butterfly of shuffles. The default for wide rows.
//   block  a block (256 threads) per row, the same with a shared-memory combine across
//          warps: for few rows (< 8 per SM) of W >= 2048, e.g. one code of 65536 classes.
// Real and fake logits are grid-strided over all threads of whichever layout runs.
//
// Forward reduction, deterministic and in one launch: each thread sums its rows in
// registers (6 fixed sums) and, per categorical code, each warp sums its rows with a
// butterfly into a per-warp shared slot; the block sums its warps in a fixed order into
// its column of a [sums][blocks] float64 workspace; then __threadfence and an atomic ticket
// tell the last block that every column is written; it sums the columns in a fixed order
// (thread t takes blocks t, t + 256, ...; then a butterfly; then the warps in order),
// evaluates finalize() in float64 and writes the three losses and the stats, and puts the
// ticket back to 0 for the next launch: no memset, no host sync, capturable in a CUDA
// graph. The grid is a function of (B, W, dtype, device) alone, so the order of every
// addition, hence every bit of the result, is the same from run to run. Ticket counters
// are a static array indexed by a hash of the stream: launches on one stream are ordered,
// launches on two streams at once need distinct slots (a collision, 1 in 256 per pair of
// concurrently running streams, would corrupt both results).
//
// Backward: one launch, no reduction. The upstream grads are read from device memory (a
// NULL one counts as zero), so no host sync; grads are computed in the accumulation type
// with the "- 1" / "- onehot" folded in before the one rounding to the input dtype, and
// written to fresh tensors, never to the caller's.
//
// Invalid codes: a categorical index outside [0, K) is never dereferenced (the read is
// clamped to index 0) and makes its term NaN, hence the losses and that code's gradient
// block NaN; a bernoulli value other than 0 or 1 does the same for its term and gradient.
// (The CPU kernel raises instead; on the GPU that would cost a host sync per call.)
//
// Offsets: row * W, row * m etc. are int64; offsets inside one row or tile are int32
// (W < 2^31 and a tile holds at most 256 * 40 elements).

#include "infogan_cuda.h"

#include "../../common/dtypes.h"
#include "../math.h"

#if defined(FASTMI_CUDA_EMULATION)
#include "../../common/cuda/emulation.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mutex>

#if defined(FASTMI_CUDA_EMULATION)
#define FM_DEV inline
#define FM_HD inline
#define FM_DYNAMIC_SMEM(name) unsigned char* name = ::fastmi_emu::dynamic_smem()
#else
#define FM_DEV __device__ __forceinline__
#define FM_HD __host__ __device__ __forceinline__
#define FM_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace fastmi {
namespace cuda {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTileRows = kThreads;             // tile layout: one row per thread
constexpr int kTileBytes = 40 * 1024;           // the tile's shared memory, at most
constexpr int kTileNarrowW = 32;                // tile for any B up to this width
constexpr int64_t kTileWideMinRows = 16384;     // wider rows use the tile from this B on
constexpr int kBlockMinW = 2048;                // block layout: rows at least this wide ...
constexpr int kBlockMaxRowsPerSM = 8;           // ... and fewer rows than this per SM
constexpr int kSmemLimit = 48 * 1024;           // no opt-in launch attribute needed
constexpr int kRealRowsPerThread = 4;           // real / fake logits: grid-sizing hint
// Resident blocks per SM that __launch_bounds__ asks ptxas to allow for: a register budget
// of 64 (32-bit and 16-bit inputs) or 85 (float64) per thread. Without it ptxas's own
// heuristic settled on 48 registers and spilled a few bytes after small code changes.
// 4 blocks of 256 threads = 32 warps per SM, with each thread's staged 16-byte loads
// independent: far more bytes in flight than an H100 / H200 needs to saturate HBM.
template <typename A>
constexpr int kMinBlocksPerSM = sizeof(A) == 8 ? 3 : 4;

// Storage types and conversions (bf16_t, f16_t, to_acc, from_acc): csrc/common/dtypes.h.

// 16 bytes from a 16-byte aligned address.
template <typename T>
FM_DEV void load16(const T* p, T* out) {
#if defined(FASTMI_CUDA_EMULATION)
  memcpy(out, p, 16);
#else
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  memcpy(out, &u, 16);
#endif
}
template <typename T>
FM_DEV void store16(T* p, const T* in) {
#if defined(FASTMI_CUDA_EMULATION)
  memcpy(p, in, 16);
#else
  uint4 u;
  memcpy(&u, in, 16);
  *reinterpret_cast<uint4*>(p) = u;
#endif
}
FM_DEV bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// body(i, x[i]) for i = first, first + step, ... below n, the loads four at a time so that
// each thread keeps four in flight. The int64 loops stay rolled (#pragma unroll 1): an
// unrolled one divides for its trip count, a subroutine call (see kMinBlocksPerSM).
template <typename T, typename Body>
FM_DEV void grid_stride(const T* __restrict__ x, int64_t first, int64_t n, int64_t step, Body body) {
  int64_t i = first;
#pragma unroll 1
  for (; i < n - 3 * step; i += 4 * step) {
    const T v0 = x[i], v1 = x[i + step], v2 = x[i + 2 * step], v3 = x[i + 3 * step];
    body(i, v0);
    body(i + step, v1);
    body(i + 2 * step, v2);
    body(i + 3 * step, v3);
  }
#pragma unroll 1
  for (; i < n; i += step) body(i, x[i]);
}

FM_DEV int64_t load_index(const void* cat, int is64, int64_t at) {
  return is64 ? static_cast<const int64_t*>(cat)[at] : static_cast<int64_t>(static_cast<const int32_t*>(cat)[at]);
}

template <typename A>
FM_DEV A nan_of() {
  return A(NAN);
}

// ---- warp and group reductions -----------------------------------------------------------

template <typename V>
FM_DEV V shfl_xor(V v, int lane_mask) {
  return __shfl_xor_sync(0xffffffffu, v, lane_mask);
}

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

// ---- kernel arguments and shared memory ----------------------------------------------------

struct Args {
  FastmiProblem p;
  FastmiInputs in;
  FastmiForwardOutputs out;  // forward only
  FastmiBackwardIO io;       // backward only
  int32_t Wp;                // tile row stride: W rounded up to odd
  int32_t slot;              // ticket counter of this launch's stream
  float inv_w;               // 1 / W, for the tile's row-of-element division
  double inv_real, inv_q;    // 1 / max(Br, 1), 1 / Bq: computed on the host (see finalize_scaled)
};

// Byte offsets of the shared-memory regions, 16-byte aligned; the same function sizes the
// launch on the host and carves the memory on the device.
struct Smem {
  int sizes, cols, catacc, red, scratch, wsum, tot, stats, flag, tile, total;
};

FM_HD int align16(int x) { return (x + 15) & ~15; }

FM_HD Smem smem_layout(int m, int layout, int Wp, int acc_bytes) {
  Smem s;
  const int S = kFixedSums + m;
  int at = 0;
  s.sizes = at;   at = align16(at + 4 * (m > 0 ? m : 1));
  s.cols = at;    at = align16(at + 4 * (m > 0 ? m : 1));
  s.catacc = at;  at = align16(at + acc_bytes * kWarps * (m > 0 ? m : 1));
  s.red = at;     at = align16(at + acc_bytes * kWarps * kFixedSums);
  s.scratch = at; at = align16(at + acc_bytes * 2 * kWarps);
  s.wsum = at;    at = align16(at + 8 * kWarps * S);
  s.tot = at;     at = align16(at + 8 * S);
  s.stats = at;   at = align16(at + 8 * (kMiCat0 + m));
  s.flag = at;    at = align16(at + 4);
  s.tile = at;
  if (layout == FASTMI_LAYOUT_TILE) at = align16(at + acc_bytes * kTileRows * Wp);
  s.total = at;
  return s;
}

template <typename A>
FM_DEV LossParams<A> loss_params(const FastmiProblem& p) {
  return {p.m, p.nb, p.n, p.learned_std != 0, p.minimax != 0, p.sum_reduction != 0, A(p.fixed_logvar),
          A(p.prior_entropy), A(p.lambda_cat), A(p.lambda_cont), A(p.real_label)};
}

// Column where the bernoulli block starts: after every categorical logit.
FM_DEV int bern_column(const FastmiProblem& p) { return p.W - p.nb - p.n * (p.learned_std ? 2 : 1); }

// Ticket counters, zeroed when the module loads and by every forward's last block.
__device__ unsigned int g_tickets[FASTMI_CUDA_TICKET_SLOTS];

// Copies sizes and column offsets of the categorical codes to shared memory (the kernel
// argument is indexed at run time) and zeroes the per-warp categorical sums.
template <typename A>
FM_DEV void load_codes(const FastmiProblem& p, int* sizes, int* cols, A* catacc, int tid) {
  for (int k = tid; k < p.m; k += kThreads) sizes[k] = p.cat_sizes[k];
  for (int i = tid; i < kWarps * p.m; i += kThreads) catacc[i] = A(0);
  if (tid == 0) {
    int c = 0;
    for (int k = 0; k < p.m; ++k) {
      cols[k] = c;
      c += p.cat_sizes[k];
    }
  }
  __syncthreads();
}

// ---- tile staging ----------------------------------------------------------------------------

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

// ---- per-row terms shared by the layouts -------------------------------------------------------

// e = logsumexp(x[0..K)) - x[c] of one row held by one thread; NaN for c outside [0, K).
template <typename A>
FM_DEV A categorical_nll_serial(const A* x, int K, int64_t c) {
  A mx = x[0];
  for (int j = 1; j < K; ++j) mx = x[j] > mx ? x[j] : mx;
  A s = A(0);
  for (int j = 0; j < K; ++j) s += fm_exp(x[j] - mx);
  const bool valid = c >= 0 && c < K;
  return valid ? mx + fm_log(s) - x[valid ? c : 0] : nan_of<A>();
}

// Bernoulli and Gaussian terms of one row, lanes lane, lane + step, ... (step 1: a thread
// per row). x is the row (in the tile, or q itself), bcol its bernoulli column.
template <typename X, typename A>
FM_DEV void row_tail_forward(const X* x, int bcol, const FastmiProblem& p, const A* bern, const A* cont,
                             int64_t row, A fixed_inv_var, int lane, int step, A& acc_bern, A& acc_cont) {
  for (int b = lane; b < p.nb; b += step) {
    const A c = bern[row * p.nb + b];
    const bool valid = c == A(0) || c == A(1);
    acc_bern += valid ? bernoulli_nll(to_acc(x[bcol + b]), c) : nan_of<A>();
  }
  const int mcol = bcol + p.nb;
  for (int d = lane; d < p.n; d += step) {
    const A mu = to_acc(x[mcol + d]), c = cont[row * p.n + d];
    if (p.learned_std) {
      const A s = to_acc(x[mcol + p.n + d]);
      acc_cont += gaussian_nll(mu, s, fm_exp(-s), c);
    } else {
      acc_cont += gaussian_nll(mu, A(p.fixed_logvar), fixed_inv_var, c);
    }
  }
}

// Gradients of the bernoulli and Gaussian columns of one row, written through put(col, g).
template <typename X, typename A, typename Put>
FM_DEV void row_tail_backward(const X* x, int bcol, const FastmiProblem& p, const A* bern, const A* cont,
                              int64_t row, A fixed_inv_var, const GradScales<A>& sc, int lane, int step, Put put) {
  for (int b = lane; b < p.nb; b += step) {
    const A c = bern[row * p.nb + b];
    const bool valid = c == A(0) || c == A(1);
    put(bcol + b, valid ? sc.cat * bernoulli_grad(to_acc(x[bcol + b]), c) : nan_of<A>());
  }
  const int mcol = bcol + p.nb;
  for (int d = lane; d < p.n; d += step) {
    const A mu = to_acc(x[mcol + d]), c = cont[row * p.n + d];
    if (p.learned_std) {
      const A inv_var = fm_exp(-to_acc(x[mcol + p.n + d]));
      const A g_mu = sc.cont * gaussian_grad_mu(mu, inv_var, c);
      const A g_s = sc.cont * gaussian_grad_logvar(mu, inv_var, c);
      put(mcol + d, g_mu);  // both read before either is written (the tile is overwritten)
      put(mcol + p.n + d, g_s);
    } else {
      put(mcol + d, sc.cont * gaussian_grad_mu(mu, fixed_inv_var, c));
    }
  }
}

// ---- forward ------------------------------------------------------------------------------------

// Block partials, the ticket, and the last block's fixed-order total and finalize().
// red[warp][s] = the warp's sum of v: the per-thread sums leave registers as soon as
// their loop is done, which keeps the Q loop's register pressure low.
template <typename A>
FM_DEV void stash_warp_sum(A v, A* red, int s, int lane, int warp) {
  v = warp_sum(v);
  if (lane == 0) red[warp * kFixedSums + s] = v;
}

template <typename A>
FM_DEV void finish_forward(const Args& a, const A* red, const A* catacc, unsigned char* smem, const Smem& L,
                           const int* sizes, int tid) {
  const FastmiProblem& p = a.p;
  const int lane = tid & 31, warp = tid >> 5, m = p.m, S = kFixedSums + m;
  const int G = static_cast<int>(gridDim.x);
  __syncthreads();  // every red and catacc slot is written
  double* part = a.out.workspace;  // [S][G]
  for (int s = tid; s < S; s += kThreads) {
    double t = 0.0;
    for (int w = 0; w < kWarps; ++w)
      t += static_cast<double>(s < kFixedSums ? red[w * kFixedSums + s] : catacc[w * m + s - kFixedSums]);
    part[static_cast<int64_t>(s) * G + blockIdx.x] = t;
  }
  // Release: this block's column is visible device-wide before its ticket is taken.
  __threadfence();
  __syncthreads();
  int* last = reinterpret_cast<int*>(smem + L.flag);
  if (tid == 0) *last = atomicAdd(&g_tickets[a.slot], 1u) == static_cast<unsigned int>(G - 1);
  __syncthreads();
  if (!*last) return;
  __threadfence();  // acquire: the other blocks' columns, read from L2 (__ldcg)

  double* wsum = reinterpret_cast<double*>(smem + L.wsum);  // [S][kWarps]
  for (int s0 = 0; s0 < S; s0 += 4) {
    double v[4] = {0.0, 0.0, 0.0, 0.0};
    for (int b = tid; b < G; b += kThreads) {
#pragma unroll
      for (int u = 0; u < 4; ++u)
        if (s0 + u < S) v[u] += __ldcg(part + static_cast<int64_t>(s0 + u) * G + b);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      v[u] = warp_sum(v[u]);
      if (lane == 0 && s0 + u < S) wsum[(s0 + u) * kWarps + warp] = v[u];
    }
  }
  __syncthreads();
  double* tot = reinterpret_cast<double*>(smem + L.tot);
  for (int s = tid; s < S; s += kThreads) {
    double t = 0.0;
    for (int w = 0; w < kWarps; ++w) t += wsum[s * kWarps + w];
    tot[s] = t;
  }
  __syncthreads();
  if (tid == 0) {
    double losses[3];
    double* stats = reinterpret_cast<double*>(smem + L.stats);
    const int64_t Bq = a.in.Bq;
    finalize_scaled(tot, [sizes](int k) { return fm_log(static_cast<double>(sizes[k])); }, loss_params<double>(p),
                    a.in.Br, a.in.fake != nullptr ? Bq : 0, Bq, RowScale<double>{a.inv_real, a.inv_q}, losses, stats);
    *static_cast<A*>(a.out.discriminator) = static_cast<A>(losses[0]);
    *static_cast<A*>(a.out.generator) = static_cast<A>(losses[1]);
    *static_cast<A*>(a.out.info) = static_cast<A>(losses[2]);
    A* out_stats = static_cast<A*>(a.out.stats);
    for (int s = 0; s < kMiCat0 + m; ++s) out_stats[s] = static_cast<A>(stats[s]);
    atomicExch(&g_tickets[a.slot], 0u);  // every block has taken its ticket
  }
}

// Q rows of one group (a warp or a block): categorical terms by a strided online
// log-sum-exp, bernoulli and Gaussian terms strided over the group's lanes.
template <typename Group, typename T, typename A>
FM_DEV void group_rows_forward(const Group& g, const Args& a, const int* sizes, const int* cols, A* catacc,
                               A* scratch, int64_t first, int64_t step, A fixed_inv_var, A& acc_bern, A& acc_cont) {
  const FastmiProblem& p = a.p;
  const T* q = static_cast<const T*>(a.in.q);
  const A* bern = static_cast<const A*>(a.in.bern);
  const A* cont = static_cast<const A*>(a.in.cont);
  const int bcol = bern_column(p);
  for (int64_t row = first; row < a.in.Bq; row += step) {
    const T* x = q + row * p.W;
    for (int k = 0; k < p.m; ++k) {
      const int K = sizes[k];
      const Lse<A> l = g.combine(strided_lse<T, A>(x + cols[k], K, g.lane, Group::kSize), scratch);
      if (g.leader()) {
        const int64_t c = load_index(a.in.cat, a.in.cat_int64, row * p.m + k);
        const bool valid = c >= 0 && c < K;
        const A picked = to_acc(x[cols[k] + (valid ? c : 0)]);
        catacc[g.slot() * p.m + k] += valid ? l.m + fm_log(l.s) - picked : nan_of<A>();
      }
    }
    row_tail_forward(x, bcol, p, bern, cont, row, fixed_inv_var, g.lane, Group::kSize, acc_bern, acc_cont);
  }
}

template <typename T, int kLayout>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM<typename AccOf<T>::type>)
    forward_kernel(const __grid_constant__ Args a) {
  using A = typename AccOf<T>::type;
  FM_DYNAMIC_SMEM(smem);
  const FastmiProblem& p = a.p;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const Smem L = smem_layout(p.m, kLayout, a.Wp, sizeof(A));
  int* sizes = reinterpret_cast<int*>(smem + L.sizes);
  int* cols = reinterpret_cast<int*>(smem + L.cols);
  A* catacc = reinterpret_cast<A*>(smem + L.catacc);  // [kWarps][m]
  load_codes(p, sizes, cols, catacc, tid);

  A* red = reinterpret_cast<A*>(smem + L.red);      // [kWarps][kFixedSums]

  // D logits: grid-stride over every thread of the grid.
  const int64_t gthreads = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t gtid = static_cast<int64_t>(blockIdx.x) * kThreads + tid;
  {
    A real_neg = A(0), real_pos = A(0), fake_pos = A(0), fake_neg = A(0);
    grid_stride(static_cast<const T*>(a.in.real), gtid, a.in.Br, gthreads, [&](int64_t, T r) {
      const SoftplusPair<A> sp = softplus_pair(to_acc(r));
      real_neg += sp.neg;
      real_pos += sp.pos;
    });
    const T* fake = static_cast<const T*>(a.in.fake);
    if (fake != nullptr) {
      grid_stride(fake, gtid, a.in.Bq, gthreads, [&](int64_t, T f) {
        const SoftplusPair<A> sp = softplus_pair(to_acc(f));
        fake_pos += sp.pos;
        fake_neg += sp.neg;
      });
    }
    stash_warp_sum(real_neg, red, kRealNeg, lane, warp);
    stash_warp_sum(real_pos, red, kRealPos, lane, warp);
    stash_warp_sum(fake_pos, red, kFakePos, lane, warp);
    stash_warp_sum(fake_neg, red, kFakeNeg, lane, warp);
  }

  A acc_bern = A(0), acc_cont = A(0);

  const A fixed_inv_var = static_cast<A>(fm_exp(-p.fixed_logvar));
  if constexpr (kLayout == FASTMI_LAYOUT_TILE) {
    const T* q = static_cast<const T*>(a.in.q);
    const A* bern = static_cast<const A*>(a.in.bern);
    const A* cont = static_cast<const A*>(a.in.cont);
    A* tile = reinterpret_cast<A*>(smem + L.tile);
    const int W = p.W, Wp = a.Wp, bcol = bern_column(p);
    const bool vec = aligned16(q);
    const int64_t tiles = (a.in.Bq + kTileRows - 1) / kTileRows;
    for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
      const int64_t r0 = t * kTileRows;
      const int rows = static_cast<int>(a.in.Bq - r0 < kTileRows ? a.in.Bq - r0 : kTileRows);
      __syncthreads();  // the previous tile's readers are done
      stage_tile(q + r0 * W, rows * W, W, Wp, a.inv_w, tile, vec, tid);
      __syncthreads();
      const bool active = tid < rows;
      const int64_t row = r0 + tid;
      const A* x = tile + tid * Wp;
      for (int k = 0; k < p.m; ++k) {
        A e = A(0);
        if (active) e = categorical_nll_serial(x + cols[k], sizes[k], load_index(a.in.cat, a.in.cat_int64, row * p.m + k));
        e = warp_sum(e);
        if (lane == 0) catacc[warp * p.m + k] += e;
      }
      if (active) row_tail_forward(x, bcol, p, bern, cont, row, fixed_inv_var, 0, 1, acc_bern, acc_cont);
    }
  } else if constexpr (kLayout == FASTMI_LAYOUT_WARP) {
    A* scratch = reinterpret_cast<A*>(smem + L.scratch);
    group_rows_forward<WarpRows, T, A>(WarpRows{lane, warp}, a, sizes, cols, catacc, scratch,
                                       static_cast<int64_t>(blockIdx.x) * kWarps + warp,
                                       static_cast<int64_t>(gridDim.x) * kWarps, fixed_inv_var, acc_bern, acc_cont);
  } else {
    A* scratch = reinterpret_cast<A*>(smem + L.scratch);
    group_rows_forward<BlockRows, T, A>(BlockRows{tid, warp}, a, sizes, cols, catacc, scratch, blockIdx.x,
                                        gridDim.x, fixed_inv_var, acc_bern, acc_cont);
  }
  stash_warp_sum(acc_bern, red, kBern, lane, warp);
  stash_warp_sum(acc_cont, red, kCont, lane, warp);
  finish_forward<A>(a, red, catacc, smem, L, sizes, tid);
}

// ---- backward -----------------------------------------------------------------------------------

template <typename A>
FM_DEV A upstream(const void* g) {
  return g != nullptr ? *static_cast<const A*>(g) : A(0);
}

template <typename Group, typename T, typename A>
FM_DEV void group_rows_backward(const Group& g, const Args& a, const int* sizes, const int* cols, A* scratch,
                                int64_t first, int64_t step, A fixed_inv_var, const GradScales<A>& sc) {
  const FastmiProblem& p = a.p;
  const T* q = static_cast<const T*>(a.in.q);
  T* grad_q = static_cast<T*>(a.io.grad_q);
  const A* bern = static_cast<const A*>(a.in.bern);
  const A* cont = static_cast<const A*>(a.in.cont);
  const int bcol = bern_column(p);
  for (int64_t row = first; row < a.in.Bq; row += step) {
    const T* x = q + row * p.W;
    T* gx = grad_q + row * p.W;
    for (int k = 0; k < p.m; ++k) {
      const int K = sizes[k], col = cols[k];
      const Lse<A> l = g.combine(strided_lse<T, A>(x + col, K, g.lane, Group::kSize), scratch);
      const int64_t c = load_index(a.in.cat, a.in.cat_int64, row * p.m + k);
      const bool valid = c >= 0 && c < K;
      const A rs = A(1) / l.s;
      for (int j = g.lane; j < K; j += Group::kSize) {
        const A pj = fm_exp(to_acc(x[col + j]) - l.m) * rs;
        const A gj = sc.cat * (j == c ? pj - A(1) : pj);  // "- onehot" before rounding to T
        gx[col + j] = from_acc<T>(valid ? gj : nan_of<A>());
      }
    }
    row_tail_backward(x, bcol, p, bern, cont, row, fixed_inv_var, sc, g.lane, Group::kSize,
                      [&](int col, A v) { gx[col] = from_acc<T>(v); });
  }
}

template <typename T, int kLayout>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM<typename AccOf<T>::type>)
    backward_kernel(const __grid_constant__ Args a) {
  using A = typename AccOf<T>::type;
  FM_DYNAMIC_SMEM(smem);
  const FastmiProblem& p = a.p;
  const int tid = threadIdx.x, warp = tid >> 5;
  const Smem L = smem_layout(p.m, kLayout, a.Wp, sizeof(A));
  int* sizes = reinterpret_cast<int*>(smem + L.sizes);
  int* cols = reinterpret_cast<int*>(smem + L.cols);
  load_codes(p, sizes, cols, reinterpret_cast<A*>(smem + L.catacc), tid);

  const GradScales<A> sc = grad_scales(loss_params<A>(p), upstream<A>(a.io.grad_discriminator),
                                       upstream<A>(a.io.grad_generator), upstream<A>(a.io.grad_info),
                                       a.in.Br, a.in.Bq);
  const int64_t gthreads = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t gtid = static_cast<int64_t>(blockIdx.x) * kThreads + tid;
  T* grad_real = static_cast<T*>(a.io.grad_real);
  grid_stride(static_cast<const T*>(a.in.real), gtid, a.in.Br, gthreads,
              [&](int64_t i, T r) { grad_real[i] = from_acc<T>(real_grad(to_acc(r), sc)); });
  const T* fake = static_cast<const T*>(a.in.fake);
  T* grad_fake = static_cast<T*>(a.io.grad_fake);
  if (fake != nullptr) {
    const bool minimax = p.minimax != 0;
    grid_stride(fake, gtid, a.in.Bq, gthreads,
                [&](int64_t j, T f) { grad_fake[j] = from_acc<T>(fake_grad(to_acc(f), sc, minimax)); });
  }

  const A fixed_inv_var = static_cast<A>(fm_exp(-p.fixed_logvar));
  if constexpr (kLayout == FASTMI_LAYOUT_TILE) {
    const T* q = static_cast<const T*>(a.in.q);
    T* grad_q = static_cast<T*>(a.io.grad_q);
    const A* bern = static_cast<const A*>(a.in.bern);
    const A* cont = static_cast<const A*>(a.in.cont);
    A* tile = reinterpret_cast<A*>(smem + L.tile);
    const int W = p.W, Wp = a.Wp, bcol = bern_column(p);
    const bool vec_in = aligned16(q), vec_out = aligned16(grad_q);
    const int64_t tiles = (a.in.Bq + kTileRows - 1) / kTileRows;
    for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
      const int64_t r0 = t * kTileRows;
      const int rows = static_cast<int>(a.in.Bq - r0 < kTileRows ? a.in.Bq - r0 : kTileRows);
      __syncthreads();  // the previous tile is stored
      stage_tile(q + r0 * W, rows * W, W, Wp, a.inv_w, tile, vec_in, tid);
      __syncthreads();
      if (tid < rows) {
        const int64_t row = r0 + tid;
        A* x = tile + tid * Wp;  // this thread's row, overwritten by its gradient
        for (int k = 0; k < p.m; ++k) {
          A* xk = x + cols[k];
          const int K = sizes[k];
          A mx = xk[0];
          for (int j = 1; j < K; ++j) mx = xk[j] > mx ? xk[j] : mx;
          A s = A(0);
          for (int j = 0; j < K; ++j) {
            xk[j] = fm_exp(xk[j] - mx);
            s += xk[j];
          }
          const A rs = A(1) / s;
          const int64_t c = load_index(a.in.cat, a.in.cat_int64, row * p.m + k);
          const bool valid = c >= 0 && c < K;
          for (int j = 0; j < K; ++j) {
            const A pj = xk[j] * rs;
            xk[j] = valid ? sc.cat * (j == c ? pj - A(1) : pj) : nan_of<A>();
          }
        }
        row_tail_backward(x, bcol, p, bern, cont, row, fixed_inv_var, sc, 0, 1, [&](int col, A v) { x[col] = v; });
      }
      __syncthreads();
      store_tile(grad_q + r0 * W, rows * W, W, Wp, a.inv_w, tile, vec_out, tid);
    }
  } else if constexpr (kLayout == FASTMI_LAYOUT_WARP) {
    A* scratch = reinterpret_cast<A*>(smem + L.scratch);
    group_rows_backward<WarpRows, T, A>(WarpRows{tid & 31, warp}, a, sizes, cols, scratch,
                                        static_cast<int64_t>(blockIdx.x) * kWarps + warp,
                                        static_cast<int64_t>(gridDim.x) * kWarps, fixed_inv_var, sc);
  } else {
    A* scratch = reinterpret_cast<A*>(smem + L.scratch);
    group_rows_backward<BlockRows, T, A>(BlockRows{tid, warp}, a, sizes, cols, scratch, blockIdx.x, gridDim.x,
                                         fixed_inv_var, sc);
  }
}

// ---- host side: plans and launches --------------------------------------------------------------

int g_layout_override = FASTMI_LAYOUT_AUTO;
int g_max_blocks = 0;

int acc_bytes(int dtype) { return dtype == FASTMI_F64 ? 8 : 4; }
int odd_stride(int W) { return W | 1; }
bool tile_fits(int W, int dtype) { return odd_stride(W) * acc_bytes(dtype) * kTileRows <= kTileBytes; }

// The layout rule of the header comment.
int choose_layout(const FastmiProblem& p, const FastmiInputs& in, int sm_count) {
  if (tile_fits(p.W, in.dtype) && (p.W <= kTileNarrowW || in.Bq >= kTileWideMinRows)) return FASTMI_LAYOUT_TILE;
  if (p.W >= kBlockMinW && in.Bq < static_cast<int64_t>(kBlockMaxRowsPerSM) * sm_count) return FASTMI_LAYOUT_BLOCK;
  return FASTMI_LAYOUT_WARP;
}

using KernelFn = void (*)(Args);

template <typename T>
KernelFn kernel_for(bool forward, int layout) {
  switch (layout) {
    case FASTMI_LAYOUT_TILE:
      return forward ? forward_kernel<T, FASTMI_LAYOUT_TILE> : backward_kernel<T, FASTMI_LAYOUT_TILE>;
    case FASTMI_LAYOUT_WARP:
      return forward ? forward_kernel<T, FASTMI_LAYOUT_WARP> : backward_kernel<T, FASTMI_LAYOUT_WARP>;
    default:
      return forward ? forward_kernel<T, FASTMI_LAYOUT_BLOCK> : backward_kernel<T, FASTMI_LAYOUT_BLOCK>;
  }
}

KernelFn kernel_for(int dtype, bool forward, int layout) {
  switch (dtype) {
    case FASTMI_F32: return kernel_for<float>(forward, layout);
    case FASTMI_F64: return kernel_for<double>(forward, layout);
    case FASTMI_BF16: return kernel_for<bf16_t>(forward, layout);
    default: return kernel_for<f16_t>(forward, layout);
  }
}

#if defined(FASTMI_CUDA_EMULATION)
constexpr int kErrInvalidValue = 1;
int current_device(int* dev) { *dev = 0; return 0; }
// A small odd grid exercises the grid-stride loops; FASTMI_EMULATED_SMS makes a large one.
int sm_count_of(int, int* count) {
  const char* env = getenv("FASTMI_EMULATED_SMS");
  *count = env != nullptr && atoi(env) > 0 ? atoi(env) : 3;
  return 0;
}
int resident_blocks_per_sm(KernelFn, int, int, int* blocks) { *blocks = 2; return 0; }
#else
constexpr int kErrInvalidValue = static_cast<int>(cudaErrorInvalidValue);
int current_device(int* dev) { return static_cast<int>(cudaGetDevice(dev)); }

int sm_count_of(int dev, int* count) {
  static int cached[64] = {0};
  if (dev >= 0 && dev < 64 && cached[dev] > 0) {
    *count = cached[dev];
    return 0;
  }
  const cudaError_t err = cudaDeviceGetAttribute(count, cudaDevAttrMultiProcessorCount, dev);
  if (err == cudaSuccess && dev >= 0 && dev < 64) cached[dev] = *count;
  return static_cast<int>(err);
}

// Resident blocks per SM of one kernel at one shared-memory size, cached: the occupancy
// query is a host-side computation, but not free.
int resident_blocks_per_sm(KernelFn fn, int dev, int smem, int* blocks) {
  struct Entry {
    KernelFn fn;
    int dev, smem, blocks;
  };
  static std::mutex mu;
  static Entry entries[512];
  static int used = 0;
  std::lock_guard<std::mutex> lock(mu);
  for (int i = 0; i < used; ++i) {
    if (entries[i].fn == fn && entries[i].dev == dev && entries[i].smem == smem) {
      *blocks = entries[i].blocks;
      return 0;
    }
  }
  const cudaError_t err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, fn, kThreads, smem);
  if (err != cudaSuccess) return static_cast<int>(err);
  if (*blocks < 1) *blocks = 1;
  if (used < 512) entries[used++] = Entry{fn, dev, smem, *blocks};
  return 0;
}
#endif

int plan_launch(const FastmiProblem* p, const FastmiInputs* in, bool forward, FastmiPlan* plan) {
  if (p->m < 0 || p->m > FASTMI_CUDA_MAX_CAT || p->W < 1 || in->Bq < 1 || in->Br < 0 || in->dtype < 0 ||
      in->dtype > FASTMI_F16)
    return kErrInvalidValue;
  int dev = 0, sms = 0, per_sm = 0;
  int err = current_device(&dev);
  if (err == 0) err = sm_count_of(dev, &sms);
  if (err != 0) return err;
  int layout = g_layout_override >= 0 ? g_layout_override : choose_layout(*p, *in, sms);
  if (layout == FASTMI_LAYOUT_TILE && !tile_fits(p->W, in->dtype)) return kErrInvalidValue;
  const int smem = smem_layout(p->m, layout, odd_stride(p->W), acc_bytes(in->dtype)).total;
  if (smem > kSmemLimit) return kErrInvalidValue;
  err = resident_blocks_per_sm(kernel_for(in->dtype, forward, layout), dev, smem, &per_sm);
  if (err != 0) return err;
  const int64_t rows_per_block = layout == FASTMI_LAYOUT_TILE ? kTileRows : layout == FASTMI_LAYOUT_WARP ? kWarps : 1;
  int64_t units = (in->Bq + rows_per_block - 1) / rows_per_block;
  const int64_t real_units = (in->Br + kThreads * kRealRowsPerThread - 1) / (kThreads * kRealRowsPerThread);
  if (real_units > units) units = real_units;
  int64_t blocks = static_cast<int64_t>(per_sm) * sms;
  if (units < blocks) blocks = units;
  if (g_max_blocks > 0 && blocks > g_max_blocks) blocks = g_max_blocks;
  if (blocks < 1) blocks = 1;
  plan->layout = layout;
  plan->blocks = static_cast<int32_t>(blocks);
  plan->threads = kThreads;
  plan->smem_bytes = smem;
  plan->workspace_doubles = forward ? blocks * (kFixedSums + p->m) : 0;
  return 0;
}

// A ticket slot per stream (see the header comment): a hash of the handle.
int32_t slot_of(void* stream) {
  uint64_t h = reinterpret_cast<uintptr_t>(stream);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return static_cast<int32_t>(h % FASTMI_CUDA_TICKET_SLOTS);
}

Args make_args(const FastmiProblem* p, const FastmiInputs* in, void* stream) {
  Args a;
  memset(&a, 0, sizeof a);
  a.p = *p;
  a.in = *in;
  a.Wp = odd_stride(p->W);
  a.slot = slot_of(stream);
  a.inv_w = 1.0f / static_cast<float>(p->W);
  a.inv_real = 1.0 / static_cast<double>(in->Br > 0 ? in->Br : 1);
  a.inv_q = 1.0 / static_cast<double>(in->Bq);
  return a;
}

int launch(const FastmiPlan* plan, bool forward, int dtype, const Args& a, void* stream) {
  const KernelFn fn = kernel_for(dtype, forward, plan->layout);
#if defined(FASTMI_CUDA_EMULATION)
  (void)stream;
  return fastmi_emu::launch(plan->blocks, plan->threads, plan->smem_bytes, [fn, &a] { fn(a); });
#else
  fn<<<plan->blocks, plan->threads, plan->smem_bytes, static_cast<cudaStream_t>(stream)>>>(a);
  return static_cast<int>(cudaGetLastError());
#endif
}

}  // namespace cuda
}  // namespace fastmi

// ---- the C ABI --------------------------------------------------------------------------------------

extern "C" {

int fastmi_cuda_plan_forward(const FastmiProblem* problem, const FastmiInputs* inputs, FastmiPlan* plan) {
  return fastmi::cuda::plan_launch(problem, inputs, true, plan);
}

int fastmi_cuda_plan_backward(const FastmiProblem* problem, const FastmiInputs* inputs, FastmiPlan* plan) {
  return fastmi::cuda::plan_launch(problem, inputs, false, plan);
}

int fastmi_cuda_forward(const FastmiProblem* problem, const FastmiInputs* inputs, const FastmiPlan* plan,
                        const FastmiForwardOutputs* outputs, void* stream) {
  fastmi::cuda::Args a = fastmi::cuda::make_args(problem, inputs, stream);
  a.out = *outputs;
  return fastmi::cuda::launch(plan, true, inputs->dtype, a, stream);
}

int fastmi_cuda_backward(const FastmiProblem* problem, const FastmiInputs* inputs, const FastmiPlan* plan,
                         const FastmiBackwardIO* io, void* stream) {
  fastmi::cuda::Args a = fastmi::cuda::make_args(problem, inputs, stream);
  a.io = *io;
  return fastmi::cuda::launch(plan, false, inputs->dtype, a, stream);
}

void fastmi_cuda_set_override(int32_t layout, int32_t max_blocks) {
  fastmi::cuda::g_layout_override = layout;
  fastmi::cuda::g_max_blocks = max_blocks;
}

int fastmi_cuda_ticket_total(uint64_t* total) {
  unsigned int host[FASTMI_CUDA_TICKET_SLOTS];
#if defined(FASTMI_CUDA_EMULATION)
  memcpy(host, fastmi::cuda::g_tickets, sizeof host);
#else
  const cudaError_t err = cudaMemcpyFromSymbol(host, fastmi::cuda::g_tickets, sizeof host);
  if (err != cudaSuccess) return static_cast<int>(err);
#endif
  uint64_t t = 0;
  for (unsigned int v : host) t += v;
  *total = t;
  return 0;
}

const char* fastmi_cuda_error_string(int code) {
#if defined(FASTMI_CUDA_EMULATION)
  if (code == 1) return "invalid argument (a layout that cannot hold this problem, or m > FASTMI_CUDA_MAX_CAT)";
  return fastmi_emu::emu().error.c_str();
#else
  return cudaGetErrorString(static_cast<cudaError_t>(code));
#endif
}

const char* fastmi_cuda_layout_name(int32_t layout) {
  switch (layout) {
    case FASTMI_LAYOUT_TILE: return "tile";
    case FASTMI_LAYOUT_WARP: return "warp";
    case FASTMI_LAYOUT_BLOCK: return "block";
    default: return "auto";
  }
}

}  // extern "C"
