// fastmi InfoGAN CPU op, eager path: `loss` runs the kernels inside a C++ autograd node,
// so that neither the forward nor the backward crosses into Python or the dispatcher
// (what that saves at small batch sizes: benchmarks/core_speed.py, "cpu" against
// "cpu-pyfn" and "cpu-op"). Under torch.compile the same kernels run as the custom ops of
// binding.cpp instead (fastmi/infogan/ops.py).
//
// With grad mode on during the backward (create_graph=True: a gradient penalty will
// differentiate the gradient again), the kernels' gradients would carry no graph, so the
// node calls the Python function set by set_differentiable_backward instead
// (fastmi.infogan.ops.differentiable_grads: the reference's composite formulas).

#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/utils/pybind.h>

#include <utility>
#include <vector>

#include "../../common/cpu/tensors.h"
#include "binding.h"

namespace fastmi {
namespace infogan {
namespace {

using at::Tensor;

struct ProblemHolder : torch::CustomClassHolder {
  explicit ProblemHolder(Problem p) : problem(std::move(p)) {}
  Problem problem;
};

OptTensor opt(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

// The kernels' empty [0] grad (an input no loss with an upstream grad uses) is autograd's None.
Tensor used(const Tensor& grad) { return grad.numel() > 0 ? grad : Tensor(); }

// fastmi.infogan.ops.differentiable_grads, set once by fastmi/infogan/cpu.py. Kept for the
// life of the process (never released: the interpreter may be gone when statics die).
pybind11::object* g_differentiable_backward = nullptr;

pybind11::object none_or(const Tensor& t) { return t.defined() ? pybind11::cast(t) : pybind11::none(); }

// The backward in composite PyTorch, through Python: (grad_real, grad_fake, grad_q) with a graph.
std::vector<Tensor> differentiable_backward(const torch::autograd::variable_list& grads,
                                            const std::vector<Tensor>& saved, const Problem& p) {
  TORCH_CHECK(g_differentiable_backward != nullptr,
              "fastmi cpu: a backward with create_graph=True needs fastmi.infogan.cpu imported");
  pybind11::gil_scoped_acquire gil;
  pybind11::tuple inputs = pybind11::make_tuple(none_or(saved[0]), none_or(saved[1]), none_or(saved[2]),
                                                none_or(saved[3]), none_or(saved[4]), none_or(saved[5]));
  pybind11::tuple args = pybind11::make_tuple(p.cat_sizes, p.nb, p.n, p.learned_std, p.fixed_logvar, p.prior_entropy,
                                              p.lambda_cat, p.lambda_cont, p.minimax, p.real_label, p.sum_reduction);
  pybind11::tuple out = (*g_differentiable_backward)(none_or(grads[0]), none_or(grads[1]), none_or(grads[2]),
                                                     inputs, args);
  std::vector<Tensor> result;
  for (int i = 0; i < 3; ++i) result.push_back(out[i].is_none() ? Tensor() : out[i].cast<Tensor>());
  return result;
}

struct FusedLoss : public torch::autograd::Function<FusedLoss> {
  // Absent inputs are passed as nullopt: autograd then treats them as non-inputs.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const OptTensor& real,
                                                const OptTensor& fake, const Tensor& q, const OptTensor& cat,
                                                const OptTensor& bern, const OptTensor& cont, Problem p) {
    const ForwardValues v = run_forward(real, fake, q, cat, bern, cont, p);
    // Separate tensors, not views of one stats vector: a view costs a dispatcher round trip.
    auto scalar = [&](const double* x) { return values_tensor(x, 1, true, v.dtype); };
    Tensor jsd = scalar(&v.stats[kJsd]), mi_bern = scalar(&v.stats[kMiBern]), mi_cont = scalar(&v.stats[kMiCont]);
    Tensor mi_cat = values_tensor(v.stats.data() + kMiCat0, p.m(), false, v.dtype);
    ctx->set_materialize_grads(false);  // an unused loss costs no zero tensor: it counts as 0
    ctx->save_for_backward({real.value_or(Tensor()), fake.value_or(Tensor()), q, cat.value_or(Tensor()),
                            bern.value_or(Tensor()), cont.value_or(Tensor())});
    ctx->saved_data["problem"] = at::IValue::make_capsule(c10::make_intrusive<ProblemHolder>(std::move(p)));
    ctx->mark_non_differentiable({jsd, mi_cat, mi_bern, mi_cont});
    return {scalar(&v.losses[0]), scalar(&v.losses[1]), scalar(&v.losses[2]), jsd, mi_cat, mi_bern, mi_cont};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Problem& p =
        c10::static_intrusive_pointer_cast<ProblemHolder>(ctx->saved_data["problem"].toCapsule())->problem;
    if (at::GradMode::is_enabled()) {
      const auto g = differentiable_backward(grads, saved, p);
      return {g[0], g[1], g[2], Tensor(), Tensor(), Tensor(), Tensor()};
    }
    auto g = run_backward(opt(grads[0]), opt(grads[1]), opt(grads[2]), opt(saved[0]), opt(saved[1]), saved[2],
                          opt(saved[3]), opt(saved[4]), opt(saved[5]), p);
    return {used(g[0]), used(g[1]), g[2], Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

void set_differentiable_backward(pybind11::object fn) {
  if (g_differentiable_backward == nullptr) g_differentiable_backward = new pybind11::object();
  *g_differentiable_backward = std::move(fn);
}

// (discriminator, generator, info, jsd_bound, mi_categorical, mi_bernoulli, mi_continuous)
std::vector<Tensor> loss(const OptTensor& real, const OptTensor& fake, const Tensor& q, const OptTensor& cat,
                         const OptTensor& bern, const OptTensor& cont, FASTMI_PROBLEM_ARGS) {
  return FusedLoss::apply(real, fake, q, cat, bern, cont, FASTMI_PROBLEM);
}

}  // namespace infogan
}  // namespace fastmi
