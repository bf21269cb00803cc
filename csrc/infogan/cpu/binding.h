// fastmi InfoGAN CPU op, torch side: what binding.cpp (the tensor glue and the custom
// ops' entry points) shares with autograd.cpp (the eager path's C++ autograd node).
//
// Entry points, in the argument order of fastmi/infogan/ops.py and of the CUDA binding:
//
//   forward_op(real, fake, q, categorical, bernoulli, continuous, *problem)
//       -> [discriminator, generator, info, stats]          (accumulation dtype)
//   backward_op(grad_d, grad_g, grad_i, real, fake, q, categorical, bernoulli, continuous, *problem)
//       -> [grad_real, grad_fake, grad_q]                    (input dtypes; [0] when absent)
//   loss(real, fake, q, categorical, bernoulli, continuous, *problem)
//       -> [discriminator, generator, info, jsd_bound, mi_categorical, mi_bernoulli, mi_continuous]
//
// where *problem is fastmi.infogan.problem.Problem.kernel_args().
#pragma once

#include <ATen/ATen.h>
#include <pybind11/pybind11.h>

#include <optional>
#include <vector>

#include "kernels.h"

namespace fastmi {
namespace infogan {

using OptTensor = std::optional<at::Tensor>;

#define FASTMI_PROBLEM_ARGS                                                                       \
  std::vector<int64_t> cat_sizes, int64_t nb, int64_t n, bool learned_std, double fixed_logvar,   \
      double prior_entropy, double lambda_cat, double lambda_cont, bool minimax, double real_label, \
      bool sum_reduction
#define FASTMI_PROBLEM                                                                               \
  make_problem(std::move(cat_sizes), nb, n, learned_std, fixed_logvar, prior_entropy, lambda_cat, \
               lambda_cont, minimax, real_label, sum_reduction)

// The Problem of kernel_args(), checked.
Problem make_problem(std::vector<int64_t> cat_sizes, int64_t nb, int64_t n, bool learned_std, double fixed_logvar,
                     double prior_entropy, double lambda_cat, double lambda_cont, bool minimax, double real_label,
                     bool sum_reduction);

// The forward's results, in double, before they become tensors.
struct ForwardValues {
  double losses[3];            // discriminator, generator, info
  std::vector<double> stats;   // StatIndex: jsd, mi_bernoulli, mi_continuous, mi_categorical...
  at::ScalarType dtype;        // of the output tensors: the accumulation dtype
};

// Checks the inputs, runs the forward kernel, raises a ValueError for an invalid code.
ForwardValues run_forward(const OptTensor& real, const OptTensor& fake, const at::Tensor& q, const OptTensor& cat,
                          const OptTensor& bern, const OptTensor& cont, const Problem& p);

// Checks the inputs, runs the backward kernel into fresh buffers: {grad_real, grad_fake,
// grad_q}, [0] for an absent input.
std::vector<at::Tensor> run_backward(const OptTensor& gD, const OptTensor& gG, const OptTensor& gI,
                                     const OptTensor& real, const OptTensor& fake, const at::Tensor& q,
                                     const OptTensor& cat, const OptTensor& bern, const OptTensor& cont,
                                     const Problem& p);

// The eager path (autograd.cpp), and the Python function its backward calls when grad
// mode is on (create_graph=True): fn(grad_d, grad_g, grad_i, (six inputs), (kernel args))
// -> (grad_real, grad_fake, grad_q, ...), differentiable.
void set_differentiable_backward(pybind11::object fn);
std::vector<at::Tensor> loss(const OptTensor& real, const OptTensor& fake, const at::Tensor& q, const OptTensor& cat,
                             const OptTensor& bern, const OptTensor& cont, FASTMI_PROBLEM_ARGS);

}  // namespace infogan
}  // namespace fastmi
