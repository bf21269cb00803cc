// fastmi CUDA kernels: what a launch hands its kernel and where the kernel keeps it. Args
// (the problem, the pointers and what the host computed for them), the shared-memory map
// that the host sizes the launch by and the kernels carve the memory with, and the codes'
// sizes, columns and indices as every layout reads them.
//
// Invalid codes: a categorical index outside [0, K) is never dereferenced (the read is
// clamped to index 0) and makes its term NaN, hence the losses and that code's gradient
// block NaN; a bernoulli value other than 0 or 1 does the same for its term and gradient.
// (The CPU kernel raises instead; on the GPU that would cost a host sync per call.)
//
// Offsets: row * W, row * m etc. are int64; offsets inside one row or tile are int32
// (W < 2^31 and a tile holds at most 256 * 40 elements).
#pragma once

#include "../math.h"
#include "device.cuh"
#include "infogan_cuda.h"
#include "tile.cuh"

namespace fastmi {
namespace cuda {

struct Args {
  FastmiProblem p;
  FastmiInputs in;
  FastmiForwardOutputs out;  // forward only
  FastmiBackwardIO io;       // backward only
  int32_t Wp;                // tile row stride: W rounded up to odd
  int32_t n_blocks;          // the forward's grid (finalize_kernel reads its columns)
  float inv_w;               // 1 / W, for the tile's row-of-element division
  double inv_real, inv_q;    // 1 / max(Br, 1), 1 / Bq: computed on the host (see finalize_scaled)
};
// Args is the kernels' one parameter, passed by value: CUDA before 12.1 caps a launch's
// parameters at 4 KB, and cat_sizes (FASTMI_CUDA_MAX_CAT int32) is most of it.
static_assert(sizeof(Args) <= 4096, "the kernel parameter outgrew 4 KB");

// Byte offsets of the shared-memory regions, 16-byte aligned; the same function sizes the
// launch on the host and carves the memory on the device. acc is the accumulation type.
struct Smem {
  int sizes;        // int[m]: K of each categorical code
  int cols;         // int[m]: the column where each code's logits start
  int cat_sums;     // acc[kWarps][m]: each warp's categorical sums (forward)
  int fixed_sums;   // acc[kWarps][kFixedSums]: each warp's other sums (forward)
  int scratch;      // acc[kWarps][2]: BlockRows' combine
  int warp_totals;  // double[n_sums][kWarps]: finalize_kernel's per-warp totals
  int totals;       // double[n_sums]: the block's (one-block grid) or the batch's sums
  int stats;        // double[3 + m]: finalize()'s stats
  int tile;         // acc[kTileRows][Wp]: the tile layout's tile
  int total;        // bytes in all
};

FM_HD int align16(int x) { return (x + 15) & ~15; }

FM_HD Smem smem_layout(int m, int layout, int Wp, int acc_bytes) {
  Smem at;
  const int n_sums = kFixedSums + m, m_slots = m > 0 ? m : 1;
  int end = 0;
  at.sizes = end;        end = align16(end + 4 * m_slots);
  at.cols = end;         end = align16(end + 4 * m_slots);
  at.cat_sums = end;     end = align16(end + acc_bytes * kWarps * m_slots);
  at.fixed_sums = end;   end = align16(end + acc_bytes * kWarps * kFixedSums);
  at.scratch = end;      end = align16(end + acc_bytes * 2 * kWarps);
  at.warp_totals = end;  end = align16(end + 8 * kWarps * n_sums);
  at.totals = end;       end = align16(end + 8 * n_sums);
  at.stats = end;        end = align16(end + 8 * (kMiCat0 + m));
  at.tile = end;
  if (layout == FASTMI_LAYOUT_TILE) end = align16(end + acc_bytes * kTileRows * Wp);
  at.total = end;
  return at;
}

template <typename A>
FM_DEV LossParams<A> loss_params(const FastmiProblem& p) {
  return {p.m, p.nb, p.n, p.learned_std != 0, p.minimax != 0, p.sum_reduction != 0, A(p.fixed_logvar),
          A(p.prior_entropy), A(p.lambda_cat), A(p.lambda_cont), A(p.real_label)};
}

// Column where the bernoulli block starts: after every categorical logit.
FM_DEV int bern_column(const FastmiProblem& p) { return p.W - p.nb - p.n * (p.learned_std ? 2 : 1); }

FM_DEV int64_t load_index(const void* cat, int is64, int64_t at) {
  return is64 ? static_cast<const int64_t*>(cat)[at] : static_cast<int64_t>(static_cast<const int32_t*>(cat)[at]);
}

template <typename A>
FM_DEV A nan_of() {
  return A(NAN);
}

// Copies sizes and column offsets of the categorical codes to shared memory (the kernel
// argument is indexed at run time) and zeroes the per-warp categorical sums.
template <typename A>
FM_DEV void load_codes(const FastmiProblem& p, int* sizes, int* cols, A* cat_sums, int tid) {
  for (int k = tid; k < p.m; k += kThreads) sizes[k] = p.cat_sizes[k];
  for (int i = tid; i < kWarps * p.m; i += kThreads) cat_sums[i] = A(0);
  if (tid == 0) {
    int c = 0;
    for (int k = 0; k < p.m; ++k) {
      cols[k] = c;
      c += p.cat_sizes[k];
    }
  }
  __syncthreads();
}

}  // namespace cuda
}  // namespace fastmi
