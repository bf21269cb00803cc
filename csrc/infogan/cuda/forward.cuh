// fastmi CUDA kernels: the forward. Every per-row term of the batch (csrc/infogan/math.h),
// reduced, then the three losses and the stats: one launch when the grid is one block,
// else two (the forward kernel, then finalize_kernel on the same stream).
//
// Real and fake logits are grid-strided over all threads of whichever layout runs; the Q
// rows go a thread per row (tile), a warp per row (warp) or a block per row (block).
//
// The reduction, deterministic, with no state shared between launches: each thread sums
// its rows in registers (6 fixed sums) and, per categorical code, each warp sums its rows
// with a butterfly into a per-warp shared slot; the block sums its warps in a fixed order
// (in float64). A one-block grid finalizes from those sums at once. Otherwise each block
// writes its column of the call's own [sums][blocks] float64 workspace, and
// finalize_kernel, one block launched after the forward on the same stream, sums the
// columns in a fixed order (thread t takes blocks t, t + 256, ...; then a butterfly; then
// the warps in order), evaluates finalize() in float64 and writes the losses and stats.
// No counter, no memset, no host sync: capturable in a CUDA graph, and launches on
// concurrent streams or graphs cannot disturb each other (an earlier design counted
// finished blocks in a ticket counter per stream slot, which two graphs, all captured on
// one stream, shared). The grid is a function of (B, W, dtype, device) alone, so the order
// of every addition, hence every bit of the result, is the same from run to run.
#pragma once

#include "args.cuh"
#include "reductions.cuh"
#include "tile.cuh"

namespace fastmi {
namespace cuda {

// e = logsumexp - x[c], the categorical term of a code with K classes, from the Lse of its
// logits (lse_minus: at the limit for +inf logits); logit(j) reads logit j, only ever for
// j in [0, K). NaN for c outside [0, K).
template <typename A, typename Logit>
FM_DEV A categorical_nll(const Lse<A>& lse, Logit logit, int64_t c, int K) {
  const bool valid = c >= 0 && c < K;
  return valid ? lse_minus(lse, logit(valid ? c : 0)) : nan_of<A>();
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

// fixed_sums[warp][sum] = the warp's total of v: the per-thread sums leave registers as soon
// as their loop is done, which keeps the Q loop's register pressure low.
template <typename A>
FM_DEV void stash_warp_sum(A v, A* fixed_sums, int sum, int lane, int warp) {
  v = warp_sum(v);
  if (lane == 0) fixed_sums[warp * kFixedSums + sum] = v;
}

// The losses and stats from the batch's sums, written by thread 0 (finalize() of
// csrc/infogan/math.h in float64).
template <typename A>
FM_DEV void write_outputs(const Args& args, const double* totals, const int* sizes, double* stats, int tid) {
  if (tid != 0) return;
  const FastmiProblem& p = args.p;
  double losses[3];
  const int64_t Bq = args.in.Bq;
  finalize_scaled(totals, [sizes](int k) { return fm_log(static_cast<double>(sizes[k])); }, loss_params<double>(p),
                  args.in.Br, args.in.fake != nullptr ? Bq : 0, Bq, RowScale<double>{args.inv_real, args.inv_q},
                  losses, stats);
  *static_cast<A*>(args.out.discriminator) = static_cast<A>(losses[0]);
  *static_cast<A*>(args.out.generator) = static_cast<A>(losses[1]);
  *static_cast<A*>(args.out.info) = static_cast<A>(losses[2]);
  A* out_stats = static_cast<A*>(args.out.stats);
  for (int s = 0; s < kMiCat0 + p.m; ++s) out_stats[s] = static_cast<A>(stats[s]);
}

// The block's sums (its warps' in a fixed order, in float64): finalized at once in a
// one-block grid, else written to its column of the workspace for finalize_kernel.
// fixed_sums is [kWarps][kFixedSums] and cat_sums [kWarps][m], in shared memory.
template <typename A>
FM_DEV void finish_forward(const Args& args, const A* fixed_sums, const A* cat_sums, unsigned char* smem,
                           const Smem& regions, const int* sizes, int tid) {
  const int m = args.p.m, n_sums = kFixedSums + m;
  const int n_blocks = static_cast<int>(gridDim.x);
  __syncthreads();  // every fixed_sums and cat_sums slot is written
  double* totals = reinterpret_cast<double*>(smem + regions.totals);  // [n_sums]
  double* block_sums = args.out.workspace;                            // [n_sums][n_blocks]
  for (int s = tid; s < n_sums; s += kThreads) {
    double block_total = 0.0;
    for (int w = 0; w < kWarps; ++w) {
      const A warp_total = s < kFixedSums ? fixed_sums[w * kFixedSums + s] : cat_sums[w * m + s - kFixedSums];
      block_total += static_cast<double>(warp_total);
    }
    if (n_blocks == 1) totals[s] = block_total;
    else block_sums[static_cast<int64_t>(s) * n_blocks + blockIdx.x] = block_total;
  }
  if (n_blocks == 1) {
    __syncthreads();
    write_outputs<A>(args, totals, sizes, reinterpret_cast<double*>(smem + regions.stats), tid);
  }
}

// The second launch of a multi-block forward: one block adds the blocks' columns in a
// fixed order (thread t takes blocks t, t + 256, ..., four sums at a time; then a
// butterfly per warp; then the warps in order) and writes the losses and stats.
// args.n_blocks is the forward's grid.
template <typename A>
__global__ void __launch_bounds__(kThreads) finalize_kernel(const __grid_constant__ Args args) {
  FM_DYNAMIC_SMEM(smem);
  const FastmiProblem& p = args.p;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, n_sums = kFixedSums + p.m;
  const int n_blocks = args.n_blocks;
  const Smem regions = smem_layout(p.m, FASTMI_LAYOUT_WARP, args.Wp, sizeof(A));  // no tile
  int* sizes = reinterpret_cast<int*>(smem + regions.sizes);
  for (int k = tid; k < p.m; k += kThreads) sizes[k] = p.cat_sizes[k];
  const double* block_sums = args.out.workspace;                                      // [n_sums][n_blocks]
  double* warp_totals = reinterpret_cast<double*>(smem + regions.warp_totals);        // [n_sums][kWarps]
  for (int first = 0; first < n_sums; first += 4) {
    double partial[4] = {0.0, 0.0, 0.0, 0.0};
    for (int block = tid; block < n_blocks; block += kThreads) {
#pragma unroll
      for (int u = 0; u < 4; ++u)
        if (first + u < n_sums) partial[u] += block_sums[static_cast<int64_t>(first + u) * n_blocks + block];
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      partial[u] = warp_sum(partial[u]);
      if (lane == 0 && first + u < n_sums) warp_totals[(first + u) * kWarps + warp] = partial[u];
    }
  }
  __syncthreads();
  double* totals = reinterpret_cast<double*>(smem + regions.totals);  // [n_sums]: the batch's sums
  for (int s = tid; s < n_sums; s += kThreads) {
    double total = 0.0;
    for (int w = 0; w < kWarps; ++w) total += warp_totals[s * kWarps + w];
    totals[s] = total;
  }
  __syncthreads();
  write_outputs<A>(args, totals, sizes, reinterpret_cast<double*>(smem + regions.stats), tid);
}

// Q rows of one group (a warp or a block): categorical terms by a strided online
// log-sum-exp, bernoulli and Gaussian terms strided over the group's lanes.
template <typename Group, typename T, typename A>
FM_DEV void group_rows_forward(const Group& group, const Args& args, const int* sizes, const int* cols, A* cat_sums,
                               A* scratch, int64_t first, int64_t step, A fixed_inv_var, A& acc_bern, A& acc_cont) {
  const FastmiProblem& p = args.p;
  const T* q = static_cast<const T*>(args.in.q);
  const A* bern = static_cast<const A*>(args.in.bern);
  const A* cont = static_cast<const A*>(args.in.cont);
  const int bcol = bern_column(p);
  for (int64_t row = first; row < args.in.Bq; row += step) {
    const T* x = q + row * p.W;
    for (int k = 0; k < p.m; ++k) {
      const int K = sizes[k];
      const T* xk = x + cols[k];
      const Lse<A> lse = group.combine(strided_lse<T, A>(xk, K, group.lane, Group::kSize), scratch);
      if (group.leader()) {
        const int64_t c = load_index(args.in.cat, args.in.cat_int64, row * p.m + k);
        cat_sums[group.slot() * p.m + k] += categorical_nll(lse, [xk](int64_t j) { return to_acc(xk[j]); }, c, K);
      }
    }
    row_tail_forward(x, bcol, p, bern, cont, row, fixed_inv_var, group.lane, Group::kSize, acc_bern, acc_cont);
  }
}

template <typename T, int kLayout>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM<typename AccOf<T>::type>)
    forward_kernel(const __grid_constant__ Args args) {
  using A = typename AccOf<T>::type;
  FM_DYNAMIC_SMEM(smem);
  const FastmiProblem& p = args.p;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const Smem regions = smem_layout(p.m, kLayout, args.Wp, sizeof(A));
  int* sizes = reinterpret_cast<int*>(smem + regions.sizes);
  int* cols = reinterpret_cast<int*>(smem + regions.cols);
  A* cat_sums = reinterpret_cast<A*>(smem + regions.cat_sums);  // [kWarps][m]
  load_codes(p, sizes, cols, cat_sums, tid);

  A* fixed_sums = reinterpret_cast<A*>(smem + regions.fixed_sums);  // [kWarps][kFixedSums]

  // D logits: grid-stride over every thread of the grid.
  const int64_t grid_threads = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t grid_tid = static_cast<int64_t>(blockIdx.x) * kThreads + tid;
  {
    A real_neg = A(0), real_pos = A(0), fake_pos = A(0), fake_neg = A(0);
    grid_stride(static_cast<const T*>(args.in.real), grid_tid, args.in.Br, grid_threads, [&](int64_t, T r) {
      const SoftplusPair<A> sp = softplus_pair(to_acc(r));
      real_neg += sp.neg;
      real_pos += sp.pos;
    });
    const T* fake = static_cast<const T*>(args.in.fake);
    if (fake != nullptr) {
      grid_stride(fake, grid_tid, args.in.Bq, grid_threads, [&](int64_t, T f) {
        const SoftplusPair<A> sp = softplus_pair(to_acc(f));
        fake_pos += sp.pos;
        fake_neg += sp.neg;
      });
    }
    stash_warp_sum(real_neg, fixed_sums, kRealNeg, lane, warp);
    stash_warp_sum(real_pos, fixed_sums, kRealPos, lane, warp);
    stash_warp_sum(fake_pos, fixed_sums, kFakePos, lane, warp);
    stash_warp_sum(fake_neg, fixed_sums, kFakeNeg, lane, warp);
  }

  A acc_bern = A(0), acc_cont = A(0);

  const A fixed_inv_var = static_cast<A>(fm_exp(-p.fixed_logvar));
  if constexpr (kLayout == FASTMI_LAYOUT_TILE) {
    const T* q = static_cast<const T*>(args.in.q);
    const A* bern = static_cast<const A*>(args.in.bern);
    const A* cont = static_cast<const A*>(args.in.cont);
    A* tile = reinterpret_cast<A*>(smem + regions.tile);
    const int W = p.W, Wp = args.Wp, bcol = bern_column(p);
    const bool vec = aligned16(q);
    const int64_t tiles = (args.in.Bq + kTileRows - 1) / kTileRows;
    for (int64_t tile_idx = blockIdx.x; tile_idx < tiles; tile_idx += gridDim.x) {
      const int64_t first_row = tile_idx * kTileRows;
      const int rows = static_cast<int>(args.in.Bq - first_row < kTileRows ? args.in.Bq - first_row : kTileRows);
      __syncthreads();  // the previous tile's readers are done
      stage_tile(q + first_row * W, rows * W, W, Wp, args.inv_w, tile, vec, tid);
      __syncthreads();
      const bool active = tid < rows;
      const int64_t row = first_row + tid;
      const A* x = tile + tid * Wp;
      for (int k = 0; k < p.m; ++k) {
        A e = A(0);
        if (active) {
          const int64_t c = load_index(args.in.cat, args.in.cat_int64, row * p.m + k);
          const A* xk = x + cols[k];
          const int K = sizes[k];
          e = categorical_nll(lse_of<A>(K, xk, nullptr), [xk](int64_t j) { return xk[j]; }, c, K);
        }
        e = warp_sum(e);
        if (lane == 0) cat_sums[warp * p.m + k] += e;
      }
      if (active) row_tail_forward(x, bcol, p, bern, cont, row, fixed_inv_var, 0, 1, acc_bern, acc_cont);
    }
  } else if constexpr (kLayout == FASTMI_LAYOUT_WARP) {
    A* scratch = reinterpret_cast<A*>(smem + regions.scratch);
    group_rows_forward<WarpRows, T, A>(WarpRows{lane, warp}, args, sizes, cols, cat_sums, scratch,
                                       static_cast<int64_t>(blockIdx.x) * kWarps + warp,
                                       static_cast<int64_t>(gridDim.x) * kWarps, fixed_inv_var, acc_bern, acc_cont);
  } else {
    A* scratch = reinterpret_cast<A*>(smem + regions.scratch);
    group_rows_forward<BlockRows, T, A>(BlockRows{tid, warp}, args, sizes, cols, cat_sums, scratch, blockIdx.x,
                                        gridDim.x, fixed_inv_var, acc_bern, acc_cont);
  }
  stash_warp_sum(acc_bern, fixed_sums, kBern, lane, warp);
  stash_warp_sum(acc_cont, fixed_sums, kCont, lane, warp);
  finish_forward<A>(args, fixed_sums, cat_sums, smem, regions, sizes, tid);
}

}  // namespace cuda
}  // namespace fastmi
