// fastmi CUDA backend: torch tensors in, the plain C launchers of infogan_cuda.h (launch.cu) called.
//
// This file owns everything torch: it checks every shape, dtype, device and layout (the
// kernels trust their pointers), allocates the outputs and the forward's workspace from
// torch's caching allocator (no allocation depends on data, so the calls are capturable
// in a CUDA graph), and launches on the current stream. Entry points, in the argument
// order of the CPU library (csrc/infogan/cpu/binding.cpp) and of fastmi/infogan/ops.py:
//
//   forward_op(real, fake, q, categorical, bernoulli, continuous, *problem)
//       -> [discriminator, generator, info, stats]          (accumulation dtype)
//   backward_op(grad_d, grad_g, grad_i, real, fake, q, categorical, bernoulli, continuous, *problem)
//       -> [grad_real, grad_fake, grad_q]                    (input dtypes; [0] when absent)
//
// where *problem is fastmi.infogan.problem.Problem.kernel_args(). Compiled with
// -DFASTMI_CUDA_EMULATION the same code drives the kernels' CPU emulation on CPU tensors
// (csrc/common/cuda/emulation.h), which is how CI tests the kernels without a GPU.

#include <torch/extension.h>

#if !defined(FASTMI_CUDA_EMULATION)
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: that one needs cuBLAS / cuSPARSE headers
#endif

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "../check_inputs.h"
#if defined(FASTMI_CUDA_EMULATION)
#include "../../common/cuda/emulation.h"  // the emulated streams' controls, bound below
#endif
#include "infogan_cuda.h"

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using fastmi::present;
using fastmi::UsedLogits;
using fastmi::used_logits;

#if defined(FASTMI_CUDA_EMULATION)
constexpr at::DeviceType kDevice = at::kCPU;
constexpr const char* kWho = "fastmi cuda (CPU emulation)";
void* current_stream() { return nullptr; }
#else
constexpr at::DeviceType kDevice = at::kCUDA;
constexpr const char* kWho = "fastmi cuda";
void* current_stream() { return static_cast<void*>(c10::cuda::getCurrentCUDAStream().stream()); }
#endif

// Output buffers come from at::empty. The emulation build fills them with NaN first, so
// that an element the kernels forget to write fails the tests instead of passing by luck.
Tensor output(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  Tensor t = at::empty(sizes, opts);
#if defined(FASTMI_CUDA_EMULATION)
  if (at::isFloatingType(t.scalar_type())) t.fill_(std::numeric_limits<double>::quiet_NaN());
#endif
  return t;
}

void check_status(int err, const char* what) {
  TORCH_CHECK(err == 0, kWho, ": ", what, " failed: ", fastmi_cuda_error_string(err), " (error ", err, ")");
}

FastmiProblem make_problem(const std::vector<int64_t>& cat_sizes, int64_t nb, int64_t n, bool learned_std,
                           double fixed_logvar, double prior_entropy, double lambda_cat, double lambda_cont,
                           bool minimax, double real_label, bool sum_reduction) {
  TORCH_CHECK_VALUE(cat_sizes.size() <= FASTMI_CUDA_MAX_CAT, kWho, ": at most ", FASTMI_CUDA_MAX_CAT,
                    " categorical codes per call, got ", cat_sizes.size(), "; backend='triton' has no such limit");
  TORCH_CHECK_VALUE(nb >= 0 && n >= 0, kWho, ": n_bernoulli and n_continuous must be >= 0");
  FastmiProblem p;
  std::memset(&p, 0, sizeof p);
  int64_t W = nb + n * (learned_std ? 2 : 1);
  for (size_t k = 0; k < cat_sizes.size(); ++k) {
    TORCH_CHECK_VALUE(cat_sizes[k] >= 1 && cat_sizes[k] <= std::numeric_limits<int32_t>::max(), kWho,
                      ": cat_sizes must lie in [1, 2^31), got ", cat_sizes[k]);
    p.cat_sizes[k] = static_cast<int32_t>(cat_sizes[k]);
    W += cat_sizes[k];
  }
  // in-row offsets are int32; the strided loops step up to 4 * 256 past a column
  TORCH_CHECK_VALUE(W >= 1 && W <= std::numeric_limits<int32_t>::max() - 4096, kWho,
                    ": q's width must lie in [1, 2^31 - 4096], got ", W);
  p.m = static_cast<int32_t>(cat_sizes.size());
  p.nb = static_cast<int32_t>(nb);
  p.n = static_cast<int32_t>(n);
  p.W = static_cast<int32_t>(W);
  p.learned_std = learned_std;
  p.minimax = minimax;
  p.sum_reduction = sum_reduction;
  p.fixed_logvar = fixed_logvar;
  p.prior_entropy = prior_entropy;
  p.lambda_cat = lambda_cat;
  p.lambda_cont = lambda_cont;
  p.real_label = real_label;
  return p;
}

int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return FASTMI_F32;
    case at::kDouble: return FASTMI_F64;
    case at::kBFloat16: return FASTMI_BF16;
    case at::kHalf: return FASTMI_F16;
    default: TORCH_CHECK_TYPE(false, kWho, ": q must be float32, float64, bfloat16 or float16, got ", t);
  }
  return -1;
}

// Every shape, dtype, device and layout checked (csrc/infogan/check_inputs.h), and the
// pointers the kernels take.
FastmiInputs check_inputs(const OptTensor& real, const OptTensor& fake, const Tensor& q, const OptTensor& cat,
                          const OptTensor& bern, const OptTensor& cont, const FastmiProblem& p) {
  const int64_t B = fastmi::check_inputs(kWho, kDevice, real, fake, q, cat, bern, cont, {p.W, p.m, p.nb, p.n});
  const int dtype = dtype_code(q.scalar_type());
  FastmiInputs in;
  std::memset(&in, 0, sizeof in);
  in.real = present(real) ? real->data_ptr() : nullptr;
  in.fake = present(fake) ? fake->data_ptr() : nullptr;
  in.q = q.data_ptr();
  in.cat = p.m > 0 ? cat->data_ptr() : nullptr;
  in.bern = p.nb > 0 ? bern->data_ptr() : nullptr;
  in.cont = p.n > 0 ? cont->data_ptr() : nullptr;
  in.Br = present(real) ? real->numel() : 0;
  in.Bq = B;
  in.dtype = dtype;
  in.cat_int64 = p.m > 0 && cat->scalar_type() == at::kLong;
  return in;
}

at::ScalarType acc_type(const Tensor& q) { return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// An upstream grad as the kernel reads it: one element of the accumulation dtype on q's
// device. Autograd hands exactly that; anything else is converted (one extra small op).
OptTensor upstream(const OptTensor& g, const Tensor& q, const char* name) {
  if (!present(g)) return std::nullopt;
  TORCH_CHECK_VALUE(g->numel() == 1, kWho, ": ", name, " must hold one element, got ", g->sizes());
  if (g->device() == q.device() && g->scalar_type() == acc_type(q)) return g;
  return g->to(q.device(), acc_type(q)).contiguous();
}

#define FASTMI_PROBLEM_ARGS                                                                      \
  std::vector<int64_t> cat_sizes, int64_t nb, int64_t n, bool learned_std, double fixed_logvar,  \
      double prior_entropy, double lambda_cat, double lambda_cont, bool minimax, double real_label, \
      bool sum_reduction
#define FASTMI_PROBLEM                                                                                   \
  make_problem(cat_sizes, nb, n, learned_std, fixed_logvar, prior_entropy, lambda_cat, lambda_cont, minimax, \
               real_label, sum_reduction)

#if defined(FASTMI_CUDA_EMULATION)
// A deferred (queued) launch writes its workspace when it runs, after forward_op has
// returned: the emulation keeps the tensor alive until then. (On a GPU the caching
// allocator's stream order does this.)
std::vector<Tensor> g_deferred_workspaces;
void keep_until_run(const Tensor& t) {
  if (fastmi_emu::emu().deferred) g_deferred_workspaces.push_back(t);
}
#else
void keep_until_run(const Tensor&) {}
#endif

#if defined(FASTMI_CUDA_EMULATION)
struct NoGuard {
  explicit NoGuard(at::Device) {}
};
using DeviceGuard = NoGuard;
#else
using DeviceGuard = c10::cuda::CUDAGuard;
#endif

// (discriminator, generator, info, stats): one launch, or two for a multi-block grid.
std::vector<Tensor> forward_op(const OptTensor& real, const OptTensor& fake, const Tensor& q, const OptTensor& cat,
                               const OptTensor& bern, const OptTensor& cont, FASTMI_PROBLEM_ARGS) {
  const FastmiProblem p = FASTMI_PROBLEM;
  const FastmiInputs in = check_inputs(real, fake, q, cat, bern, cont, p);
  DeviceGuard guard(q.device());
  FastmiPlan plan;
  check_status(fastmi_cuda_plan_forward(&p, &in, &plan), "planning the forward");
  const auto opts = q.options().dtype(acc_type(q));
  Tensor d = output({}, opts), g = output({}, opts), i = output({}, opts);
  Tensor stats = output({3 + static_cast<int64_t>(p.m)}, opts);
  Tensor workspace = output({plan.workspace_doubles}, q.options().dtype(at::kDouble));
  const FastmiForwardOutputs out{d.data_ptr(), g.data_ptr(), i.data_ptr(), stats.data_ptr(),
                                 workspace.data_ptr<double>()};
  check_status(fastmi_cuda_forward(&p, &in, &plan, &out, current_stream()), "the forward launch");
  keep_until_run(workspace);
  return {d, g, i, stats};
}

// (grad_real, grad_fake, grad_q), in one launch; an absent input's grad is [0].
std::vector<Tensor> backward_op(const OptTensor& grad_d, const OptTensor& grad_g, const OptTensor& grad_i,
                                const OptTensor& real, const OptTensor& fake, const Tensor& q, const OptTensor& cat,
                                const OptTensor& bern, const OptTensor& cont, FASTMI_PROBLEM_ARGS) {
  const FastmiProblem p = FASTMI_PROBLEM;
  const FastmiInputs in = check_inputs(real, fake, q, cat, bern, cont, p);
  DeviceGuard guard(q.device());
  const OptTensor up_d = upstream(grad_d, q, "grad_discriminator");
  const OptTensor up_g = upstream(grad_g, q, "grad_generator");
  const OptTensor up_i = upstream(grad_i, q, "grad_info");
  FastmiPlan plan;
  check_status(fastmi_cuda_plan_backward(&p, &in, &plan), "planning the backward");
  const UsedLogits used = used_logits(real, fake, up_d.has_value(), up_g.has_value());
  const bool real_used = used.real, fake_used = used.fake;
  Tensor grad_real = real_used ? output(real->sizes(), real->options()) : at::empty({0}, q.options());
  Tensor grad_fake = fake_used ? output(fake->sizes(), fake->options()) : at::empty({0}, q.options());
  Tensor grad_q = output(q.sizes(), q.options());
  const FastmiBackwardIO io{up_d ? up_d->data_ptr() : nullptr,
                            up_g ? up_g->data_ptr() : nullptr,
                            up_i ? up_i->data_ptr() : nullptr,
                            real_used ? grad_real.data_ptr() : nullptr,
                            fake_used ? grad_fake.data_ptr() : nullptr,
                            grad_q.data_ptr()};
  check_status(fastmi_cuda_backward(&p, &in, &plan, &io, current_stream()), "the backward launch");
  return {grad_real, grad_fake, grad_q};
}

// The launches a call gets: {"forward": (layout, blocks, threads, smem, workspace), "backward": ...}.
py::dict describe(const OptTensor& real, const OptTensor& fake, const Tensor& q, const OptTensor& cat,
                  const OptTensor& bern, const OptTensor& cont, FASTMI_PROBLEM_ARGS) {
  const FastmiProblem p = FASTMI_PROBLEM;
  const FastmiInputs in = check_inputs(real, fake, q, cat, bern, cont, p);
  DeviceGuard guard(q.device());
  py::dict out;
  FastmiPlan plan;
  check_status(fastmi_cuda_plan_forward(&p, &in, &plan), "planning the forward");
  out["forward"] = py::make_tuple(fastmi_cuda_layout_name(plan.layout), plan.blocks, plan.threads, plan.smem_bytes,
                                  plan.workspace_doubles);
  check_status(fastmi_cuda_plan_backward(&p, &in, &plan), "planning the backward");
  out["backward"] = py::make_tuple(fastmi_cuda_layout_name(plan.layout), plan.blocks, plan.threads, plan.smem_bytes,
                                   plan.workspace_doubles);
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastmi fused CUDA kernels (csrc/infogan/cuda/launch.cu)";
  m.def("forward_op", &forward_op, "(D, G, I, stats) of one batch, one launch");
  m.def("backward_op", &backward_op, "(grad_real, grad_fake, grad_q) of one batch, one launch");
  m.def("describe", &describe, "the launch configuration of a call (layout, blocks, threads, smem, workspace)");
  m.def("set_override", &fastmi_cuda_set_override, py::arg("layout"), py::arg("max_blocks") = 0,
        "force a layout (-1: the rule; 0 tile, 1 warp, 2 block) and cap the grid (0: none), for tests");
  m.attr("MAX_CATEGORICAL") = FASTMI_CUDA_MAX_CAT;
#if defined(FASTMI_CUDA_EMULATION)
  // Concurrent streams, emulated (csrc/common/cuda/emulation.h): queue launches on numbered
  // streams, then run them with their blocks interleaved across the streams.
  m.def("defer_launches", &fastmi_emu::set_deferred, "queue launches instead of running them (emulation)");
  m.def("set_stream", &fastmi_emu::set_stream, "the emulated stream that later launches go to (emulation)");
  m.def("run_deferred",
        [] {
          const int status = fastmi_emu::run_deferred();
          g_deferred_workspaces.clear();
          check_status(status, "running the deferred launches");
        },
        "run the queued launches, blocks interleaved across streams, each stream in order (emulation)");
#endif
}
