// fastmi InfoGAN CPU op: tensors in, the torch-free kernels of kernels.h called, tensors
// out (entry points: binding.h).
//
// Everything torch lives here and in autograd.cpp: every shape, dtype and layout is
// checked (csrc/infogan/check_inputs.h) before the kernels trust their pointers, the
// dtype is dispatched to a kernel instantiation (bfloat16 / float16 data passed as
// bf16_t / f16_t), the outputs are allocated (gradients from the library's pool), and an
// invalid code the forward met becomes a ValueError naming it. bind_infogan adds the
// entry points to the library's Python module (csrc/fastmi_cpu.cpp).

#include "binding.h"

#include <torch/csrc/utils/pybind.h>

#include <limits>
#include <string>
#include <type_traits>
#include <utility>

#include "../../common/cpu/tensors.h"
#include "../check_inputs.h"

namespace fastmi {
namespace infogan {

namespace {

using at::Tensor;

// Categorical codes with K up to this use the lane tile (kernels.h: kLaneMaxK); settable
// from Python for benchmarks/cpu_layout.py and the tests of both layouts.
int64_t g_lane_max_k = kLaneMaxK;

RunConfig run_config() { return {kernel_threads(), g_lane_max_k}; }

// The checks every entry point runs before the kernels trust their pointers.
void check_call(const OptTensor& real, const OptTensor& fake, const Tensor& q, const OptTensor& cat,
                const OptTensor& bern, const OptTensor& cont, const Problem& p) {
  check_inputs("fastmi cpu", at::kCPU, real, fake, q, cat, bern, cont, {p.width(), p.m(), p.nb, p.n});
}

// One instantiation of the kernels: the torch dtype, its storage type T, the index type I
// and the accumulation type A.
template <typename scalar, typename Index>
struct Types {
  using scalar_t = scalar;
  using T = storage_t<scalar>;
  using I = Index;
  using A = typename AccOf<T>::type;
};

template <typename Fn>
void dispatch(const Tensor& q, const OptTensor& cat, Fn&& fn) {
  const bool int32 = present(cat) && cat->scalar_type() == at::kInt;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "fastmi_cpu", [&] {
    if (int32) fn(Types<scalar_t, int32_t>{});
    else fn(Types<scalar_t, int64_t>{});
  });
}

template <typename X>
Batch<typename X::T, typename X::I, typename X::A> make_batch(const OptTensor& real, const OptTensor& fake,
                                                              const Tensor& q, const OptTensor& cat,
                                                              const OptTensor& bern, const OptTensor& cont) {
  using scalar_t = typename X::scalar_t;
  using A = typename X::A;
  Batch<typename X::T, typename X::I, A> b;
  if (present(real)) {
    b.real = data_of<scalar_t>(*real);
    b.Br = real->numel();
  }
  if (present(fake)) b.fake = data_of<scalar_t>(*fake);
  b.q = data_of<scalar_t>(q);
  b.Bq = q.size(0);
  if (present(cat)) b.cat = cat->data_ptr<typename X::I>();
  if (present(bern)) b.bern = bern->data_ptr<A>();
  if (present(cont)) b.cont = cont->data_ptr<A>();
  return b;
}

void raise_code_error(const CodeError& err, const Problem& p) {
  if (err.cat_at != std::numeric_limits<int64_t>::max()) {
    const int64_t row = err.cat_at / p.m(), code = err.cat_at % p.m();
    TORCH_CHECK_VALUE(false, "infogan_loss: codes.categorical[", row, ", ", code, "] = ", err.cat_value,
                      " is outside [0, ", p.cat_sizes[code], ") (row ", row, ", categorical code ", code, ")");
  }
  if (err.bern_at != std::numeric_limits<int64_t>::max()) {
    const int64_t row = err.bern_at / p.nb, code = err.bern_at % p.nb;
    TORCH_CHECK_VALUE(false, "infogan_loss: codes.bernoulli[", row, ", ", code, "] = ", err.bern_value,
                      " is not 0 or 1 (row ", row, ", bernoulli code ", code, ")");
  }
}

// The custom op's forward: (discriminator, generator, info, stats).
std::vector<Tensor> forward_op(const OptTensor& real, const OptTensor& fake, const Tensor& q, const OptTensor& cat,
                               const OptTensor& bern, const OptTensor& cont, FASTMI_PROBLEM_ARGS) {
  const ForwardValues v = run_forward(real, fake, q, cat, bern, cont, FASTMI_PROBLEM);
  return {values_tensor(&v.losses[0], 1, true, v.dtype), values_tensor(&v.losses[1], 1, true, v.dtype),
          values_tensor(&v.losses[2], 1, true, v.dtype),
          values_tensor(v.stats.data(), static_cast<int64_t>(v.stats.size()), false, v.dtype)};
}

// The custom op's backward: (grad_real, grad_fake, grad_q); an absent input's grad is [0].
std::vector<Tensor> backward_op(const OptTensor& gD, const OptTensor& gG, const OptTensor& gI,
                                const OptTensor& real, const OptTensor& fake, const Tensor& q,
                                const OptTensor& cat, const OptTensor& bern, const OptTensor& cont,
                                FASTMI_PROBLEM_ARGS) {
  return run_backward(gD, gG, gI, real, fake, q, cat, bern, cont, FASTMI_PROBLEM);
}

}  // namespace

Problem make_problem(std::vector<int64_t> cat_sizes, int64_t nb, int64_t n, bool learned_std, double fixed_logvar,
                     double prior_entropy, double lambda_cat, double lambda_cont, bool minimax, double real_label,
                     bool sum_reduction) {
  Problem p;
  p.cat_sizes = std::move(cat_sizes);
  p.nb = nb;
  p.n = n;
  p.learned_std = learned_std;
  p.fixed_logvar = fixed_logvar;
  p.prior_entropy = prior_entropy;
  p.lambda_cat = lambda_cat;
  p.lambda_cont = lambda_cont;
  p.minimax = minimax;
  p.real_label = real_label;
  p.sum_reduction = sum_reduction;
  for (int64_t k : p.cat_sizes) TORCH_CHECK_VALUE(k >= 1, "fastmi: cat_sizes must be >= 1, got ", k);
  TORCH_CHECK_VALUE(nb >= 0 && n >= 0, "fastmi: n_bernoulli and n_continuous must be >= 0");
  return p;
}

ForwardValues run_forward(const OptTensor& real, const OptTensor& fake, const Tensor& q, const OptTensor& cat,
                          const OptTensor& bern, const OptTensor& cont, const Problem& p) {
  check_call(real, fake, q, cat, bern, cont, p);
  ForwardValues v;
  v.stats.resize(kMiCat0 + p.m());
  v.dtype = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  CodeError err;
  dispatch(q, cat, [&](auto types) {
    using X = decltype(types);
    forward_kernel(make_batch<X>(real, fake, q, cat, bern, cont), p, run_config(), v.losses, v.stats.data(), &err);
  });
  raise_code_error(err, p);
  return v;
}

std::vector<Tensor> run_backward(const OptTensor& gD, const OptTensor& gG, const OptTensor& gI,
                                 const OptTensor& real, const OptTensor& fake, const Tensor& q,
                                 const OptTensor& cat, const OptTensor& bern, const OptTensor& cont,
                                 const Problem& p) {
  check_call(real, fake, q, cat, bern, cont, p);
  Tensor empty = at::detail::empty_cpu({0}, q.scalar_type());
  const UsedLogits used = used_logits(real, fake, present(gD), present(gG));
  const bool real_used = used.real, fake_used = used.fake;
  Tensor grad_real = real_used ? new_grad_output(*real) : empty;
  Tensor grad_fake = fake_used ? new_grad_output(*fake) : empty;
  Tensor grad_q = new_grad_output(q);
  const double up_d = upstream_value(gD), up_g = upstream_value(gG), up_i = upstream_value(gI);
  dispatch(q, cat, [&](auto types) {
    using X = decltype(types);
    using scalar_t = typename X::scalar_t;
    backward_kernel(make_batch<X>(real, fake, q, cat, bern, cont), p, run_config(), up_d, up_g, up_i,
                    real_used ? data_of<scalar_t>(grad_real) : nullptr,
                    fake_used ? data_of<scalar_t>(grad_fake) : nullptr, data_of<scalar_t>(grad_q));
  });
  return {grad_real, grad_fake, grad_q};
}

void bind_infogan(pybind11::module_& m) {
  m.def("forward_op", &forward_op, "InfoGAN loss: (D, G, I, stats) of one batch");
  m.def("backward_op", &backward_op, "InfoGAN loss: (grad_real, grad_fake, grad_q) of one batch");
  m.def("loss", &loss, "InfoGAN loss: eager forward with a C++ autograd node");
  m.def("set_differentiable_backward", &set_differentiable_backward,
        "InfoGAN loss: the Python backward the C++ node calls when grad mode is on (create_graph=True)");
  m.def("set_lane_max_k", [](int64_t k) { g_lane_max_k = k; },
        "InfoGAN loss: categorical codes with K up to this use the row-lane layout, larger ones the in-row one");
}

}  // namespace infogan
}  // namespace fastmi
