"""LatentSpec layout, entropies and sampling; Codes.to_generator_input."""

import math

import pytest
import torch

import fastmi


def test_layout_and_entropies():
    spec = fastmi.LatentSpec(categorical=(10, 3), bernoulli=2, continuous=4, continuous_prior="normal")
    assert spec.q_width == 10 + 3 + 2 + 4 * 2
    assert spec.code_width == 10 + 3 + 2 + 4
    assert spec.categorical_entropy == pytest.approx((math.log(10), math.log(3)))
    assert spec.bernoulli_entropy == pytest.approx(2 * math.log(2))
    assert spec.continuous_entropy == pytest.approx(4 * 0.5 * math.log(2 * math.pi * math.e))
    assert spec.entropy == pytest.approx(sum(spec.categorical_entropy) + spec.bernoulli_entropy
                                         + spec.continuous_entropy)
    fixed = fastmi.LatentSpec(categorical=(10,), continuous=2, std=0.5)
    assert fixed.q_width == 12 and fixed.fixed_logvar == pytest.approx(2 * math.log(0.5))
    assert fastmi.LatentSpec(continuous=1).continuous_entropy == pytest.approx(math.log(2))


def test_spec_is_hashable_and_equal_by_value():
    a = fastmi.LatentSpec(categorical=[10], continuous=2)
    b = fastmi.LatentSpec(categorical=(10,), continuous=2)
    assert a == b and hash(a) == hash(b) and a.categorical == (10,)


def test_sample_shapes_dtypes_and_ranges():
    spec = fastmi.LatentSpec(categorical=(10, 3), bernoulli=2, continuous=3)
    g = torch.Generator().manual_seed(0)
    codes = spec.sample(5000, generator=g)
    assert codes.categorical.shape == (5000, 2) and codes.categorical.dtype == torch.int64
    assert codes.categorical[:, 0].min() == 0 and codes.categorical[:, 0].max() == 9
    assert codes.categorical[:, 1].max() == 2
    assert set(codes.bernoulli.unique().tolist()) == {0.0, 1.0}
    assert codes.continuous.dtype == torch.float32
    assert -1 <= codes.continuous.min() < -0.99 and 0.99 < codes.continuous.max() <= 1
    again = spec.sample(5000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(codes.categorical, again.categorical) and torch.equal(codes.continuous, again.continuous)
    normal = fastmi.LatentSpec(continuous=2, categorical=(), continuous_prior="normal").sample(20000, generator=g)
    assert normal.continuous.std().item() == pytest.approx(1.0, abs=0.03)
    assert normal.categorical.shape == (20000, 0)
    with pytest.raises(ValueError, match="batch must be an int >= 1, got 0"):
        spec.sample(0)


def test_to_generator_input_one_hots_the_indices():
    spec = fastmi.LatentSpec(categorical=(4, 2), bernoulli=1, continuous=2)
    codes = fastmi.Codes(torch.tensor([[3, 1], [0, 0]]), torch.tensor([[1.0], [0.0]]),
                         torch.tensor([[0.5, -0.5], [0.25, 1.0]]))
    x = codes.to_generator_input(spec)
    assert x.shape == (2, spec.code_width)
    assert x[0].tolist() == [0, 0, 0, 1, 0, 1, 1, 0.5, -0.5]
    assert x[1].tolist() == [1, 0, 0, 0, 1, 0, 0, 0.25, 1.0]
    sampled = spec.sample(3)
    assert sampled.to_generator_input().shape == (3, spec.code_width)   # carries its spec
    with pytest.raises(ValueError, match="the class counts are unknown"):
        codes.to_generator_input()
