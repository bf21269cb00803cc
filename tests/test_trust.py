"""What a user trusts the InfoGAN loss with, on every backend: correct second-order
gradients (gradient penalties), no gradient for an input that a loss does not use,
whatever its values, none for the codes, infinite inputs at their limits, and the real
logit's gradient tail in float32.

Each test is a function of the backend, so that tests/test_triton_interpreter.py runs
them on the interpreted Triton kernels too; ``cuda`` runs the CUDA kernels' CPU
emulation behind the public API.
"""

from __future__ import annotations

import math

import pytest
import torch

import fastmi
from helpers import assert_close, emulate_cuda_backend, random_case

SPEC = fastmi.LatentSpec(categorical=(4, 3), bernoulli=2, continuous=2, continuous_prior="normal")
BACKENDS = ["reference", "cpu", "cuda"]


@pytest.fixture
def backend(request, monkeypatch):
    """The backend's name; "cuda" stands for the CUDA kernels' CPU emulation on CPU tensors."""
    name = request.param
    if name == "cuda":
        emulate_cuda_backend(monkeypatch)
    return name


def _codes64(case):
    return case.codes._replace(bernoulli=case.codes.bernoulli.double(), continuous=case.codes.continuous.double())


# ---- second-order gradients ---------------------------------------------------------------------

def r1_weight_grad(backend: str) -> torch.Tensor:
    """An R1-style penalty: D's weight gradient of D_loss + 10 |dD_loss/dx|^2, which
    differentiates the loss's backward once more."""
    torch.manual_seed(0)
    D = torch.nn.Linear(5, 1).double()
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    case = random_case(SPEC, 4, dtype=torch.float64, seed=1)
    out = fastmi.infogan_loss(D(x), case.fake, case.q, _codes64(case), SPEC, backend=backend)
    (gx,) = torch.autograd.grad(out.discriminator, x, create_graph=True)
    (out.discriminator + 10 * gx.pow(2).sum()).backward()
    return D.weight.grad


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_gradient_penalty_matches_the_reference(backend):
    """The issue's probe: with backend="cpu" the penalty's weight gradient was silently wrong."""
    torch.testing.assert_close(r1_weight_grad(backend), r1_weight_grad("reference"), rtol=1e-12, atol=0)


def gradgradcheck(backend: str) -> None:
    case = random_case(SPEC, 5, real_batch=4, dtype=torch.float64, seed=2)
    codes = _codes64(case)

    def fn(real, fake, q):
        out = fastmi.infogan_loss(real, fake, q, codes, SPEC, backend=backend, real_label=0.9)
        return out.discriminator, out.generator, out.info

    inputs = tuple(t.detach().clone().requires_grad_() for t in case[:3])
    assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_gradgradcheck_float64(backend):
    gradgradcheck(backend)


# ---- gradients that must be absent --------------------------------------------------------------

def unused_inputs_get_no_gradient(backend: str) -> None:
    """A NaN real logit does not reach the generator loss's gradient, a NaN fake logit
    not the info loss's: those losses do not use them, so they get no gradient (None, as
    the reference), whatever the values; the gradients they do get match the reference."""
    case = random_case(SPEC, 12, seed=3)
    real, fake = case.real.clone(), case.fake.clone()
    real[5], fake[7] = math.nan, math.nan
    results = {}
    for name in (backend, "reference"):
        leaves = [t.detach().clone().requires_grad_() for t in (real, fake, case.q)]
        out = fastmi.infogan_loss(*leaves, case.codes, SPEC, backend=name)
        results[name] = (torch.autograd.grad(out.generator, leaves, allow_unused=True, retain_graph=True),
                         torch.autograd.grad(out.info, leaves, allow_unused=True))
    (gen_real, gen_fake, gen_q), (info_real, info_fake, info_q) = results[backend]
    assert gen_real is None and info_real is None and info_fake is None, "an unused input got a gradient"
    want_gen, want_info = results["reference"]
    assert want_gen[0] is None and want_info[0] is None and want_info[1] is None
    for got, want, what in ((gen_fake, want_gen[1], "d generator / d fake"), (gen_q, want_gen[2], "d generator / d q"),
                            (info_q, want_info[2], "d info / d q")):
        assert_close(got, want, torch.float32, what)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_unused_inputs_get_no_gradient(backend):
    unused_inputs_get_no_gradient(backend)


def no_gradient_to_the_codes(backend: str) -> None:
    case = random_case(SPEC, 10, seed=4)
    bern = case.codes.bernoulli.clone().requires_grad_()
    cont = case.codes.continuous.clone().requires_grad_()
    codes = case.codes._replace(bernoulli=bern, continuous=cont)
    q = case.q.clone().requires_grad_()
    out = fastmi.infogan_loss(case.real, case.fake, q, codes, SPEC, backend=backend)
    (out.discriminator + out.info).backward()
    assert q.grad is not None and bern.grad is None and cont.grad is None


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_no_gradient_flows_to_the_codes(backend):
    no_gradient_to_the_codes(backend)


# ---- infinite inputs ------------------------------------------------------------------------------

INF = math.inf
ONE_CODE = fastmi.LatentSpec(categorical=(3,), bernoulli=1, continuous=0)


def _infinite_case():
    """Rows of a Cat(3) + 1 bernoulli spec, each with infinities where the contract takes a
    limit: [3 logits | bernoulli logit], codes (class, bernoulli)."""
    rows = [
        ([0.5, INF, -1.0, INF], (0, 1)),      # +inf at a non-target class: e = +inf; bernoulli +inf, code 1: 0
        ([0.5, INF, -1.0, -INF], (1, 0)),     # +inf at the target alone: e = log 1 = 0; bernoulli -inf, code 0: 0
        ([INF, INF, 2.0, 0.3], (1, 1)),       # two +inf, one the target: e = log 2
        ([-INF, 0.2, 1.0, -0.7], (0, 0)),     # the target at -inf: e = +inf
        ([-INF, 0.2, 1.0, 1.5], (2, 1)),      # a -inf logit first in the row: it weighs 0
        ([1.0, -2.0, 0.5, -0.25], (2, 0)),    # finite
    ]
    q = torch.tensor([r for r, _ in rows], dtype=torch.float32)
    cat = torch.tensor([[c] for _, (c, _) in rows])
    bern = torch.tensor([[float(b)] for _, (_, b) in rows])
    real = torch.tensor([INF, 3.0, -1.0, 0.5, 2.0, -0.5])         # +inf with t = 1: costs 0
    fake = torch.tensor([-INF, 1.0, 0.25, -2.0, 0.0, 1.5])          # -inf: softplus 0, generator +inf
    return real, fake, q, fastmi.Codes(cat, bern, None, spec=ONE_CODE)


def infinite_inputs_at_their_limits(backend: str) -> None:
    real, fake, q, codes = _infinite_case()
    got, want = ({}, {})
    for name, store in ((backend, got), ("reference", want)):
        leaves = [t.detach().clone().requires_grad_() for t in (real, fake, q)]
        out = fastmi.infogan_loss(*leaves, codes, ONE_CODE, backend=name)
        grads = torch.autograd.grad(out.discriminator, leaves)
        store.update(discriminator=out.discriminator.detach(), info=out.info.detach(),
                     mi_categorical=out.stats.mi_categorical, mi_bernoulli=out.stats.mi_bernoulli,
                     grad_real=grads[0], grad_fake=grads[1], grad_q=grads[2])
    # the contract's values, by hand: the D term of real row 0 is 0, the categorical NLLs
    # are [inf, 0, log 2, inf, lse - x, lse - x], so the info loss is +inf
    assert want["info"] == INF and got["info"] == INF
    assert math.isfinite(want["mi_bernoulli"]) and math.isfinite(got["mi_bernoulli"])
    for name in want:
        torch.testing.assert_close(got[name].double(), want[name].double(), rtol=1e-5, atol=1e-7, equal_nan=False,
                                   msg=lambda m: f"{name}: {m}")
    # the gradient at the limit: uniform over the +inf logits of each row, minus the one-hot
    g = got["grad_q"][:, :3] * len(real)   # d info / d logits = (softmax - onehot) / B
    torch.testing.assert_close(g[0], torch.tensor([-1.0, 1.0, 0.0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(g[2], torch.tensor([0.5, -0.5, 0.0]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_infinite_inputs_at_their_limits(backend):
    infinite_inputs_at_their_limits(backend)


def real_gradient_keeps_its_tail(backend: str) -> None:
    """d/dr of softplus(-r) / B is -sigmoid(-r) / B, about -exp(-r) / B: tiny for large r
    but not 0. Computed as sigmoid(r) - 1 it cancels to exactly 0 in float32 past r ~ 17;
    each element must match float64 to float32's relative precision."""
    real = torch.linspace(-30.0, 80.0, 221)
    case = random_case(SPEC, 8, seed=5)
    leaf = real.clone().requires_grad_()
    out = fastmi.infogan_loss(leaf, case.fake, case.q, case.codes, SPEC, backend=backend)
    (grad,) = torch.autograd.grad(out.discriminator, leaf)
    want = -torch.sigmoid(-real.double()) / len(real)
    assert (grad != 0).all(), "the gradient's tail cancelled to 0"
    torch.testing.assert_close(grad.double(), want, rtol=4e-7, atol=0)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_real_logit_gradient_keeps_its_tail(backend):
    real_gradient_keeps_its_tail(backend)
