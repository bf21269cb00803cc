// fastmi critic_bound CPU kernels: the interface between the kernels (no torch headers:
// critic_forward.cpp, critic_backward.cpp, critic_schedule.cpp, sharing tiles.h) and the
// torch glue (critic_binding.cpp).
//
//   forward_kernel    the partials of one row problem (fastmi/critic/bounds.py) and the
//                     row / column log-sum-exps the backward needs, tile by tile
//   backward_kernel   dx, dy, dscale, dbias, recomputing the tiles
//
// The score matrix S[i, j] = scale <x_i, y_j> + bias (B x N, positives S[i, i + offset])
// is never stored: it is cut into tiles of tile_rows x tile_cols scores, each computed by
// one GEMM into a per-thread scratch buffer and reduced at once (tiles.h says how,
// and why the result is bit-identical for any thread count). The GEMM is not ours: the
// glue hands the kernels a callback to torch's (MKL, OpenBLAS, ...), so the kernels
// compiles with a plain C++ compiler for any target (tests/test_cpu_portable.py).
//
// A, the element type, is float (float32 inputs; the glue converts bfloat16 / float16
// inputs to float32 first: float32 accumulation) or double (float64, gradcheck).
// Sums across tiles are double either way. Everything is in fastmi::critic: other ops'
// kernels link into the same library.
#pragma once

#include <cstdint>

namespace fastmi {
namespace critic {

// The partials, in the order of fastmi.critic.bounds.PARTIALS: bit k of a mask is
// partial k.
enum Partial : int {
  kPosSum = 0,       // sum_P S
  kRowLseSum = 1,    // sum_i LSE_j S[i, :]
  kColLseSum = 2,    // sum_j LSE_i S[:, j]
  kNegLse = 3,       // LSE_Neg S
  kPosSoftplus = 4,  // sum_P softplus(-S)
  kNegSoftplus = 5,  // sum_Neg softplus(S)
  kNegLseClip = 6,   // LSE_Neg clamp(S, -clip, clip)
  kCorrect = 7,      // #{i : argmax_j S[i, j] = i + offset} (first maximum)
  kNumPartials = 8,
};

constexpr bool has(int64_t mask, Partial k) { return (mask >> k) & 1; }

// C = alpha op(a) op(b) + beta C on row-major matrices: op(a) is m x k, op(b) k x n, C
// m x n with leading dimensions lda, ldb, ldc (elements between rows as stored). op(a)
// = a^T when trans_a (a stored k x m), likewise b. beta = 0: C is not read (it may hold
// NaN). The glue's callback runs torch's GEMM; it is called from the kernels' worker
// threads, each on its own C, and must run single-threaded there.
template <typename A>
struct Gemm {
  using Fn = void (*)(void* ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, A alpha, const A* a,
                      int64_t lda, const A* b, int64_t ldb, A beta, A* c, int64_t ldc);
  Fn fn = nullptr;
  void* ctx = nullptr;
  void operator()(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, A alpha, const A* a, int64_t lda,
                  const A* b, int64_t ldb, A beta, A* c, int64_t ldc) const {
    fn(ctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
};

// One row problem, mirrored from fastmi/critic/problem.py's RowProblem, and its inputs:
// x [B, d] and y [N, d] row-major and contiguous, 1 <= B <= N, 0 <= offset <= N - B.
template <typename A>
struct Problem {
  const A* x = nullptr;
  const A* y = nullptr;
  int64_t B = 0, N = 0, d = 0;
  A scale = 1, bias = 0;
  int64_t offset = 0;
  int64_t compute = 0;        // mask of the partials the forward computes
  int64_t differentiate = 0;  // mask of those the backward differentiates
  A clip = 5;                 // tau of neg_lse_clip
};

// The tiles of a call. A function of (B, N) alone (plan_tiles), never of the thread
// count: that fixes every summation order.
struct Tiles {
  int64_t rows = 1, cols = 1;   // scores per tile: rows of x times rows of y
  int64_t R = 1, C = 1;         // row tiles ceil(B / rows) <= column tiles ceil(N / cols)
};

// The default tiles for B rows and N columns: square tiles of up to kMaxTile, smaller
// for a small B so that there are at least 4 row tiles (the scheduler of tiles.h
// keeps R - 1 tasks between dependent ones), wider columns when N >> B. tile > 0
// forces tile x tile (tests, benchmarks).
constexpr int64_t kMaxTile = 256;
Tiles plan_tiles(int64_t B, int64_t N, int64_t tile = 0);

// The schedule of tiles.h: row tile r visits column tile (r + t) mod C at step t.
// previous_visitor is the task (row tile, step) that visited that column tile just before
// (r, t), or {-1, -1} for its first visitor: the task whose column updates must precede.
struct Visitor {
  int64_t r, t;
};
Visitor previous_visitor(const Tiles& tl, int64_t r, int64_t t);

struct RunConfig {
  int threads = 1;   // OpenMP threads at most; never changes a bit of the result
  int64_t tile = 0;  // 0: plan_tiles' choice
};

// partials[kNumPartials]: those in p.compute, 0 elsewhere (correct as a count).
// row_lse [B] = LSE_j S[i, :] when not null (needs kRowLseSum in p.compute), col_lse [N]
// = LSE_i S[:, j] likewise.
template <typename A>
void forward_kernel(const Problem<A>& p, const RunConfig& cfg, const Gemm<A>& gemm, double* partials, A* row_lse,
                    A* col_lse);

// G = sum_k grad_partials[k] dP_k/dS over k in p.differentiate (fastmi/critic/ops.py);
// grad_x [B, d] = scale G y, grad_y [N, d] = scale G^T x, *grad_scale = sum G * (x y^T),
// *grad_bias = sum G. partials: the forward's (neg_lse and neg_lse_clip are read);
// row_lse / col_lse: the forward's, read when their partial is differentiated. Every
// element of grad_x and grad_y is written.
template <typename A>
void backward_kernel(const Problem<A>& p, const RunConfig& cfg, const Gemm<A>& gemm, const double* grad_partials,
                     const double* partials, const A* row_lse, const A* col_lse, A* grad_x, A* grad_y,
                     double* grad_scale, double* grad_bias);

#define FASTMI_CRITIC_CPU_FORWARD(EXTERN, A) \
  EXTERN template void forward_kernel<A>(const Problem<A>&, const RunConfig&, const Gemm<A>&, double*, A*, A*);
#define FASTMI_CRITIC_CPU_BACKWARD(EXTERN, A)                                                                 \
  EXTERN template void backward_kernel<A>(const Problem<A>&, const RunConfig&, const Gemm<A>&, const double*, \
                                          const double*, const A*, const A*, A*, A*, double*, double*);
#define FASTMI_CRITIC_CPU_ALL_KERNELS(EXTERN) \
  FASTMI_CRITIC_CPU_FORWARD(EXTERN, float)    \
  FASTMI_CRITIC_CPU_FORWARD(EXTERN, double)   \
  FASTMI_CRITIC_CPU_BACKWARD(EXTERN, float)   \
  FASTMI_CRITIC_CPU_BACKWARD(EXTERN, double)

FASTMI_CRITIC_CPU_ALL_KERNELS(extern)

}  // namespace critic
}  // namespace fastmi
