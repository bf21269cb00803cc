"""The tiled backend: the fused ops of fastmi/critic/ops.py in pure PyTorch. Each partial
and its gradient against the reference's autograd, every estimator against the float64
oracle, tile by tile; it never holds the B x N scores, its backward is deterministic,
and it stays finite where the scores are large."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastmi
from critic_helpers import (CASES, ESTIMATORS, assert_close, assert_results_close, case_id, evaluate, oracle,
                            random_pair, score_magnitude, split_case)
from fastmi.critic import bounds, reference, tiled
from fastmi.critic.problem import RowProblem, make_problem

DIFFERENTIABLE = [name for name in bounds.PARTIALS if name != "correct"]
F64 = torch.float64


def _leaves(rows, cols, dim, offset, with_bias, seed):
    pair = random_pair(rows, cols, dim, offset=offset, dtype=F64, seed=seed)
    scale = torch.tensor(2.5, dtype=F64)
    bias = torch.tensor(-0.3, dtype=F64) if with_bias else None
    return [t.requires_grad_() if t is not None else None for t in (pair.x, pair.y, scale, bias)]


@pytest.mark.parametrize("tile_scores", [None, 7, 40], ids=["one-tile", "tile-1-row", "tile-4-rows"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("partial", DIFFERENTIABLE + ["all"])
def test_partial_and_its_gradient(partial, with_bias, tile_scores):
    """forward's partial == the reference's; backward with a random upstream grad ==
    autograd of the reference, for x, y, scale, bias (B = 9 rows, N = 10 at offset 1)."""
    rows, cols, offset = 9, 10, 1
    names = DIFFERENTIABLE if partial == "all" else [partial]
    problem = RowProblem(offset, bounds.mask_of(names + ["correct"]), bounds.mask_of(names), clip=0.7)
    x, y, scale, bias = _leaves(rows, cols, 5, offset, with_bias, seed=len(names) + 3 * with_bias)

    expected = reference.partials(x, y, scale, bias, problem)
    upstream = torch.randn(len(bounds.PARTIALS), generator=torch.Generator().manual_seed(5), dtype=F64)
    upstream[bounds.INDEX["correct"]] = 0.0
    total = sum(upstream[bounds.INDEX[n]] * getattr(expected, n) for n in names)
    inputs = [t for t in (x, y, scale, bias) if t is not None]
    want = torch.autograd.grad(total, inputs)

    with torch.no_grad():
        vector, row_lse, col_lse = tiled.forward(x, y, scale, bias, *problem, tile_scores=tile_scores)
        for name in names + ["correct"]:
            assert_close(vector[bounds.INDEX[name]], getattr(expected, name), name)
        grads = tiled.backward(upstream, x, y, scale, bias, vector, row_lse, col_lse, *problem,
                               tile_scores=tile_scores)
    got = [g for g, t in zip(grads, (x, y, scale, bias)) if t is not None]
    for name, a, e in zip(("grad_x", "grad_y", "grad_scale", "grad_bias"), got, want):
        assert_close(a, e, name)
    if bias is None:
        assert grads[3].shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=str)
@pytest.mark.parametrize("tile_scores", [None, 13], ids=["one-tile", "small-tiles"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_estimator_matches_oracle(case, tile_scores, dtype, monkeypatch):
    if tile_scores is not None:
        monkeypatch.setattr(tiled, "TILE_SCORES", tile_scores)
    rows, cols, options = split_case(case)
    pair = random_pair(rows, cols, 8, offset=options.get("offset", 0), dtype=dtype, seed=rows + cols)
    got = evaluate(*pair, backend="tiled", upstream=0.7, **options)
    assert_results_close(got, oracle(*pair, upstream=0.7, **options), dtype, terms=score_magnitude(options))


@pytest.mark.parametrize("estimator", [e for e in bounds.ESTIMATORS if e != "smile"])  # smile: see test_smile_*
def test_gradcheck(estimator, monkeypatch):
    """Finite differences agree with the tiled backward (float64, several tiles)."""
    monkeypatch.setattr(tiled, "TILE_SCORES", 15)
    x, y, scale, bias = _leaves(5, 7, 3, 2, True, seed=11)

    def loss(x, y, scale, bias):
        return fastmi.critic_bound(x, y, estimator=estimator, scale=scale, bias=bias, offset=2,
                                   backend="tiled").loss

    torch.autograd.gradcheck(loss, (x, y, scale, bias))


@pytest.mark.parametrize("backend", ["reference", "tiled"])
def test_smile_has_the_clipped_dv_value_and_the_js_gradient(backend):
    """smile's loss is not differentiable as written (its gradient is js's by design), so
    gradcheck does not apply: its value is -mi and its gradients are js's."""
    x, y = random_pair(6, 9, 4, offset=3, dtype=F64, seed=12)
    options = dict(scale=3.0, bias=0.4, offset=3, clip=1.0)
    smile = evaluate(x, y, backend=backend, estimator="smile", **options)
    js = evaluate(x, y, backend=backend, estimator="js", **options)
    dv = fastmi.critic_bound(x, y, estimator="dv", scale=3.0, bias=0.4, offset=3, backend=backend).mi
    unclipped = fastmi.critic_bound(x, y, estimator="smile", scale=3.0, bias=0.4, offset=3, clip=1e3,
                                    backend=backend).mi
    assert smile.out.loss.item() == pytest.approx(-smile.out.mi.item(), rel=1e-14)
    assert unclipped.item() == pytest.approx(dv.item(), rel=1e-12)        # a clip above every |S|: DV
    assert abs(smile.out.mi.item() - dv.item()) > 0.1                      # clip 1 < some |S| here: it bites
    for name in ("grad_x", "grad_y", "grad_scale", "grad_bias"):
        assert torch.equal(getattr(smile, name), getattr(js, name)), name


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("estimator", bounds.ESTIMATORS)
def test_never_holds_the_score_matrix(estimator, monkeypatch):
    """No tensor of the forward and backward is larger than a tile of scores or the
    inputs (the reference, which stores B x N, trips the same detector)."""
    rows, dim, rows_per_tile = 64, 4, 8
    monkeypatch.setattr(tiled, "TILE_SCORES", rows_per_tile * rows)
    x, y = (t.requires_grad_() for t in random_pair(rows, rows, dim, seed=2))
    symmetric = estimator == "infonce"
    for backend, bound in (("tiled", rows_per_tile * rows), ("reference", None)):
        with LargestTensor() as seen:
            out = fastmi.critic_bound(x, y, estimator=estimator, symmetric=symmetric, backend=backend)
            out.loss.backward()
        if bound is None:
            assert seen.largest >= rows * rows
        else:
            assert seen.largest <= bound, f"a tensor of {seen.largest} elements, tiles hold {bound}"


def test_backward_is_deterministic(monkeypatch):
    monkeypatch.setattr(tiled, "TILE_SCORES", 300)
    x, y = random_pair(40, 50, 16, offset=5, seed=3)
    runs = [evaluate(x, y, backend="tiled", estimator="siglip", scale=4.0, bias=-1.0, offset=5) for _ in range(2)]
    for name in ("grad_x", "grad_y", "grad_scale", "grad_bias"):
        assert torch.equal(getattr(runs[0], name), getattr(runs[1], name)), name


@pytest.mark.parametrize("estimator", [e for e in ESTIMATORS if e != "nwj"])  # nwj: see below
def test_large_scores_stay_finite(estimator):
    """CLIP's largest scale on unit rows: scores up to 100, where exp(S) overflows
    float32. Masked positives are -inf before any exp, so nothing becomes inf * 0. (NWJ's
    own gradient, exp(S - 1) / n, is past float32's range at these scores.)"""
    x, y = random_pair(32, 32, 8, seed=4, signal=4.0)
    options = dict(estimator=estimator, scale=100.0, normalize=True, symmetric=estimator == "infonce")
    got = evaluate(x, y, backend="tiled", **options)
    for t in (got.out.loss, got.grad_x, got.grad_y, got.grad_scale):
        assert torch.isfinite(t).all()
    assert_results_close(got, oracle(x, y, **options), torch.float32, terms=100.0)


@pytest.mark.parametrize("backend", ["reference", "tiled"])
def test_nwj_mean_stays_finite_where_a_sum_would_overflow(backend):
    """Every score 85: the mean of exp(S - 1) over the 4032 negatives is e^84 ~ 3e36,
    their float32 sum 1.2e40 would be inf. NWJ's term is exp(lme - 1), so it is finite."""
    x = torch.ones(64, 4)
    out = fastmi.critic_bound(x, x.clone(), estimator="nwj", scale=85.0, normalize=True, backend=backend)
    expected = 85.0 - torch.tensor(84.0, dtype=F64).exp()
    assert torch.isfinite(out.loss)
    assert_close(out.mi, expected, "mi", floor=85.0)


def test_non_contiguous_inputs():
    big_x, big_y = random_pair(12, 12, 16, seed=6)
    x, y = big_x[:, ::2], big_y.T.contiguous().T[:, 1::2]
    assert not x.is_contiguous() and not y.is_contiguous()
    options = dict(estimator="dv", scale=2.0)
    assert_results_close(evaluate(x, y, backend="tiled", **options), oracle(x, y, **options), torch.float32)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_double_backward_takes_the_reference(estimator, monkeypatch):
    """create_graph=True through the fused op: the backward switches to the reference's
    composite formulas, so a gradient penalty gets the second derivative. gradgradcheck
    in float64, on the eager path and on the registered op (torch.compile's)."""
    monkeypatch.setattr(tiled, "TILE_SCORES", 15)
    x, y, scale, bias = _leaves(5, 7, 3, 2, True, seed=13)

    def loss(x, y, scale, bias):
        return fastmi.critic_bound(x, y, estimator=estimator, scale=scale, bias=bias, offset=2, clip=0.8,
                                   backend="tiled").loss

    torch.autograd.gradgradcheck(loss, (x, y, scale, bias))
    problem = make_problem(estimator, False, False, 0.8, 2).rows

    def through_the_op(x, y, scale, bias):
        partials = tiled.ops.forward(x, y, scale, bias, *problem)[0]
        weights = torch.linspace(0.5, 1.5, len(bounds.PARTIALS), dtype=F64)
        return (partials * weights)[[bounds.INDEX[n] for n in bounds.PARTIALS
                                     if problem.differentiate >> bounds.INDEX[n] & 1]].sum()

    torch.autograd.gradgradcheck(through_the_op, (x, y, scale, bias))


def test_gradient_penalty_matches_the_reference():
    """R1-style: the squared norm of dL/dx, differentiated again, equals the reference's."""
    x, y = random_pair(6, 6, 4, dtype=F64, seed=14)
    results = []
    for backend in ("reference", "tiled"):
        leaves = [x.clone().requires_grad_(), y.clone().requires_grad_()]
        loss = fastmi.critic_bound(*leaves, estimator="siglip", scale=3.0, bias=-1.0, backend=backend).loss
        (grad_x,) = torch.autograd.grad(loss, leaves[0], create_graph=True)
        grad_x.square().sum().backward()
        results.append([t.grad for t in leaves])
    for got, want in zip(*results):
        assert_close(got, want)


def test_torch_func_transforms():
    """Inside torch.func, "auto" runs the reference; a fused backend says it cannot."""
    x, y = random_pair(5, 5, 3, dtype=F64, seed=15)
    grad = torch.func.grad(lambda x: fastmi.critic_bound(x, y, estimator="dv", backend="auto").loss)(x)
    assert_close(grad, evaluate(x, y, estimator="dv").grad_x)
    batched = torch.func.vmap(lambda x: fastmi.critic_bound(x, y, scale=torch.tensor(2.0, dtype=F64)).loss)(
        torch.stack([x, 2 * x]))
    assert_close(batched[1], fastmi.critic_bound(2 * x, y, scale=2.0).loss)
    with pytest.raises(RuntimeError, match="backend 'tiled' does not support torch.func transforms"):
        torch.func.grad(lambda x: fastmi.critic_bound(x, y, backend="tiled").loss)(x)
