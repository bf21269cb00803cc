"""Bad input gets a clear error naming the argument, what was expected and what was given."""

import re

import pytest

import fastmi
from helpers import random_case

SPEC = fastmi.LatentSpec(categorical=(3, 5), bernoulli=2, continuous=2)
BACKENDS = ["reference", "cpu"]


def call(case, backend, spec=SPEC, **kw):
    return fastmi.infogan_loss(case.real, case.fake, case.q, case.codes, spec, backend=backend, **kw)


@pytest.fixture
def case():
    return random_case(SPEC, 8, seed=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_q_width_mismatch(case, backend):
    with pytest.raises(ValueError, match=re.escape("q must have shape [B, 14] (the spec's q_width), got (8, 13)")):
        call(case._replace(q=case.q[:, :13]), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_row_count_mismatch(case, backend):
    with pytest.raises(ValueError, match=r"fake_logits has 7 rows but q has 8"):
        call(case._replace(fake=case.fake[:7]), backend)
    with pytest.raises(ValueError, match=re.escape("codes.continuous must have shape [8, 2], got (6, 2)")):
        call(case._replace(codes=case.codes._replace(continuous=case.codes.continuous[:6])), backend)
    with pytest.raises(ValueError, match=re.escape("codes.categorical must have shape [8, 2], got (8, 1)")):
        call(case._replace(codes=case.codes._replace(categorical=case.codes.categorical[:, :1])), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_dtypes(case, backend):
    with pytest.raises(TypeError, match="q must be float32, bfloat16, float16 or float64, got torch.int64"):
        call(case._replace(q=case.q.long()), backend)
    with pytest.raises(TypeError, match="real_logits must be float32, bfloat16, float16 or float64, got torch.int32"):
        call(case._replace(real=case.real.int()), backend)
    with pytest.raises(TypeError, match="codes.categorical must be int32 or int64, got torch.float32"):
        call(case._replace(codes=case.codes._replace(categorical=case.codes.categorical.float())), backend)
    with pytest.raises(TypeError, match="codes.continuous must be float32, bfloat16, float16 or float64, got torch.int64"):
        call(case._replace(codes=case.codes._replace(continuous=case.codes.continuous.long())), backend)
    with pytest.raises(TypeError, match="codes must be a fastmi.Codes, got dict"):
        fastmi.infogan_loss(case.real, case.fake, case.q, {}, SPEC, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batches(case, backend):
    with pytest.raises(ValueError, match=re.escape("q is an empty batch, shape (0, 14); expected B >= 1")):
        call(case._replace(q=case.q[:0], fake=None), backend)
    with pytest.raises(ValueError, match=re.escape("real_logits is an empty batch, shape (0,)")):
        call(case._replace(real=case.real[:0]), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_categorical_index_out_of_range_names_row_and_code(case, backend):
    cat = case.codes.categorical.clone()
    cat[5, 1] = 5      # code 1 has K = 5
    cat[6, 0] = -1     # a later row: the first bad one is reported
    with pytest.raises(ValueError, match=re.escape("codes.categorical[5, 1] = 5 is outside [0, 5) (row 5, categorical code 1)")):
        call(case._replace(codes=case.codes._replace(categorical=cat)), backend)
    cat = case.codes.categorical.clone()
    cat[0, 0] = 3
    with pytest.raises(ValueError, match=re.escape("codes.categorical[0, 0] = 3 is outside [0, 3)")):
        call(case._replace(codes=case.codes._replace(categorical=cat)), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bernoulli_values_outside_0_1(case, backend):
    bern = case.codes.bernoulli.clone()
    bern[3, 1] = 0.5
    with pytest.raises(ValueError, match=re.escape("codes.bernoulli[3, 1] = 0.5 is not 0 or 1 (row 3, bernoulli code 1)")):
        call(case._replace(codes=case.codes._replace(bernoulli=bern)), backend)
    bern = case.codes.bernoulli.long()
    bern[2, 0] = 2
    with pytest.raises(ValueError, match=re.escape("codes.bernoulli[2, 0] = 2")):
        call(case._replace(codes=case.codes._replace(bernoulli=bern)), backend)


def test_missing_codes_of_a_kind(case):
    with pytest.raises(ValueError, match=re.escape("codes.bernoulli is None but the spec has 2 bernoulli codes; expected shape [8, 2]")):
        call(case._replace(codes=case.codes._replace(bernoulli=None)), "cpu")


def test_options_are_validated(case):
    with pytest.raises(ValueError, match="generator_loss must be one of \\('nonsaturating', 'minimax'\\), got 'wgan'"):
        call(case, "cpu", generator_loss="wgan")
    with pytest.raises(ValueError, match="reduction must be one of \\('mean', 'sum'\\), got 'none'"):
        call(case, "cpu", reduction="none")
    with pytest.raises(ValueError, match="real_label must lie in \\[0, 1\\], got 1.5"):
        call(case, "cpu", real_label=1.5)
    with pytest.raises(ValueError, match="lambda_cat must be finite, got nan"):
        call(case, "cpu", lambda_cat=float("nan"))
    with pytest.raises(TypeError, match="lambda_cont must be a float, got str '1'"):
        call(case, "cpu", lambda_cont="1")
    with pytest.raises(TypeError, match="spec must be a fastmi.LatentSpec, got tuple"):
        fastmi.infogan_loss(case.real, case.fake, case.q, case.codes, (3, 5))


def test_unknown_backend_lists_choices(case):
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'reference', 'cpu', 'triton', 'cuda'\), got 'tpu'"):
        call(case, "tpu")


def test_backend_that_cannot_serve_the_device_lists_valid_choices(case):
    with pytest.raises(ValueError, match=r"backend 'cuda' cannot serve cpu tensors here: .*Valid choices for cpu tensors: \['auto', 'reference', 'cpu'"):
        call(case, "cuda")


def test_mixed_devices(case):
    meta_q = case.q.to("meta")
    with pytest.raises(ValueError, match="real_logits is on cpu but q is on meta; expected every input on one device"):
        call(case._replace(q=meta_q), "cpu")


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(categorical=(1,)), ValueError, "every categorical class count must be an int >= 2, got (1,)"),
    (dict(categorical=(3.0,)), ValueError, "every categorical class count must be an int >= 2, got (3.0,)"),
    (dict(bernoulli=-1), ValueError, "bernoulli must be an int >= 0, got -1"),
    (dict(continuous=1.5), ValueError, "continuous must be an int >= 0, got 1.5"),
    (dict(continuous_prior="laplace"), ValueError, "continuous_prior must be 'uniform' or 'normal', got 'laplace'"),
    (dict(std="fixed"), ValueError, "std must be 'learned' or a float sigma > 0, got 'fixed'"),
    (dict(std=0.0), ValueError, "a fixed std must be a finite float > 0, got 0.0"),
    (dict(std=None), TypeError, "std must be 'learned' or a float sigma > 0, got None"),
    (dict(categorical=(), bernoulli=0, continuous=0), ValueError, "the spec holds no codes"),
    (dict(categorical=5), None, None),
])
def test_spec_validation(kwargs, error, message):
    if error is None:
        assert fastmi.LatentSpec(**kwargs).categorical == (5,)
        return
    with pytest.raises(error, match=re.escape(message)):
        fastmi.LatentSpec(**kwargs)


def test_spec_is_immutable():
    with pytest.raises(AttributeError):
        SPEC.bernoulli = 3
