// fastmi InfoGAN CPU kernels: the interface between the kernels (kernels.cpp, no torch
// headers) and the torch glue (binding.cpp, autograd.cpp).
//
//   forward_kernel    one pass over the rows: the three losses and the stats, and the
//                     first invalid code it met
//   backward_kernel   one more pass that recomputes from the inputs and writes every
//                     gradient into the caller's fresh buffers
//
// The glue validates shapes, dtypes and layouts (csrc/infogan/check_inputs.h) and passes
// raw pointers, which the kernels trust. T, the storage dtype of the logits and q, is
// float, double, bf16_t or f16_t (csrc/common/dtypes.h: at::BFloat16 / at::Half data
// reinterpreted, same bits); I, the index dtype, int32_t or int64_t; A, the accumulation
// type AccOf<T>. kernels.cpp instantiates every combination. Everything here is in
// fastmi::infogan: other ops' kernels link into the same library.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "../../common/dtypes.h"
#include "../math.h"

namespace fastmi {
namespace infogan {

// Categorical codes with K up to this take the lane tile (kernels.cpp), larger ones are
// vectorized along their own row. Measured: benchmarks/cpu_layout.py.
constexpr int64_t kLaneMaxK = 24;

// The spec and options of one call, mirrored from fastmi/infogan/problem.py.
struct Problem {
  std::vector<int64_t> cat_sizes;
  int64_t nb = 0, n = 0;
  bool learned_std = true, minimax = false, sum_reduction = false;
  double fixed_logvar = 0, prior_entropy = 0, lambda_cat = 1, lambda_cont = 1, real_label = 1;

  int64_t m() const { return static_cast<int64_t>(cat_sizes.size()); }
  int64_t width() const {
    int64_t w = nb + n * (learned_std ? 2 : 1);
    for (int64_t k : cat_sizes) w += k;
    return w;
  }
  template <typename A>
  LossParams<A> params() const {
    return {static_cast<int>(m()), static_cast<int>(nb), static_cast<int>(n), learned_std, minimax,
            sum_reduction, A(fixed_logvar), A(prior_entropy), A(lambda_cat), A(lambda_cont),
            A(real_label)};
  }
};

// How the glue runs a call. threads never changes a bit of the result; lane_max_k picks
// the layout of each categorical code (kLaneMaxK unless a benchmark or a test says).
struct RunConfig {
  int threads = 1;                 // OpenMP threads at most
  int64_t lane_max_k = kLaneMaxK;
};

// The first invalid code a pass met, row-major (row * codes + code).
struct CodeError {
  int64_t cat_at = std::numeric_limits<int64_t>::max();
  int64_t cat_value = 0;
  int64_t bern_at = std::numeric_limits<int64_t>::max();
  double bern_value = 0;

  void merge(const CodeError& o) {
    if (o.cat_at < cat_at) {
      cat_at = o.cat_at;
      cat_value = o.cat_value;
    }
    if (o.bern_at < bern_at) {
      bern_at = o.bern_at;
      bern_value = o.bern_value;
    }
  }
};

// Raw pointers of one call: contiguous; real / fake / cat / bern / cont may be null
// (cat / bern / cont only for a spec without such codes).
template <typename T, typename I, typename A>
struct Batch {
  const T* real = nullptr;  // [Br]
  int64_t Br = 0;           // 0 when real is null
  const T* fake = nullptr;  // [Bq]
  const T* q = nullptr;     // [Bq, W]
  int64_t Bq = 0;           // >= 1
  const I* cat = nullptr;   // [Bq, m]
  const A* bern = nullptr;  // [Bq, nb]
  const A* cont = nullptr;  // [Bq, n]
};

// losses = {discriminator, generator, info}; stats = {jsd, mi_bernoulli, mi_continuous,
// mi_categorical[m]} (StatIndex); err receives the first invalid code (row-major), whose
// term the pass computed with index 0 instead.
template <typename T, typename I, typename A>
void forward_kernel(const Batch<T, I, A>& b, const Problem& p, const RunConfig& cfg, double* losses,
                    double* stats, CodeError* err);

// gD, gG, gI: the upstream grads of the three losses (0 for an unused one). grad_real /
// grad_fake are null when real / fake are; every element of the given buffers is written.
template <typename T, typename I, typename A>
void backward_kernel(const Batch<T, I, A>& b, const Problem& p, const RunConfig& cfg, double gD, double gG,
                     double gI, T* grad_real, T* grad_fake, T* grad_q);

#define FASTMI_INFOGAN_CPU_KERNELS(EXTERN, T, I)                                                            \
  EXTERN template void forward_kernel<T, I, AccOf<T>::type>(const Batch<T, I, AccOf<T>::type>&,             \
                                                            const Problem&, const RunConfig&, double*,       \
                                                            double*, CodeError*);                            \
  EXTERN template void backward_kernel<T, I, AccOf<T>::type>(const Batch<T, I, AccOf<T>::type>&,            \
                                                             const Problem&, const RunConfig&, double,      \
                                                             double, double, T*, T*, T*);
#define FASTMI_INFOGAN_CPU_ALL_KERNELS(EXTERN)        \
  FASTMI_INFOGAN_CPU_KERNELS(EXTERN, float, int32_t)  \
  FASTMI_INFOGAN_CPU_KERNELS(EXTERN, float, int64_t)  \
  FASTMI_INFOGAN_CPU_KERNELS(EXTERN, double, int32_t) \
  FASTMI_INFOGAN_CPU_KERNELS(EXTERN, double, int64_t) \
  FASTMI_INFOGAN_CPU_KERNELS(EXTERN, bf16_t, int32_t) \
  FASTMI_INFOGAN_CPU_KERNELS(EXTERN, bf16_t, int64_t) \
  FASTMI_INFOGAN_CPU_KERNELS(EXTERN, f16_t, int32_t)  \
  FASTMI_INFOGAN_CPU_KERNELS(EXTERN, f16_t, int64_t)

FASTMI_INFOGAN_CPU_ALL_KERNELS(extern)

}  // namespace infogan
}  // namespace fastmi
