// fastmi CPU library: the switches and probes that tests and benchmarks use, for every op.
//
//   vector_math(fn, x)        the CPU kernels' float exp / exp_nonpos / log / log1p over a
//                             float32 tensor, a vector of lanes at a time, exactly as the
//                             kernels run them (tests/test_numerics.py)
//   set_poison_outputs(on)    fill fresh gradient buffers with NaN first (tests)
//   cached_grad_bytes()       what the gradient pool holds (tests/test_grad_pool.py)
//   empty_grad_pool()         frees it (fastmi.runtime.cpu_extension.empty_cache)
//   set_grad_pool(on)         pool on / off (benchmarks/core_speed.py, cpu-no-pool)

#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <string>

#include "grad_pool.h"
#include "lanes.h"
#include "tensors.h"

namespace fastmi {
namespace {

at::Tensor vector_math(const std::string& fn, const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat && x.device().is_cpu(), "vector_math: x must be a float32 CPU tensor");
  const at::Tensor in = x.contiguous();
  at::Tensor out = at::empty_like(in);
  const float* src = in.const_data_ptr<float>();
  float* dst = out.data_ptr<float>();
  using L = Lane<f32xL>;
  f32xL (*apply)(f32xL) = nullptr;
  if (fn == "exp") apply = [](f32xL v) { return L::exp(v); };
  else if (fn == "exp_nonpos") apply = [](f32xL v) { return L::exp_nonpos(v); };
  else if (fn == "log") apply = [](f32xL v) { return L::log(v); };
  else if (fn == "log1p") apply = [](f32xL v) { return L::log1p(v); };
  TORCH_CHECK_VALUE(apply != nullptr, "vector_math: fn must be exp, exp_nonpos, log or log1p, got ", fn);
  for (int64_t i = 0; i < in.numel(); i += kLanes) {
    const int64_t n = std::min<int64_t>(kLanes, in.numel() - i);
    store_row(dst + i, apply(load_row<f32xL>(src + i, n, 1.0f)), n);
  }
  return out;
}

}  // namespace

void bind_cpu_hooks(pybind11::module_& m) {
  m.def("vector_math", &vector_math, "the kernels' float exp/exp_nonpos/log/log1p over a tensor (tests)");
  m.def("set_poison_outputs", [](bool on) { g_poison_outputs = on; },
        "fill new gradient buffers with NaN before the kernels write them (for tests)");
  m.def("cached_grad_bytes", [] { return GradPool::get().cached_bytes(); },
        "bytes of freed gradient buffers the pool keeps for the next backward");
  m.def("empty_grad_pool", [] { GradPool::get().empty(); }, "frees the cached gradient buffers");
  m.def("set_grad_pool", [](bool on) { GradPool::get().set_enabled(on); },
        "on (the default): large gradient buffers come from the pool; off: from torch's CPU allocator");
}

}  // namespace fastmi
