// fastmi InfoGAN CPU op, eager path: `loss` runs the kernels inside a C++ autograd node,
// so that neither the forward nor the backward crosses into Python or the dispatcher
// (what that saves at small batch sizes: benchmarks/core_speed.py, "cpu" against
// "cpu-pyfn" and "cpu-op"). Under torch.compile the same kernels run as the custom ops of
// binding.cpp instead (fastmi/infogan/ops.py).

#include <torch/csrc/autograd/custom_function.h>

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
    auto g = run_backward(opt(grads[0]), opt(grads[1]), opt(grads[2]), opt(saved[0]), opt(saved[1]), saved[2],
                          opt(saved[3]), opt(saved[4]), opt(saved[5]), p);
    return {saved[0].defined() ? g[0] : Tensor(), saved[1].defined() ? g[1] : Tensor(), g[2],
            Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

// (discriminator, generator, info, jsd_bound, mi_categorical, mi_bernoulli, mi_continuous)
std::vector<Tensor> loss(const OptTensor& real, const OptTensor& fake, const Tensor& q, const OptTensor& cat,
                         const OptTensor& bern, const OptTensor& cont, FASTMI_PROBLEM_ARGS) {
  return FusedLoss::apply(real, fake, q, cat, bern, cont, FASTMI_PROBLEM);
}

}  // namespace infogan
}  // namespace fastmi
