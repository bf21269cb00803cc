"""Shared helpers of the critic_bound tests (tests/test_critic_*.py): random inputs, the
float64 oracle, tolerances relative to each tensor's own magnitude.

Every backend is compared with the reference backend evaluated in float64 on the same
(already rounded) inputs: the loss, mi, accuracy, jsd_bound and the gradients of x, y,
scale and bias.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple, Optional

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastmi

ESTIMATORS = ("infonce", "nwj", "dv", "js", "smile", "siglip")
# By the dtype of the tensor checked: (rtol, atol as a fraction of the largest magnitude
# of the expected tensor). Outputs are float32 for 16-bit inputs and meet float32's
# tolerance; gradients come back in the inputs' dtype, rounded once (half an ulp).
TOLERANCES = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (5e-3, 1e-5),
    torch.float16: (1e-3, 1e-5),
}

# Options that cover every estimator and every path of the partials: N > B with an
# offset, a bias, normalize, symmetric, smile's clip active.
CASES = [
    dict(estimator="infonce", scale=2.0),
    dict(estimator="infonce", scale=3.0, rows=6, cols=11, offset=4, bias=0.3),
    dict(estimator="infonce", scale=10.0, symmetric=True, normalize=True),
    dict(estimator="nwj", scale=0.8, rows=5, cols=9, offset=2, bias=-0.4),
    dict(estimator="dv", scale=1.5, rows=6, cols=10, offset=3),
    dict(estimator="js", scale=2.0, bias=0.5),
    dict(estimator="js", scale=4.0, rows=4, cols=7, offset=1, normalize=True),
    dict(estimator="smile", scale=3.0, rows=5, cols=8, offset=3, clip=1.0),
    dict(estimator="smile", scale=2.0, clip=5.0, bias=0.2),
    dict(estimator="siglip", scale=10.0, bias=-10.0, normalize=True, rows=6, cols=12, offset=6),
    dict(estimator="siglip", scale=3.0, bias=1.0),
]


def case_id(case: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in case.items())


class Pair(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor


def random_pair(rows: int, cols: int, dim: int, *, offset: int = 0, dtype=torch.float32, seed: int = 0,
                signal: float = 1.0) -> Pair:
    """Fresh Gaussian x [rows, dim], y [cols, dim] (never zeros), with y[i + offset] =
    x[i] + noise when ``signal`` > 0, so that positives stand out as in a trained critic."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=g, dtype=torch.float64)
    y = torch.randn(cols, dim, generator=g, dtype=torch.float64)
    y[offset:offset + rows] = signal * x + y[offset:offset + rows]
    return Pair((x / math.sqrt(dim)).to(dtype), (y / math.sqrt(dim)).to(dtype))


class Result(NamedTuple):
    out: fastmi.CriticBoundOutput
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
    scale_t = torch.tensor(scale, dtype=acc, requires_grad=True)
    bias_t = None if bias is None else torch.tensor(bias, dtype=acc, requires_grad=True)
    out = fastmi.critic_bound(x, y, scale=scale_t, bias=bias_t, backend=backend, **options)
    (out.loss * upstream).backward()
    return Result(out, x.grad, y.grad, scale_t.grad, None if bias_t is None else bias_t.grad)


def split_case(case: dict) -> tuple:
    """(rows, cols, options for critic_bound) of a CASES entry."""
    options = dict(case)
    rows = options.pop("rows", 6)
    cols = options.pop("cols", rows)
    return rows, cols, options


def score_magnitude(options: dict) -> float:
    """About the largest |S| of a case: random_pair's rows have norms near 1 (or 1 with
    normalize), so |S| <= scale |x| |y| + |bias| is about scale + |bias|."""
    return options.get("scale", 1.0) + abs(options.get("bias") or 0.0)


def assert_close(actual, expected, name="", floor=0.0, amplify=1.0):
    """``actual`` within the tolerance of its dtype of ``expected``, relative to the
    largest magnitude of ``expected`` or ``floor``, the absolute part ``amplify`` times
    looser (compared in float64)."""
    rtol, atol = TOLERANCES[torch.as_tensor(actual).dtype]
    expected = torch.as_tensor(expected).detach().to(torch.float64)
    actual = torch.as_tensor(actual).detach().to(torch.float64)
    finite = expected[torch.isfinite(expected)]
    scale = max(float(finite.abs().max()) if finite.numel() else 0.0, floor)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=amplify * atol * max(scale, 1e-30) + 1e-300,
                               equal_nan=True, msg=lambda m: f"{name}: {m}")


def assert_results_close(actual: Result, expected: Result, input_dtype: torch.dtype, *, terms: float = 0.0):
    """Every output and gradient of ``actual`` close to ``expected``; the gradients of x
    and y in ``input_dtype``, of scale and bias in the loss's dtype. ``terms``: the
    magnitude of the scores, when larger than 1: the rounding of a score is ``terms``
    times its unit roundoff, and that is the error of a loss formed from such scores (a
    cross-entropy of 0.01 from two LSEs of 100 is known to float32 within 1e-5, not 1e-7)
    and the relative error of a softmax of them, hence of the gradients."""
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
        assert_close(a, e, name, floor=1.0 if name in ("grad_scale", "grad_bias") else 0.0,
                     amplify=max(terms, 1.0))


def oracle(x, y, **options) -> Result:
    """The reference in float64 on the same values."""
    return evaluate(x.double(), y.double(), backend="reference", **options)


# ---- several processes ---------------------------------------------------------------------

WORLD = 2


def join_group(rank: int, folder: str) -> None:
    """A worker's first step: join the gloo group of WORLD processes (a FileStore in ``folder``)."""
    torch.set_num_threads(1)  # two processes on a shared machine
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD)


def run_workers(worker, folder, timeout_s: float = 240) -> None:
    """Runs ``worker(rank, str(folder))`` in WORLD spawned processes; fails the test if one
    fails or they outlast ``timeout_s`` (a collective that never completes)."""
    context = mp.spawn(worker, args=(str(folder),), nprocs=WORLD, join=False)
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            pytest.fail(f"the {WORLD} gloo processes did not finish in {timeout_s} s")
