"""gradcheck, extremes, NaN propagation, determinism, thread-count independence, and the
CPU kernel's vector exp/log against float64."""

import math

import pytest
import torch

import fastmi
from fastmi.infogan import cpu
from helpers import assert_matches_oracle, evaluate, oracle, random_case, random_upstream

SPEC = fastmi.LatentSpec(categorical=(4, 3), bernoulli=2, continuous=2, continuous_prior="normal")
FIXED = fastmi.LatentSpec(categorical=(5,), continuous=3, std=0.5)
WIDE = fastmi.LatentSpec(categorical=(130,), bernoulli=1, continuous=1)


def _loss_fn(case, spec, backend, options):
    def fn(real, fake, q):
        out = fastmi.infogan_loss(real, fake, q, case.codes, spec, backend=backend, **options)
        return out.discriminator, out.generator, out.info
    return fn


@pytest.mark.parametrize("spec", [SPEC, FIXED, WIDE], ids=["learned", "fixed", "wide"])
@pytest.mark.parametrize("options", [{}, dict(generator_loss="minimax", reduction="sum", real_label=0.8)],
                         ids=["default", "minimax-sum-smoothed"])
def test_gradcheck_float64(spec, options):
    case = random_case(spec, 9, real_batch=6, dtype=torch.float64, seed=2)
    inputs = tuple(t.detach().clone().requires_grad_() for t in case[:3])
    assert torch.autograd.gradcheck(_loss_fn(case, spec, "cpu", options), inputs, eps=1e-6, atol=1e-7)


def test_gradcheck_with_absent_real_logits():
    case = random_case(SPEC, 5, dtype=torch.float64, seed=3, with_real=False)
    fn = lambda fake, q: _loss_fn(case, SPEC, "cpu", {})(None, fake, q)  # noqa: E731
    inputs = (case.fake.clone().requires_grad_(), case.q.clone().requires_grad_())
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_extreme_logits_give_finite_losses_and_grads(backend, dtype):
    """Logits of +-1e4 and log-variances of +-60: every loss, stat and gradient finite and
    equal to the float64 reference on the same rounded inputs (within the dtype's
    tolerances), not just finite."""
    case = random_case(SPEC, 64, dtype=dtype, seed=4)
    sign = torch.where(torch.arange(64) % 2 == 0, 1.0, -1.0).to(dtype)
    q = case.q.clone()
    q[:, :9] = 1e4 * sign[:, None] * torch.randn(64, 9).sign().to(dtype)   # categorical + bernoulli logits
    q[:, -2:] = torch.tensor([60.0, -60.0], dtype=dtype)                     # extreme log-variances
    extreme = case._replace(real=1e4 * sign, fake=-1e4 * sign, q=q)
    upstream = random_upstream(4)
    got = evaluate(extreme, SPEC, backend, upstream)
    for name in ("discriminator", "generator", "info"):
        assert torch.isfinite(got.outputs[name]), f"{name} = {got.outputs[name]}"
    for name, grad in got.grads.items():
        assert torch.isfinite(grad).all(), f"grad {name} has non-finite values"
    assert_matches_oracle(got, oracle(extreme, SPEC, upstream), dtype, extreme, upstream)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("where", ["real", "fake", "cat", "bern", "mu", "logvar", "code"])
def test_nan_inputs_come_out_nan(backend, where):
    """A NaN input makes NaN exactly the losses, stats and gradient elements that depend on
    it, as in the float64 reference: every output and every gradient (real and fake
    logits' included) is compared with the reference element by element, NaN for NaN."""
    case = random_case(SPEC, 40, seed=5)
    real, fake, q = case.real.clone(), case.fake.clone(), case.q.clone()
    codes = case.codes
    nan = float("nan")
    if where == "real":
        real[7] = nan
    elif where == "fake":
        fake[7] = nan
    elif where == "cat":
        q[7, 2] = nan
    elif where == "bern":
        q[7, 7] = nan
    elif where == "mu":
        q[7, 9] = nan
    elif where == "logvar":
        q[7, 11] = nan
    else:
        cont = codes.continuous.clone()
        cont[7, 1] = nan
        codes = codes._replace(continuous=cont)
    poisoned = case._replace(real=real, fake=fake, q=q, codes=codes)
    upstream = random_upstream(5)
    got = evaluate(poisoned, SPEC, backend, upstream)
    assert math.isnan(got.outputs["discriminator"].item()), "a NaN input must not produce a plausible loss"
    assert_matches_oracle(got, oracle(poisoned, SPEC, upstream), torch.float32, poisoned, upstream)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_bit_identical_from_run_to_run(dtype):
    case = random_case(WIDE, 20_000, dtype=dtype, seed=6)
    runs = [evaluate(case, WIDE, "cpu", random_upstream(6)) for _ in range(3)]
    for other in runs[1:]:
        for name in runs[0].outputs:
            assert torch.equal(runs[0].outputs[name], other.outputs[name]) or \
                torch.isnan(runs[0].outputs[name]).all(), name
        for name in runs[0].grads:
            assert torch.equal(runs[0].grads[name], other.grads[name]), name


def test_independent_of_thread_count():
    case = random_case(SPEC, 50_000, seed=7)   # many chunks, so threads split the rows
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(evaluate(case, SPEC, "cpu", random_upstream(7)))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for name in results[0].outputs:
            assert torch.equal(results[0].outputs[name], other.outputs[name]) or \
                torch.isnan(other.outputs[name]).all(), name
        for name in results[0].grads:
            assert torch.equal(results[0].grads[name], other.grads[name]), name


def test_callers_tensors_are_never_written():
    case = random_case(SPEC, 300, seed=8)
    leaves = [t.clone().requires_grad_() for t in case[:3]]
    snapshot = [t.detach().clone() for t in leaves] + [t.clone() for t in case.codes[:3]]
    out = fastmi.infogan_loss(*leaves, case.codes, SPEC, backend="cpu")
    (out.discriminator + out.generator).backward()
    after = [t.detach() for t in leaves] + list(case.codes[:3])
    for before, now in zip(snapshot, after):
        assert torch.equal(before, now)


def test_stats_are_detached_and_consistent_with_losses():
    case = random_case(SPEC, 500, seed=9)
    out = fastmi.infogan_loss(case.real.requires_grad_(), case.fake.requires_grad_(),
                              case.q.requires_grad_(), case.codes, SPEC, backend="cpu")
    stats = out.stats
    assert not any(t.requires_grad for t in stats)
    assert stats.mi_categorical.shape == (2,)
    # info = sum_k (log K - mi_k) + (nb log 2 - mi_bern) + (n H - mi_cont) when lambdas are 1
    info = sum(math.log(k) for k in SPEC.categorical) - stats.mi_categorical.sum() + \
        SPEC.bernoulli_entropy - stats.mi_bernoulli + SPEC.continuous_entropy - stats.mi_continuous
    assert info.item() == pytest.approx(out.info.item(), rel=1e-5)
    # the JSD bound of a discriminator that cannot tell real from fake logits of 0 is 0
    zeros = fastmi.infogan_loss(torch.zeros(4), torch.zeros(500), case.q, case.codes, SPEC, backend="cpu")
    assert zeros.stats.jsd_bound.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("fn, lo, hi, log_spaced", [
    ("exp", -87.3, 88.7, False),       # normal results; the clamps take over outside
    ("exp_nonpos", -87.0, 0.0, False),  # below, it stays at exp(-87): see the next test
    ("log", -87.0, 88.0, True),        # x = e^-87 .. e^88
    ("log1p", -80.0, 0.0, True),       # y = e^-80 .. 1, its one use: y = exp(-|x|)
])
def test_vector_math_is_accurate_to_two_ulp(fn, lo, hi, log_spaced):
    """The CPU kernel's float polynomials, run as the kernel runs them (8 lanes at a
    time), against float64 torch on 2M points of their domain."""
    ext = cpu.extension()
    grid = torch.linspace(lo, hi, 2_000_001, dtype=torch.float64)
    x = (grid.exp() if log_spaced else grid).float()
    want = getattr(torch, fn.replace("_nonpos", ""))(x.double())
    got = ext.vector_math(fn, x).double()
    rel = (got - want).abs() / want.abs().clamp_min(torch.finfo(torch.float32).tiny)
    assert rel.max() <= 2 ** -22, f"{fn}: max relative error {rel.max():.3g} at x = {x[rel.argmax()]:.9g}"


@pytest.mark.parametrize("fn, x, want, atol", [
    ("exp", [math.nan, -math.inf, -200.0, 200.0, math.inf, 0.0], [math.nan, 0.0, 0.0, math.inf, math.inf, 1.0], 0.0),
    # clamped at exp(-87) = 1.6e-38, never a subnormal
    ("exp_nonpos", [math.nan, -math.inf, -88.0, -0.0], [math.nan, 0.0, 0.0, 1.0], 2e-38),
    ("log", [math.nan, math.inf, 1.0], [math.nan, math.inf, 0.0], 0.0),
    ("log1p", [math.nan, 0.0, 1e-30, 1.0], [math.nan, 0.0, 1e-30, math.log(2.0)], 0.0),
])
def test_vector_math_special_values(fn, x, want, atol):
    ext = cpu.extension()
    got = ext.vector_math(fn, torch.tensor(x, dtype=torch.float32))
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32), equal_nan=True, rtol=1e-6, atol=atol)
