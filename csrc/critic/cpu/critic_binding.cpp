// fastmi critic_bound CPU op: tensors in, the torch-free kernels of kernels.h called with
// torch's GEMM, tensors out. The entry points have the schemas of fastmi/critic/ops.py:
//
//   critic_forward(x, y, scale, bias, offset, compute, differentiate, clip)
//       -> [partials [8], row_lse [B] or [0], col_lse [N] or [0]]          (compute dtype)
//   critic_backward(grad_partials, x, y, scale, bias, partials, row_lse, col_lse,
//                   offset, compute, differentiate, clip)
//       -> [grad_x, grad_y, grad_scale, grad_bias or [0]]
//
// Everything torch lives here: every shape, dtype and value the kernels trust is checked;
// float32 and float64 inputs run the float / double kernels in place; bfloat16 and
// float16 inputs are converted to float32 copies first (O((B + N) d), float32 GEMMs and
// float32 accumulation: measured, torch's bf16 GEMM is not faster here once the
// backward's GEMMs need float32 G, see docs/critic.md) and their gradients rounded back
// once. Gradient buffers come from the library's pool (csrc/common/cpu/grad_pool.h).
//
// The GEMM: at::cpu::mm_out / addmm_ on tensor views of the kernels' pointers (no copy,
// no dispatcher, no autocast), which run torch's BLAS (MKL here). The kernels call it
// from inside their OpenMP region, where the BLAS runs single-threaded (torch and the
// library share one OpenMP runtime).

#include <ATen/ATen.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/mm_cpu_dispatch.h>
#include <torch/csrc/utils/pybind.h>

#include <cmath>
#include <optional>
#include <vector>

#include "../../common/cpu/tensors.h"
#include "kernels.h"

namespace fastmi {
namespace critic {

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

constexpr const char* kWho = "fastmi critic cpu";

// Tiles of tile x tile scores when > 0 (tests: many small tiles; benchmarks), else
// plan_tiles' choice. Settable from Python.
int64_t g_tile = 0;

RunConfig run_config() { return {kernel_threads(), g_tile}; }

template <typename A>
void torch_gemm(void* /*ctx*/, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, A alpha, const A* a,
                int64_t lda, const A* b, int64_t ldb, A beta, A* c, int64_t ldc) {
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<A>::value);
  // op(a) [m, k]: stored row-major as [m, k] (strides lda, 1) or, transposed, as [k, m]
  // (the same view with strides 1, lda); likewise op(b) [k, n].
  const Tensor av = at::from_blob(const_cast<A*>(a), {m, k}, trans_a ? at::IntArrayRef{1, lda} : at::IntArrayRef{lda, 1},
                                  options);
  const Tensor bv = at::from_blob(const_cast<A*>(b), {k, n}, trans_b ? at::IntArrayRef{1, ldb} : at::IntArrayRef{ldb, 1},
                                  options);
  Tensor cv = at::from_blob(c, {m, n}, {ldc, 1}, options);
  if (beta == A(0) && alpha == A(1)) {
    at::cpu::mm_out(cv, av, bv);
  } else {
    at::cpu::addmm_(cv, av, bv, beta, alpha);  // beta = 0: C is not read (torch's addmm contract)
  }
}

template <typename A>
Gemm<A> torch_gemm() {
  return {&torch_gemm<A>, nullptr};
}

std::string shape_of(const Tensor& t) {
  std::string s = "(";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + (t.dim() == 1 ? ",)" : ")");
}

bool is_float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

at::ScalarType compute_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// A 0-d (one-element) CPU floating tensor's value.
double scalar_value(const char* name, const Tensor& t) {
  TORCH_CHECK_VALUE(t.numel() == 1 && t.device().is_cpu() && is_float_dtype(t.scalar_type()), kWho, ": ", name,
                    " must be a one-element CPU float tensor, got ", t.scalar_type(), " of shape ", shape_of(t),
                    " on ", t.device());
  return upstream_value(t);
}

// The checks every entry point runs before the kernels trust their pointers.
void check_call(const Tensor& x, const Tensor& y, int64_t offset, int64_t compute, int64_t differentiate,
                double clip) {
  TORCH_CHECK_VALUE(x.device().is_cpu() && y.device().is_cpu(), kWho, ": x and y must be CPU tensors, got ",
                    x.device(), " and ", y.device());
  TORCH_CHECK_VALUE(is_float_dtype(x.scalar_type()) && x.scalar_type() == y.scalar_type(), kWho,
                    ": x and y must have one dtype, float32, bfloat16, float16 or float64, got ", x.scalar_type(),
                    " and ", y.scalar_type());
  TORCH_CHECK_VALUE(x.dim() == 2 && y.dim() == 2 && x.size(1) == y.size(1) && x.size(1) >= 1, kWho,
                    ": x and y must have shapes [B, d] and [N, d] with d >= 1, got ", shape_of(x), " and ",
                    shape_of(y));
  const int64_t B = x.size(0), N = y.size(0);
  TORCH_CHECK_VALUE(B >= 1 && N >= B, kWho, ": expected 1 <= B <= N, got x ", shape_of(x), " and y ", shape_of(y));
  TORCH_CHECK_VALUE(offset >= 0 && offset <= N - B, kWho, ": offset must lie in [0, N - B] = [0, ", N - B, "], got ",
                    offset);
  TORCH_CHECK_VALUE(compute >= 0 && compute < (1 << kNumPartials) && differentiate >= 0 &&
                        (differentiate & ~compute) == 0,
                    kWho, ": compute must be a mask of the ", int(kNumPartials),
                    " partials and differentiate a subset of it, got compute=", compute,
                    ", differentiate=", differentiate);
  TORCH_CHECK_VALUE(!has(compute, kNegLseClip) || (std::isfinite(clip) && clip > 0), kWho,
                    ": clip must be finite and > 0, got ", clip);
}

// x or y as the kernels read it: contiguous, in the compute dtype (a float32 copy of
// 16-bit inputs).
Tensor kernel_input(const Tensor& t) {
  const Tensor c = t.scalar_type() == compute_dtype(t.scalar_type()) ? t : t.to(compute_dtype(t.scalar_type()));
  return c.contiguous();
}

template <typename A>
Problem<A> make_problem(const Tensor& x, const Tensor& y, double scale, double bias, int64_t offset, int64_t compute,
                        int64_t differentiate, double clip) {
  Problem<A> p;
  p.x = x.const_data_ptr<A>();
  p.y = y.const_data_ptr<A>();
  p.B = x.size(0);
  p.N = y.size(0);
  p.d = x.size(1);
  p.scale = static_cast<A>(scale);
  p.bias = static_cast<A>(bias);
  p.offset = offset;
  p.compute = compute;
  p.differentiate = differentiate;
  p.clip = static_cast<A>(clip);
  return p;
}

// Runs fn(A{}) with A = float or double, for the compute dtype.
template <typename Fn>
void dispatch(at::ScalarType acc, Fn&& fn) {
  if (acc == at::kDouble) fn(double{});
  else fn(float{});
}

std::vector<Tensor> forward_op(const Tensor& x, const Tensor& y, const Tensor& scale, const OptTensor& bias,
                               int64_t offset, int64_t compute, int64_t differentiate, double clip) {
  check_call(x, y, offset, compute, differentiate, clip);
  const double s = scalar_value("scale", scale);
  const double b = bias.has_value() && bias->defined() ? scalar_value("bias", *bias) : 0.0;
  const at::ScalarType acc = compute_dtype(x.scalar_type());
  const Tensor xa = kernel_input(x), ya = kernel_input(y);
  const int64_t B = x.size(0), N = y.size(0);
  const bool keep_row = has(differentiate, kRowLseSum), keep_col = has(differentiate, kColLseSum);
  Tensor row_lse = at::detail::empty_cpu({keep_row ? B : 0}, acc);
  Tensor col_lse = at::detail::empty_cpu({keep_col ? N : 0}, acc);
  double partials[kNumPartials];
  dispatch(acc, [&](auto zero) {
    using A = decltype(zero);
    forward_kernel<A>(make_problem<A>(xa, ya, s, b, offset, compute, differentiate, clip), run_config(),
                      torch_gemm<A>(), partials, keep_row ? row_lse.data_ptr<A>() : nullptr,
                      keep_col ? col_lse.data_ptr<A>() : nullptr);
  });
  return {values_tensor(partials, kNumPartials, false, acc), row_lse, col_lse};
}

// A [8] vector's values as doubles.
void read_vector(const char* name, const Tensor& t, double* out) {
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == kNumPartials && t.device().is_cpu() && is_float_dtype(t.scalar_type()),
                    kWho, ": ", name, " must be a CPU float vector of shape (", int(kNumPartials), ",), got ",
                    t.scalar_type(), " of shape ", shape_of(t));
  const Tensor d = t.to(at::kDouble).contiguous();
  std::copy(d.const_data_ptr<double>(), d.const_data_ptr<double>() + kNumPartials, out);
}

void check_lse(const char* name, const Tensor& t, bool needed, int64_t n, at::ScalarType acc) {
  if (!needed) return;
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == n && t.scalar_type() == acc && t.device().is_cpu(), kWho, ": ", name,
                    " must be the forward's, a CPU ", acc, " vector of shape (", n, ",), got ", t.scalar_type(),
                    " of shape ", shape_of(t));
}

std::vector<Tensor> backward_op(const Tensor& grad_partials, const Tensor& x, const Tensor& y, const Tensor& scale,
                                const OptTensor& bias, const Tensor& partials, const Tensor& row_lse,
                                const Tensor& col_lse, int64_t offset, int64_t compute, int64_t differentiate,
                                double clip) {
  check_call(x, y, offset, compute, differentiate, clip);
  const bool with_bias = bias.has_value() && bias->defined();
  const double s = scalar_value("scale", scale);
  const double b = with_bias ? scalar_value("bias", *bias) : 0.0;
  const at::ScalarType acc = compute_dtype(x.scalar_type());
  double up[kNumPartials], saved[kNumPartials];
  read_vector("grad_partials", grad_partials, up);
  read_vector("partials", partials, saved);
  check_lse("row_lse", row_lse, has(differentiate, kRowLseSum), x.size(0), acc);
  check_lse("col_lse", col_lse, has(differentiate, kColLseSum), y.size(0), acc);
  const Tensor rl = row_lse.contiguous(), cl = col_lse.contiguous();
  const Tensor xa = kernel_input(x), ya = kernel_input(y);
  // 16-bit inputs: the kernels write float32 gradients, rounded to the input dtype below
  Tensor grad_x = new_grad_output(xa), grad_y = new_grad_output(ya);
  double grad_scale = 0, grad_bias = 0;
  dispatch(acc, [&](auto zero) {
    using A = decltype(zero);
    backward_kernel<A>(make_problem<A>(xa, ya, s, b, offset, compute, differentiate, clip), run_config(),
                       torch_gemm<A>(), up, saved, rl.numel() ? rl.const_data_ptr<A>() : nullptr,
                       cl.numel() ? cl.const_data_ptr<A>() : nullptr, grad_x.data_ptr<A>(), grad_y.data_ptr<A>(),
                       &grad_scale, &grad_bias);
  });
  if (grad_x.scalar_type() != x.scalar_type()) grad_x = grad_x.to(x.scalar_type());
  if (grad_y.scalar_type() != y.scalar_type()) grad_y = grad_y.to(y.scalar_type());
  Tensor gs = values_tensor(&grad_scale, 1, true, acc);
  Tensor gb = with_bias ? values_tensor(&grad_bias, 1, true, acc) : at::detail::empty_cpu({0}, acc);
  return {grad_x, grad_y, gs, gb};
}

}  // namespace

void bind_critic(pybind11::module_& m) {
  using pybind11::call_guard;
  using pybind11::gil_scoped_release;
  m.def("critic_forward", &forward_op, call_guard<gil_scoped_release>(),
        "critic_bound: (partials, row_lse, col_lse) of one row problem (fastmi/critic/ops.py)");
  m.def("critic_backward", &backward_op, call_guard<gil_scoped_release>(),
        "critic_bound: (grad_x, grad_y, grad_scale, grad_bias) of one row problem (fastmi/critic/ops.py)");
  m.def("critic_set_tile", [](int64_t tile) { g_tile = tile > 0 ? tile : 0; },
        "critic_bound: tiles of tile x tile scores (tests, benchmarks); 0: the default plan");
  m.def("critic_tiles", [](int64_t B, int64_t N) {
        const Tiles t = plan_tiles(B, N, g_tile);
        return std::vector<int64_t>{t.rows, t.cols, t.R, t.C};
      },
      "critic_bound: (rows, cols, row tiles, column tiles) of a B x N problem");
  m.def("critic_previous_visitor", [](int64_t R, int64_t C, int64_t r, int64_t t) {
        Tiles tl;
        tl.R = R;
        tl.C = C;
        const Visitor v = previous_visitor(tl, r, t);
        return std::vector<int64_t>{v.r, v.t};
      },
      "critic_bound: the schedule's previous visitor of (r, t)'s column tile (tests)");
}

}  // namespace critic
}  // namespace fastmi
