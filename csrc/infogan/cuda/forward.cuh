// fastmi CUDA kernels: the forward. One launch computes every per-row term of the batch
// (csrc/infogan/math.h), reduces them, and writes the three losses and the stats.
//
// Real and fake logits are grid-strided over all threads of whichever layout runs; the Q
// rows go a thread per row (tile), a warp per row (warp) or a block per row (block).
//
// The reduction, deterministic and in one launch: each thread sums its rows in registers
// (6 fixed sums) and, per categorical code, each warp sums its rows with a butterfly into
// a per-warp shared slot; the block sums its warps in a fixed order into its column of a
// [sums][blocks] float64 workspace; then __threadfence and an atomic ticket tell the last
// block that every column is written; it sums the columns in a fixed order (thread t takes
// blocks t, t + 256, ...; then a butterfly; then the warps in order), evaluates finalize()
// in float64 and writes the three losses and the stats, and puts the ticket back to 0 for
// the next launch: no memset, no host sync, capturable in a CUDA graph. The grid is a
// function of (B, W, dtype, device) alone, so the order of every addition, hence every bit
// of the result, is the same from run to run. Ticket counters are a static array indexed
// by a hash of the stream: launches on one stream are ordered, launches on two streams at
// once need distinct slots (a collision, 1 in 256 per pair of concurrently running
// streams, would corrupt both results).
#pragma once

#include "args.cuh"
#include "reductions.cuh"
#include "tile.cuh"

namespace fastmi {
namespace cuda {

// Ticket counters, zeroed when the module loads and by every forward's last block.
__device__ unsigned int g_tickets[FASTMI_CUDA_TICKET_SLOTS];

// e = logsumexp - x[c], the categorical term of a code with K classes, from the Lse of its
// logits; logit(j) reads logit j, only ever for j in [0, K). NaN for c outside [0, K).
template <typename A, typename Logit>
FM_DEV A categorical_nll(const Lse<A>& lse, Logit logit, int64_t c, int K) {
  const bool valid = c >= 0 && c < K;
  return valid ? lse_log(lse) - logit(valid ? c : 0) : nan_of<A>();
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
        catacc[g.slot() * p.m + k] += categorical_nll(l, [&](int64_t j) { return to_acc(x[cols[k] + j]); }, c, K);
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
        if (active) {
          const int64_t c = load_index(a.in.cat, a.in.cat_int64, row * p.m + k);
          const A* xk = x + cols[k];
          const int K = sizes[k];
          e = categorical_nll(lse_of<A>(K, xk, nullptr), [xk](int64_t j) { return xk[j]; }, c, K);
        }
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

}  // namespace cuda
}  // namespace fastmi
