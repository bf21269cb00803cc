"""Checking a critic_bound backend against the float64 oracle: random inputs, the oracle,
and tolerances by dtype relative to each tensor's own magnitude. The tests
(tests/critic_helpers.py re-exports these) and the GPU checks (fastmi/critic/checks.py,
``python -m fastmi.validate``) share them, so that what CI checks and what a GPU
validation checks is the same code.

Every backend is compared with the reference backend evaluated in float64 on the same
(already rounded) inputs: the loss, mi, accuracy, jsd_bound and the gradients of x, y,
scale and bias.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from .api import critic_bound
from .outputs import CriticBoundOutput

# By the dtype of the tensor checked: (rtol, atol as a fraction of the largest magnitude
# of the expected tensor). Outputs are float32 for 16-bit inputs and meet float32's
# tolerance; gradients come back in the inputs' dtype, rounded once (half an ulp).
TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (5e-3, 1e-5),
    torch.float16: (1e-3, 1e-5),
}


class Pair(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor


def random_pair(rows: int, cols: int, dim: int, *, offset: int = 0, dtype=torch.float32, seed: int = 0,
                signal: float = 1.0, device="cpu") -> Pair:
    """Fresh Gaussian x [rows, dim], y [cols, dim] (never zeros), with y[i + offset] =
    x[i] + noise when ``signal`` > 0, so that positives stand out as in a trained critic
    (drawn on the CPU, the same values on every device)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=g, dtype=torch.float64)
    y = torch.randn(cols, dim, generator=g, dtype=torch.float64)
    y[offset:offset + rows] = signal * x + y[offset:offset + rows]
    return Pair((x / math.sqrt(dim)).to(dtype).to(device), (y / math.sqrt(dim)).to(dtype).to(device))


class Result(NamedTuple):
    out: CriticBoundOutput
    grad_x: torch.Tensor
    grad_y: torch.Tensor
    grad_scale: Optional[torch.Tensor]
    grad_bias: Optional[torch.Tensor]


def evaluate(x, y, *, backend="reference", scale=1.0, bias=None, upstream=1.0, **options) -> Result:
    """critic_bound on leaf copies of x and y (scale and bias as leaf 0-d tensors in the
    compute dtype), and the gradients of ``upstream * loss``."""
    acc = torch.float64 if torch.promote_types(x.dtype, y.dtype) == torch.float64 else torch.float32
    x = x.detach().clone().requires_grad_()
    y = y.detach().clone().requires_grad_()
    scale_t = torch.tensor(scale, dtype=acc, device=x.device, requires_grad=True)
    bias_t = None if bias is None else torch.tensor(bias, dtype=acc, device=x.device, requires_grad=True)
    out = critic_bound(x, y, scale=scale_t, bias=bias_t, backend=backend, **options)
    (out.loss * upstream).backward()
    return Result(out, x.grad, y.grad, scale_t.grad, None if bias_t is None else bias_t.grad)


def score_magnitude(options: dict) -> float:
    """About the largest |S| of a case: random_pair's rows have norms near 1 (or 1 with
    normalize), so |S| <= scale |x| |y| + |bias| is about scale + |bias|."""
    return options.get("scale", 1.0) + abs(options.get("bias") or 0.0)


def assert_close(actual, expected, name="", floor=0.0, amplify=1.0, tolerances=None):
    """``actual`` within the tolerance of its dtype of ``expected`` (``tolerances``, a dict
    like TOLERANCES, overrides), relative to the largest magnitude of ``expected`` or
    ``floor``, the absolute part ``amplify`` times looser (compared in float64)."""
    rtol, atol = (tolerances or TOLERANCES)[torch.as_tensor(actual).dtype]
    expected = torch.as_tensor(expected).detach().to(torch.float64)
    actual = torch.as_tensor(actual).detach().to(torch.float64)
    finite = expected[torch.isfinite(expected)]
    scale = max(float(finite.abs().max()) if finite.numel() else 0.0, floor)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=amplify * atol * max(scale, 1e-30) + 1e-300,
                               equal_nan=True, msg=lambda m: f"{name}: {m}")


def assert_results_close(actual: Result, expected: Result, input_dtype: torch.dtype, *, terms: float = 0.0,
                         input_grad_tolerances=None, input_grad_floors=(0.0, 0.0)):
    """Every output and gradient of ``actual`` close to ``expected``; the gradients of x
    and y in ``input_dtype``, of scale and bias in the loss's dtype. ``terms``: the
    magnitude of the scores, when larger than 1: the rounding of a score is ``terms``
    times its unit roundoff, and that is the error of a loss formed from such scores (a
    cross-entropy of 0.01 from two LSEs of 100 is known to float32 within 1e-5, not 1e-7)
    and the relative error of a softmax of them, hence of the gradients.
    ``input_grad_tolerances`` overrides TOLERANCES for the gradients of x and y (a backend
    that rounds G to a 16-bit dtype before its tensor-core product); ``input_grad_floors``
    are magnitudes below which the gradients of x and y are compared absolutely (a
    saturated softmax's "p - 1" is known to the compute dtype's roundoff of 1, not of p - 1)."""
    for name in ("loss", "mi", "accuracy", "jsd_bound"):
        assert_close(getattr(actual.out, name), getattr(expected.out, name), name, floor=terms)
    for name in ("grad_x", "grad_y", "grad_scale", "grad_bias"):
        a, e = getattr(actual, name), getattr(expected, name)
        if e is None:
            assert a is None, f"{name}: expected no gradient"
            continue
        want = input_dtype if name in ("grad_x", "grad_y") else actual.out.loss.dtype
        assert a is not None and a.dtype == want, f"{name}: {None if a is None else a.dtype}, expected {want}"
        # grad_scale and grad_bias are sums of G over the matrix, whose terms are O(1):
        # that is their magnitude when they cancel to ~0 (the bias of a softmax CE).
        floor = {"grad_scale": 1.0, "grad_bias": 1.0, "grad_x": input_grad_floors[0], "grad_y": input_grad_floors[1]}
        assert_close(a, e, name, floor=floor[name],
                     amplify=max(terms, 1.0), tolerances=input_grad_tolerances if name in ("grad_x", "grad_y") else None)


def oracle(x, y, **options) -> Result:
    """The reference in float64 on the same values."""
    return evaluate(x.double(), y.double(), backend="reference", **options)


# A backend that rounds G to a 16-bit input's dtype once for its tensor-core product (the
# Triton backward, as FlashAttention rounds dS) adds up to u sum_j |G_ij| |y_j| s to each
# element of dx (u = 2^-9 for bfloat16, 2^-11 for float16), on top of the output's own
# rounding: measured at up to 4.5 u of the gradient's largest magnitude, allowed 8 u.
ROUNDED_G_TOLERANCES = {**TOLERANCES, torch.bfloat16: (5e-3, 8 * 2.0 ** -9), torch.float16: (1e-3, 8 * 2.0 ** -11)}


def check_backend(backend: str, x, y, upstream=1.0, **options) -> None:
    """``backend`` against the float64 oracle on x and y (every output and gradient).

    Gradients of x and y: ROUNDED_G_TOLERANCES, and below s |y| / B (s |x| / B for y) they
    are compared absolutely: a saturated softmax's G = p - 1 on a positive is known to the
    compute dtype's roundoff of 1, not of p - 1 (the tiled backend's float32 shares it)."""
    got = evaluate(x, y, backend=backend, upstream=upstream, **options)
    want = oracle(x, y, upstream=upstream, **options)
    scale, rows = options.get("scale", 1.0), x.shape[0]
    if options.get("normalize"):
        floors = (scale / rows, scale / rows)
    else:
        floors = (scale * float(y.double().abs().max()) / rows, scale * float(x.double().abs().max()) / rows)
    assert_results_close(got, want, x.dtype, terms=score_magnitude(options),
                         input_grad_tolerances=ROUNDED_G_TOLERANCES, input_grad_floors=floors)
