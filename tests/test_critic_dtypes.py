"""16-bit inputs: the scores and every reduction are float32, so the loss, mi and
accuracy meet float32's tolerance against the float64 oracle fed the same rounded
inputs, and the gradients come back in the inputs' dtype, rounded once. Mixed dtypes
promote as torch does; inside torch.autocast the scores stay float32."""

import pytest
import torch

import fastmi
from critic_helpers import (CASES, assert_close, assert_results_close, case_id, evaluate, oracle, random_pair,
                            score_magnitude, split_case)


@pytest.mark.parametrize("backend", ["reference", "tiled"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_half_inputs(case, dtype, backend):
    rows, cols, options = split_case(case)
    x, y = random_pair(rows, cols, 16, offset=options.get("offset", 0), dtype=dtype, seed=rows * cols)
    got = evaluate(x, y, backend=backend, upstream=1.3, **options)
    assert got.out.loss.dtype == torch.float32 and got.grad_x.dtype == dtype
    assert_results_close(got, oracle(x, y, upstream=1.3, **options), dtype, terms=score_magnitude(options))


@pytest.mark.parametrize("backend", ["reference", "tiled"])
def test_mixed_dtypes_promote(backend):
    x, y = random_pair(6, 6, 8, seed=1)
    x = x.to(torch.bfloat16)
    got = evaluate(x, y, backend=backend, estimator="dv", scale=2.0)
    expected = oracle(x, y, estimator="dv", scale=2.0)
    assert got.out.loss.dtype == torch.float32
    assert got.grad_x.dtype == torch.bfloat16 and got.grad_y.dtype == torch.float32
    for name in ("loss", "mi"):
        assert_close(getattr(got.out, name), getattr(expected.out, name), name)
    for name in ("grad_x", "grad_y"):  # each within the tolerance of its own dtype
        assert_close(getattr(got, name), getattr(expected, name), name)


@pytest.mark.parametrize("backend", ["reference", "tiled"])
@pytest.mark.parametrize("estimator", ["infonce", "siglip"])
def test_inside_autocast(backend, estimator):
    torch.manual_seed(0)
    towers = torch.nn.Linear(16, 8), torch.nn.Linear(16, 8)
    inputs = random_pair(10, 10, 16, seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x, y = (tower(t) for tower, t in zip(towers, inputs))
        assert x.dtype == torch.bfloat16
        out = fastmi.critic_bound(x, y, estimator=estimator, scale=5.0, bias=-2.0, normalize=True, backend=backend,
                                  symmetric=estimator == "infonce")
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    assert all(torch.isfinite(t.weight.grad).all() for t in towers)
    expected = fastmi.critic_bound(x.detach().double(), y.detach().double(), estimator=estimator, scale=5.0,
                                   bias=-2.0, normalize=True, symmetric=estimator == "infonce")
    assert_close(out.loss, expected.loss, "loss")
