// fastmi: the shape, dtype, device and layout checks of one InfoGAN loss call, shared by the
// torch-side bindings of the CPU kernels (csrc/infogan/cpu) and the CUDA kernels
// (csrc/infogan/cuda/binding.cpp).
//
// The kernels trust their pointers, so every binding runs these checks whoever calls it;
// the public API (fastmi/inputs.py) has already said the same more politely. This header
// uses ATen; the kernel headers (math.h, cuda/infogan_cuda.h) stay torch-free.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>

namespace fastmi {

inline bool present(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

// Which logits get a gradient in a backward with upstream grads for D (has_d) and G
// (has_g) present or not: a loss with no upstream grad is left out, so an input that only
// such losses use gets none (an empty [0], autograd's None), never 0 x its local
// gradient (NaN at a NaN). real enters D only; fake enters D and G.
struct UsedLogits {
  bool real, fake;
};
inline UsedLogits used_logits(const std::optional<at::Tensor>& real, const std::optional<at::Tensor>& fake,
                              bool has_d, bool has_g) {
  return {present(real) && has_d, present(fake) && (has_d || has_g)};
}

// The sizes a call's tensors must have: q is [B, W]; m categorical, nb bernoulli and n
// continuous codes.
struct CallShape {
  int64_t W, m, nb, n;
};

// Checks q (a contiguous [B >= 1, W] floating tensor on a `device`-type device), the
// logits (contiguous 1-D, q's dtype; fake has B rows, real any B >= 1) and the codes
// (contiguous [B, width] on q's device: int32/int64 indices, values in the accumulation
// dtype) and returns B. `who` starts every message.
inline int64_t check_inputs(const char* who, at::DeviceType device, const std::optional<at::Tensor>& real,
                            const std::optional<at::Tensor>& fake, const at::Tensor& q,
                            const std::optional<at::Tensor>& cat, const std::optional<at::Tensor>& bern,
                            const std::optional<at::Tensor>& cont, const CallShape& s) {
  TORCH_CHECK_VALUE(q.device().type() == device, who, ": q must be a ", c10::DeviceTypeName(device),
                    " tensor, got ", q.device());
  TORCH_CHECK_TYPE(at::isFloatingType(q.scalar_type()), who,
                   ": q must be float32, float64, bfloat16 or float16, got ", q.scalar_type());
  TORCH_CHECK_VALUE(q.dim() == 2 && q.size(1) == s.W && q.size(0) >= 1 && q.is_contiguous(), who,
                    ": q must be a contiguous [B >= 1, ", s.W, "] tensor, got ", q.sizes());
  const int64_t B = q.size(0);
  const auto acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto same_device = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK_VALUE(t.device() == q.device(), who, ": ", name, " is on ", t.device(), " but q is on ",
                      q.device());
  };
  auto check_logits = [&](const std::optional<at::Tensor>& t, const char* name, int64_t rows) {
    if (!present(t)) return;
    same_device(*t, name);
    TORCH_CHECK_VALUE(t->dim() == 1 && t->numel() >= 1 && t->is_contiguous() && (rows < 0 || t->numel() == rows),
                      who, ": ", name, " must be a contiguous 1-D tensor of ",
                      rows < 0 ? std::string("B >= 1") : std::to_string(rows), " rows, got ", t->sizes());
    TORCH_CHECK_TYPE(t->scalar_type() == q.scalar_type(), who, ": ", name, " must have q's dtype ",
                     q.scalar_type(), ", got ", t->scalar_type());
  };
  check_logits(real, "real_logits", -1);
  check_logits(fake, "fake_logits", B);
  auto check_codes = [&](const std::optional<at::Tensor>& t, const char* name, int64_t width, bool index) {
    if (width == 0) return;
    TORCH_CHECK_VALUE(present(t), who, ": codes.", name, " is missing for a spec with ", width, " codes");
    same_device(*t, name);
    TORCH_CHECK_VALUE(t->dim() == 2 && t->size(0) == B && t->size(1) == width && t->is_contiguous(), who,
                      ": codes.", name, " must be a contiguous [", B, ", ", width, "] tensor, got ", t->sizes());
    if (index) {
      TORCH_CHECK_TYPE(t->scalar_type() == at::kInt || t->scalar_type() == at::kLong, who, ": codes.", name,
                       " must be int32 or int64, got ", t->scalar_type());
    } else {
      TORCH_CHECK_TYPE(t->scalar_type() == acc, who, ": codes.", name, " must be ", acc, ", got ",
                       t->scalar_type());
    }
  };
  check_codes(cat, "categorical", s.m, true);
  check_codes(bern, "bernoulli", s.nb, false);
  check_codes(cont, "continuous", s.n, false);
  return B;
}

}  // namespace fastmi
