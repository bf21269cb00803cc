// fastmi CPU ops, torch side: what every op's glue needs between tensors and its
// torch-free kernels (csrc/<op>/cpu/kernels.h).
//
//   StorageOf<scalar_t>   the kernels' storage type of a torch dtype: at::BFloat16 and
//                         at::Half data are passed as bf16_t / f16_t (same bits)
//   data_of<scalar_t>     a tensor's data as that type (checks the dtype)
//   values_tensor         a fresh CPU tensor of n values (0-d for a scalar)
//   new_grad_output       a fresh gradient buffer like a given input, from the pool
//   upstream_value        an upstream grad, read in place; absent counts as 0
//   kernel_threads        the threads a kernel may use: torch's setting
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <optional>
#include <type_traits>

#include "../dtypes.h"
#include "grad_pool.h"

namespace fastmi {

template <typename scalar_t>
struct StorageOf {
  using type = scalar_t;
};
template <>
struct StorageOf<at::BFloat16> {
  using type = bf16_t;
};
template <>
struct StorageOf<at::Half> {
  using type = f16_t;
};
template <typename scalar_t>
using storage_t = typename StorageOf<scalar_t>::type;

template <typename scalar_t>
storage_t<scalar_t>* data_of(const at::Tensor& t) {
  static_assert(sizeof(storage_t<scalar_t>) == sizeof(scalar_t), "a storage type has its dtype's bits");
  return reinterpret_cast<storage_t<scalar_t>*>(t.data_ptr<scalar_t>());
}

// A fresh CPU tensor holding values[0..n) (scalar: a 0-d tensor of values[0]), in dtype
// (float or double). at::detail::empty_cpu skips the dispatcher, which costs more than
// the whole kernel at small batch sizes.
inline at::Tensor values_tensor(const double* values, int64_t n, bool scalar, at::ScalarType dtype) {
  at::Tensor t = scalar ? at::Tensor(at::detail::empty_cpu({}, dtype)) : at::Tensor(at::detail::empty_cpu({n}, dtype));
  if (dtype == at::kDouble) std::copy(values, values + n, t.data_ptr<double>());
  else std::transform(values, values + n, t.data_ptr<float>(), [](double x) { return static_cast<float>(x); });
  return t;
}

// Tests set this to fill fresh gradient buffers with NaN before a kernel writes them, so
// an element a kernel forgets to write shows up. One flag for the whole library.
inline std::atomic<bool> g_poison_outputs{false};

// A fresh, uninitialized buffer of like's sizes and dtype, from the gradient pool
// (csrc/common/cpu/grad_pool.h).
inline at::Tensor new_grad_output(const at::Tensor& like) {
  at::Tensor t = at::detail::empty_generic(like.sizes(), &GradPool::get(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                           like.scalar_type(), std::nullopt);
  if (g_poison_outputs.load(std::memory_order_relaxed)) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

// The value of an upstream grad (a one-element CPU tensor); absent counts as 0. Read in
// place: item() would go through the dispatcher.
inline double upstream_value(const std::optional<at::Tensor>& g) {
  if (!g.has_value() || !g->defined()) return 0.0;
  TORCH_CHECK_VALUE(g->numel() == 1 && g->device().is_cpu(), "fastmi cpu: an upstream grad must be a CPU scalar");
  double value = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, g->scalar_type(), "fastmi_upstream",
                                  [&] { value = static_cast<double>(*g->const_data_ptr<scalar_t>()); });
  return value;
}

// The threads a kernel's OpenMP loop may use: what torch.set_num_threads set.
inline int kernel_threads() { return at::get_num_threads(); }

}  // namespace fastmi
