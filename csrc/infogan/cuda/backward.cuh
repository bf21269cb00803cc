// fastmi CUDA kernels: the backward. One launch, no reduction: it recomputes softmax and
// sigmoid from the inputs (nothing per element was saved by the forward), reads the three
// upstream grads from device memory (a NULL one counts as zero), so no host sync, and
// writes every gradient of ARCHITECTURE.md ("Gradients") to fresh tensors, never to the
// caller's. Gradients are computed in the accumulation type with the "- 1" / "- onehot"
// folded in before the one rounding to the input dtype.
#pragma once

#include "args.cuh"
#include "reductions.cuh"
#include "tile.cuh"

namespace fastmi {
namespace cuda {

// Gradients of the bernoulli and Gaussian columns of one row, written through put(col, g).
template <typename X, typename A, typename Put>
FM_DEV void row_tail_backward(const X* x, int bcol, const FastmiProblem& p, const A* bern, const A* cont,
                              int64_t row, A fixed_inv_var, const GradScales<A>& scales, int lane, int step, Put put) {
  for (int b = lane; b < p.nb; b += step) {
    const A c = bern[row * p.nb + b];
    const bool valid = c == A(0) || c == A(1);
    put(bcol + b, valid ? scales.cat * bernoulli_grad(to_acc(x[bcol + b]), c) : nan_of<A>());
  }
  const int mcol = bcol + p.nb;
  for (int d = lane; d < p.n; d += step) {
    const A mu = to_acc(x[mcol + d]), c = cont[row * p.n + d];
    if (p.learned_std) {
      const A inv_var = fm_exp(-to_acc(x[mcol + p.n + d]));
      const A g_mu = scales.cont * gaussian_grad_mu(mu, inv_var, c);
      const A g_s = scales.cont * gaussian_grad_logvar(mu, inv_var, c);
      put(mcol + d, g_mu);  // both read before either is written (the tile is overwritten)
      put(mcol + p.n + d, g_s);
    } else {
      put(mcol + d, scales.cont * gaussian_grad_mu(mu, fixed_inv_var, c));
    }
  }
}

// An upstream grad, read from device memory (no host sync); NULL counts as zero.
template <typename A>
FM_DEV A upstream(const void* grad) {
  return grad != nullptr ? *static_cast<const A*>(grad) : A(0);
}

template <typename Group, typename T, typename A>
FM_DEV void group_rows_backward(const Group& group, const Args& args, const int* sizes, const int* cols, A* scratch,
                                int64_t first, int64_t step, A fixed_inv_var, const GradScales<A>& scales) {
  const FastmiProblem& p = args.p;
  const T* q = static_cast<const T*>(args.in.q);
  T* grad_q = static_cast<T*>(args.io.grad_q);
  const A* bern = static_cast<const A*>(args.in.bern);
  const A* cont = static_cast<const A*>(args.in.cont);
  const int bcol = bern_column(p);
  for (int64_t row = first; row < args.in.Bq; row += step) {
    const T* x = q + row * p.W;
    T* grad_row = grad_q + row * p.W;
    for (int k = 0; k < p.m; ++k) {
      const int K = sizes[k], col = cols[k];
      const Lse<A> lse = group.combine(strided_lse<T, A>(x + col, K, group.lane, Group::kSize), scratch);
      const int64_t c = load_index(args.in.cat, args.in.cat_int64, row * p.m + k);
      const bool valid = c >= 0 && c < K;
      const A inv_sum = A(1) / lse.s;
      for (int j = group.lane; j < K; j += Group::kSize) {
        // x_j - max <= 0, at its limit for +inf logits (sub_max, as in lse.h)
        const A pj = fm_exp_nonpos(sub_max(to_acc(x[col + j]), lse.m)) * inv_sum;
        const A gj = scales.cat * (j == c ? pj - A(1) : pj);  // "- onehot" before rounding to T
        grad_row[col + j] = from_acc<T>(valid ? gj : nan_of<A>());
      }
    }
    row_tail_backward(x, bcol, p, bern, cont, row, fixed_inv_var, scales, group.lane, Group::kSize,
                      [&](int col, A v) { grad_row[col] = from_acc<T>(v); });
  }
}

template <typename T, int kLayout>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSM<typename AccOf<T>::type>)
    backward_kernel(const __grid_constant__ Args args) {
  using A = typename AccOf<T>::type;
  FM_DYNAMIC_SMEM(smem);
  const FastmiProblem& p = args.p;
  const int tid = threadIdx.x, warp = tid >> 5;
  const Smem regions = smem_layout(p.m, kLayout, args.Wp, sizeof(A));
  int* sizes = reinterpret_cast<int*>(smem + regions.sizes);
  int* cols = reinterpret_cast<int*>(smem + regions.cols);
  load_codes(p, sizes, cols, reinterpret_cast<A*>(smem + regions.cat_sums), tid);

  const GradScales<A> scales = grad_scales(loss_params<A>(p), upstream<A>(args.io.grad_discriminator),
                                           upstream<A>(args.io.grad_generator), upstream<A>(args.io.grad_info),
                                           args.in.Br, args.in.Bq);
  const int64_t grid_threads = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t grid_tid = static_cast<int64_t>(blockIdx.x) * kThreads + tid;
  // grad_real / grad_fake are null where no loss with an upstream grad uses them
  T* grad_real = static_cast<T*>(args.io.grad_real);
  if (grad_real != nullptr)
    grid_stride(static_cast<const T*>(args.in.real), grid_tid, args.in.Br, grid_threads,
                [&](int64_t i, T r) { grad_real[i] = from_acc<T>(real_grad(to_acc(r), scales)); });
  const T* fake = static_cast<const T*>(args.in.fake);
  T* grad_fake = static_cast<T*>(args.io.grad_fake);
  if (grad_fake != nullptr) {
    const bool minimax = p.minimax != 0;
    grid_stride(fake, grid_tid, args.in.Bq, grid_threads,
                [&](int64_t j, T f) { grad_fake[j] = from_acc<T>(fake_grad(to_acc(f), scales, minimax)); });
  }

  const A fixed_inv_var = static_cast<A>(fm_exp(-p.fixed_logvar));
  if constexpr (kLayout == FASTMI_LAYOUT_TILE) {
    const T* q = static_cast<const T*>(args.in.q);
    T* grad_q = static_cast<T*>(args.io.grad_q);
    const A* bern = static_cast<const A*>(args.in.bern);
    const A* cont = static_cast<const A*>(args.in.cont);
    A* tile = reinterpret_cast<A*>(smem + regions.tile);
    const int W = p.W, Wp = args.Wp, bcol = bern_column(p);
    const bool vec_in = aligned16(q), vec_out = aligned16(grad_q);
    const int64_t tiles = (args.in.Bq + kTileRows - 1) / kTileRows;
    for (int64_t tile_idx = blockIdx.x; tile_idx < tiles; tile_idx += gridDim.x) {
      const int64_t first_row = tile_idx * kTileRows;
      const int rows = static_cast<int>(args.in.Bq - first_row < kTileRows ? args.in.Bq - first_row : kTileRows);
      __syncthreads();  // the previous tile is stored
      stage_tile(q + first_row * W, rows * W, W, Wp, args.inv_w, tile, vec_in, tid);
      __syncthreads();
      if (tid < rows) {
        const int64_t row = first_row + tid;
        A* x = tile + tid * Wp;  // this thread's row, overwritten by its gradient
        for (int k = 0; k < p.m; ++k) {
          A* xk = x + cols[k];
          const int K = sizes[k];
          // the softmax numerators exp(x_j - max) overwrite the logits in the tile
          const A inv_sum = A(1) / lse_of(K, xk, xk).s;
          const int64_t c = load_index(args.in.cat, args.in.cat_int64, row * p.m + k);
          const bool valid = c >= 0 && c < K;
          for (int j = 0; j < K; ++j) {
            const A pj = xk[j] * inv_sum;
            xk[j] = valid ? scales.cat * (j == c ? pj - A(1) : pj) : nan_of<A>();
          }
        }
        row_tail_backward(x, bcol, p, bern, cont, row, fixed_inv_var, scales, 0, 1, [&](int col, A v) { x[col] = v; });
      }
      __syncthreads();
      store_tile(grad_q + first_row * W, rows * W, W, Wp, args.inv_w, tile, vec_out, tid);
    }
  } else if constexpr (kLayout == FASTMI_LAYOUT_WARP) {
    A* scratch = reinterpret_cast<A*>(smem + regions.scratch);
    group_rows_backward<WarpRows, T, A>(WarpRows{tid & 31, warp}, args, sizes, cols, scratch,
                                        static_cast<int64_t>(blockIdx.x) * kWarps + warp,
                                        static_cast<int64_t>(gridDim.x) * kWarps, fixed_inv_var, scales);
  } else {
    A* scratch = reinterpret_cast<A*>(smem + regions.scratch);
    group_rows_backward<BlockRows, T, A>(BlockRows{tid, warp}, args, sizes, cols, scratch, blockIdx.x, gridDim.x,
                                         fixed_inv_var, scales);
  }
}

}  // namespace cuda
}  // namespace fastmi
