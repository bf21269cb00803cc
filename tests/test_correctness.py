"""The fused CPU backend against the float64 reference: losses, stats and all gradients.

Random upstream grads on all three losses; fresh random inputs per case with confident
logits (softmax near 1) on half the rows; per-dtype tolerances from tests/helpers.py.
"""

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastmi
from helpers import MNIST, RICH, check_backend, evaluate, oracle, random_case, random_upstream

WIDE = fastmi.LatentSpec(categorical=(1000,), continuous=4)
BATCHES = [1, 2, 63, 64, 65, 4097]
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("spec", [MNIST, RICH, WIDE], ids=["mnist", "rich", "wide"])
def test_float32_matches_float64_reference(spec, batch):
    check_backend("cpu", spec, batch, torch.float32, seed=batch, confident=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batch", [1, 65, 4097])
def test_every_dtype(dtype, batch):
    check_backend("cpu", RICH, batch, dtype, seed=7, confident=True)
    check_backend("cpu", WIDE, batch, dtype, seed=8)


OPTIONS = [
    dict(generator_loss="minimax"),
    dict(reduction="sum"),
    dict(real_label=0.9, lambda_cat=0.5, lambda_cont=2.0),
    dict(generator_loss="minimax", reduction="sum", real_label=0.0, lambda_cat=0.0),
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_options(options):
    check_backend("cpu", RICH, 130, torch.float32, seed=3, options=options, confident=True)


@pytest.mark.parametrize("with_real,with_fake", [(False, True), (True, False), (False, False)])
def test_absent_logits(with_real, with_fake):
    check_backend("cpu", RICH, 70, torch.float32, seed=4, with_real=with_real, with_fake=with_fake)


@pytest.mark.parametrize("real_batch", [1, 33, 300])
def test_real_batch_differs_from_fake_batch(real_batch):
    check_backend("cpu", MNIST, 100, torch.float32, seed=5, real_batch=real_batch)


def test_int32_codes_and_integer_or_bool_bernoulli():
    for bern_dtype in (torch.bool, torch.int64, torch.uint8, torch.float16):
        check_backend("cpu", RICH, 77, torch.float32, seed=6, index_dtype=torch.int32, bernoulli_dtype=bern_dtype)


def test_logits_of_shape_b1_and_non_contiguous_inputs():
    case = random_case(RICH, 50, seed=9)
    upstream = random_upstream(9)
    want = oracle(case, RICH, upstream)
    wide_q = torch.randn(50, RICH.q_width * 2)
    wide_q[:, ::2] = case.q                      # q as a strided view
    cat_t = case.codes.categorical.t().contiguous().t()   # column-major codes
    odd = case._replace(real=case.real.unsqueeze(1), fake=torch.stack([case.fake, case.fake], 1)[:, :1],
                        q=wide_q[:, ::2], codes=case.codes._replace(categorical=cat_t))
    assert not odd.q.is_contiguous() and not odd.codes.categorical.is_contiguous()
    got = evaluate(odd, RICH, "cpu", upstream)
    for name in want.outputs:
        torch.testing.assert_close(got.outputs[name].double(), want.outputs[name], rtol=1e-5, atol=1e-5,
                                   equal_nan=True)
    assert got.grads["real_logits"].shape == (50, 1) and got.grads["q"].shape == (50, RICH.q_width)
    torch.testing.assert_close(got.grads["q"].double(), want.grads["q"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.grads["real_logits"].squeeze(1).double(), want.grads["real_logits"],
                               rtol=1e-5, atol=1e-6)


def test_mixed_dtypes_promote_like_torch():
    case = random_case(MNIST, 40, seed=10)
    mixed = case._replace(real=case.real.to(torch.bfloat16), fake=case.fake.to(torch.float16))
    leaves = [t.detach().clone().requires_grad_() for t in mixed[:3]]
    out = fastmi.infogan_loss(*leaves, mixed.codes, MNIST, backend="cpu")
    # bfloat16 + float16 + float32 promote to float32, as torch.promote_types says
    assert out.discriminator.dtype == torch.float32
    ref = fastmi.infogan_loss(*[t.double() for t in mixed[:3]], mixed.codes, MNIST, backend="reference")
    torch.testing.assert_close(out.discriminator.double(), ref.discriminator, rtol=1e-5, atol=1e-6)
    (out.discriminator + out.generator).backward()  # the generator loss alone does not use the real logits
    assert [t.grad.dtype for t in leaves] == [torch.bfloat16, torch.float16, torch.float32]


def test_module_form_equals_function():
    case = random_case(RICH, 20, seed=11)
    module = fastmi.InfoGANLoss(RICH, generator_loss="minimax", real_label=0.9, backend="cpu")
    a = module(case.real, case.fake, case.q, case.codes)
    b = fastmi.infogan_loss(case.real, case.fake, case.q, case.codes, RICH, generator_loss="minimax",
                            real_label=0.9, backend="cpu")
    assert torch.equal(a.discriminator, b.discriminator) and torch.equal(a.generator, b.generator)
    assert "minimax" in repr(module)


@st.composite
def specs(draw):
    categorical = tuple(draw(st.lists(st.integers(2, 1000), min_size=1, max_size=4)))
    return fastmi.LatentSpec(
        categorical=categorical,
        bernoulli=draw(st.integers(0, 3)),
        continuous=draw(st.integers(0, 5)),
        continuous_prior=draw(st.sampled_from(["uniform", "normal"])),
        std=draw(st.sampled_from(["learned", 0.3, 1.0, 2.5])),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), batch=st.sampled_from(BATCHES), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16), confident=st.booleans())
def test_random_specs(spec, batch, dtype, seed, confident):
    assume(batch * spec.q_width <= 1_500_000)  # keeps the float64 oracle quick
    check_backend("cpu", spec, batch, dtype, seed=seed, confident=confident)
