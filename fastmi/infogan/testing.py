"""Checking an InfoGAN backend against the float64 oracle: random inputs, the oracle, and
tolerances by dtype. The test suite and ``python -m fastmi.validate`` (on a user's GPU)
share these, so that what CI checks and what a GPU validation checks is the same code.

Every backend is compared with the reference backend evaluated in float64 on the same
(already rounded) inputs, on the three losses, the stats and every gradient, with a
random upstream grad on each of the three losses.

Tolerances (:func:`assert_close`), relative to each tensor's own largest magnitude, with
no floor that would let small values pass whatever they are:

- losses and stats are computed in float32 from 16-bit inputs: float32 tolerances, relative
  to the magnitude their rounding errors have (:func:`loss_scales`, :func:`stat_scales`:
  a bound is a difference of O(1) quantities, a categorical NLL the log of a sum >= 1);
- gradients come back in the input's dtype, rounded once from float32: a few ulps of
  that dtype (2 for bfloat16 and float16), plus the float32 arithmetic's error, relative
  to the tensor's magnitude (a softmax's "- 1" cancels in float32 before the rounding);
  float16 also allows its subnormal spacing, where a gradient underflows its normals.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from .api import infogan_loss
from .spec import Codes, LatentSpec

# (rtol, atol as a multiple of the tensor's largest finite magnitude, absolute atol)
FLOAT32 = (1e-5, 1e-6, 0.0)
TOLERANCES = {
    torch.float64: (1e-10, 1e-12, 0.0),
    torch.float32: FLOAT32,
    torch.bfloat16: (2 * 2.0 ** -8, 4 * 2.0 ** -23, 0.0),
    torch.float16: (2 * 2.0 ** -11, 4 * 2.0 ** -23, 2 * 2.0 ** -24),
}

# The specs of the GPU kernels' checks: the paper's MNIST, every option at once, a K past
# any block, several K, K = 65536, and specs without a categorical code.
MNIST = LatentSpec(categorical=(10,), continuous=2)
RICH = LatentSpec(categorical=(3, 7), bernoulli=2, continuous=3, continuous_prior="normal", std=0.7)
WIDE = LatentSpec(categorical=(1000,), continuous=4)
MULTI = LatentSpec(categorical=(3, 70, 5), bernoulli=3, continuous=2)
HUGE = LatentSpec(categorical=(65536, 5), bernoulli=1, continuous=1)
CONT_ONLY = LatentSpec(categorical=(), continuous=3, std=1.3)
BERN_ONLY = LatentSpec(categorical=(), bernoulli=4, continuous=0)


class Case(NamedTuple):
    real: Optional[torch.Tensor]
    fake: Optional[torch.Tensor]
    q: torch.Tensor
    codes: Codes


def random_case(spec: LatentSpec, batch: int, *, real_batch: Optional[int] = None, dtype=torch.float32,
                seed: int = 0, confident: bool = False, with_real: bool = True, with_fake: bool = True,
                index_dtype=torch.int64, bernoulli_dtype=torch.float32, device="cpu", scale: float = 1.0) -> Case:
    """Fresh random logits, Q outputs and codes. With ``confident`` half the rows put a
    +12 logit on the true class, so the softmax is near 1 there."""
    g = torch.Generator().manual_seed(seed)
    real_batch = batch if real_batch is None else real_batch
    q = torch.randn(batch, spec.q_width, generator=g, dtype=torch.float64) * 2.0 * scale
    codes = spec.sample(batch, generator=g)
    if confident and spec.categorical:
        col = 0
        for k, classes in enumerate(spec.categorical):
            rows = torch.arange(0, batch, 2)
            q[rows, col + codes.categorical[rows, k]] += 12.0
            col += classes
    if spec.continuous and spec.learned_std:
        q[:, -spec.continuous:] *= 0.5  # log-variances of a plausible size
    real = torch.randn(real_batch, generator=g, dtype=torch.float64) * 2.0 * scale if with_real else None
    fake = torch.randn(batch, generator=g, dtype=torch.float64) * 2.0 * scale if with_fake else None
    codes = Codes(codes.categorical.to(index_dtype), codes.bernoulli.to(bernoulli_dtype),
                  codes.continuous.to(torch.float32 if dtype != torch.float64 else torch.float64), spec=spec)

    def in_dtype_on_device(t):
        return None if t is None else t.to(dtype).to(device)

    codes = Codes(*(None if t is None else t.to(device) for t in codes[:3]), spec=spec)
    return Case(in_dtype_on_device(real), in_dtype_on_device(fake), in_dtype_on_device(q), codes)


def random_upstream(seed: int = 0, dtype=torch.float32, device="cpu") -> tuple:
    """Upstream grads for (discriminator, generator, info), each in [-0.5, 1.5)."""
    g = torch.Generator().manual_seed(1000 + seed)
    return tuple((torch.rand((), generator=g, dtype=torch.float64) * 2 - 0.5).to(dtype).to(device)
                 for _ in range(3))


class Result(NamedTuple):
    outputs: dict   # discriminator, generator, info, jsd_bound, mi_categorical, mi_bernoulli, mi_continuous
    grads: dict     # real_logits, fake_logits, q (None where absent)


def evaluate(case: Case, spec, backend: str, upstream: tuple, **options) -> Result:
    """Runs the loss on leaf copies of the case and backpropagates ``upstream`` through
    (discriminator, generator, info)."""
    leaves = [None if t is None else t.detach().clone().requires_grad_(True) for t in case[:3]]
    out = infogan_loss(leaves[0], leaves[1], leaves[2], case.codes, spec, backend=backend, **options)
    torch.autograd.backward([out.discriminator, out.generator, out.info],
                            [u.to(out.discriminator.dtype) for u in upstream])
    outputs = {"discriminator": out.discriminator, "generator": out.generator, "info": out.info,
               **out.stats._asdict()}
    outputs = {k: v.detach() for k, v in outputs.items()}
    grads = {name: None if t is None else t.grad for name, t in zip(("real_logits", "fake_logits", "q"), leaves)}
    return Result(outputs, grads)


def oracle(case: Case, spec, upstream: tuple, **options) -> Result:
    """The reference backend in float64 on the same (already rounded) inputs."""
    def f64(t):
        return None if t is None else t.detach().to(torch.float64)

    codes = case.codes._replace(bernoulli=f64(case.codes.bernoulli), continuous=f64(case.codes.continuous))
    case64 = Case(f64(case.real), f64(case.fake), f64(case.q), codes)
    return evaluate(case64, spec, "reference", tuple(u.to(torch.float64) for u in upstream), **options)


def assert_close(got: torch.Tensor, want: torch.Tensor, dtype, what: str, magnitude: Optional[float] = None) -> None:
    """``got`` within the tolerances of ``dtype`` (module docstring) of ``want``, NaN where
    ``want`` is NaN; the absolute part relative to ``want``'s largest finite magnitude, or to
    ``magnitude`` when given (a stat: :func:`stat_scales`)."""
    rtol, atol_rel, atol_abs = TOLERANCES[dtype]
    want64 = want.to(torch.float64)
    got64 = got.to(torch.float64)
    assert got64.shape == want64.shape, f"{what}: shape {tuple(got64.shape)} != {tuple(want64.shape)}"
    finite = want64[torch.isfinite(want64)]
    mag = magnitude if magnitude is not None else finite.abs().max().item() if finite.numel() else 0.0
    torch.testing.assert_close(got64, want64, rtol=rtol, atol=atol_rel * mag + atol_abs, equal_nan=True,
                               msg=lambda m: f"{what} ({dtype}): {m}")


def stat_scales(want: dict, spec: Optional[LatentSpec]) -> dict:
    """The magnitude each stat's tolerance is relative to: the two sides of the difference
    it is, H(c) (log 2 for jsd_bound) and the mean term (H - the stat). A bound near 0 is a
    difference of O(1) quantities whose rounding errors are relative to those, not to the
    small difference; the stat itself is stored in float32 at H's magnitude."""
    if spec is None:
        return {}
    entropies = {"jsd_bound": math.log(2.0), "mi_categorical": torch.tensor(spec.categorical_entropy),
                 "mi_bernoulli": spec.bernoulli_entropy, "mi_continuous": spec.continuous_entropy}
    scales = {}
    for name, entropy in entropies.items():
        h = torch.as_tensor(entropy, dtype=torch.float64)
        value = want[name].double().cpu()
        finite = torch.isfinite(value)
        both = (h.abs() + (h - value).abs())[finite]
        scales[name] = both.max().item() if both.numel() else 0.0
    return scales


def loss_scales(want: dict, spec: Optional[LatentSpec]) -> dict:
    """The magnitude each loss's tolerance is relative to: its value plus, per categorical
    code, 1: a categorical NLL is log(sum exp(l - max)) - (l_c - max), the log of a sum of
    at least 1, so its rounding error is that of numbers near 1 whatever the NLL's size (a
    confident prediction has an NLL of 1e-4 but the same absolute error as any other)."""
    if spec is None:
        return {}
    return {name: abs(want[name].double().item()) + len(spec.categorical)
            for name in ("discriminator", "generator", "info") if torch.isfinite(want[name]).item()}


def q_grad_scale(want: Result, case: Case, upstream: Optional[tuple], options: dict) -> Optional[float]:
    """The magnitude the q gradient's tolerance is relative to: its own largest value or,
    with a categorical code, the factor before the softmax, (|u_gen| + |u_info|) lambda_cat
    / B: the gradient is that factor times (p - onehot), and p - 1 for a confident p near 1
    cancels two numbers near 1, so its float32 error is relative to the factor, not to the
    small difference (a 2-class row with p = 0.9998 has a gradient of 2e-4 times it)."""
    spec = getattr(case.codes, "spec", None)
    grad = want.grads.get("q")
    if grad is None or spec is None or not spec.categorical or upstream is None:
        return None
    finite = grad[torch.isfinite(grad)]
    own = finite.abs().max().item() if finite.numel() else 0.0
    per_row = 1.0 if options.get("reduction", "mean") == "sum" else 1.0 / case.q.shape[0]
    factor = (abs(float(upstream[1])) + abs(float(upstream[2]))) * float(options.get("lambda_cat", 1.0)) * per_row
    return max(own, factor)


def assert_matches_oracle(result: Result, want: Result, dtype, case: Case, upstream: Optional[tuple] = None,
                          options: Optional[dict] = None) -> None:
    """Losses and stats to float32 tolerances (float64 for float64 inputs; relative to
    :func:`loss_scales` and :func:`stat_scales`), gradients to their own dtype's (the q
    gradient relative to :func:`q_grad_scale` when ``upstream`` is given)."""
    output_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    spec = getattr(case.codes, "spec", None)
    scales = {**stat_scales(want.outputs, spec), **loss_scales(want.outputs, spec)}
    grad_scales = {"q": q_grad_scale(want, case, upstream, options or {})}
    for name, value in want.outputs.items():
        assert_close(result.outputs[name], value, output_dtype, f"output {name}", magnitude=scales.get(name))
    for name, value in want.grads.items():
        got = result.grads[name]
        if value is None:
            assert got is None, f"grad {name} should be absent"
            continue
        assert got is not None, f"grad {name} is missing"
        source = {"real_logits": case.real, "fake_logits": case.fake, "q": case.q}[name]
        assert got.dtype == source.dtype, f"grad {name} dtype {got.dtype} != input dtype {source.dtype}"
        assert_close(got, value, dtype, f"grad {name}", magnitude=grad_scales.get(name))


def check_backend(backend: str, spec, batch: int, dtype=torch.float32, seed: int = 0, options=None,
                  device="cpu", **case_kwargs) -> None:
    """The whole comparison for one configuration."""
    options = options or {}
    case = random_case(spec, batch, dtype=dtype, seed=seed, device=device, **case_kwargs)
    upstream = random_upstream(seed, device=device)
    got = evaluate(case, spec, backend, upstream, **options)
    want = oracle(case, spec, upstream, **options)
    assert_matches_oracle(got, want, dtype, case, upstream, options)
