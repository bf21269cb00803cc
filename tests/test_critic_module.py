"""fastmi.CriticBound: critic_bound with a learnable log scale (and bias), initialised
as CLIP (1 / 0.07, capped at 100) and SigLIP (10, bias -10) do."""

import math

import pytest
import torch

import fastmi
from critic_helpers import assert_close, random_pair


@pytest.mark.parametrize("estimator,scale,bias,cap", [
    ("infonce", 1 / 0.07, None, 100.0),
    ("siglip", 10.0, -10.0, math.inf),
    ("dv", 1.0, None, math.inf),
    ("smile", 1.0, None, math.inf),
])
def test_defaults(estimator, scale, bias, cap):
    module = fastmi.CriticBound(estimator)
    assert module.scale.item() == pytest.approx(scale)
    assert isinstance(module.log_scale, torch.nn.Parameter)
    assert (module.bias is None) if bias is None else (module.bias.item() == bias)
    assert module.max_scale == cap
    names = {name for name, _ in module.named_parameters()}
    assert names == ({"log_scale"} if bias is None else {"log_scale", "bias"})


@pytest.mark.parametrize("estimator", ["infonce", "siglip", "js"])
def test_forward_is_critic_bound(estimator):
    module = fastmi.CriticBound(estimator, init_scale=3.0, init_bias=0.5, normalize=True,
                                symmetric=estimator == "infonce")
    x, y = random_pair(8, 8, 6, seed=1)
    out = module(x, y)
    expected = fastmi.critic_bound(x, y, estimator=estimator, scale=3.0, bias=0.5, normalize=True,
                                   symmetric=estimator == "infonce")
    for name in ("loss", "mi", "accuracy", "jsd_bound"):
        assert_close(getattr(out, name), getattr(expected, name), name)
    out.loss.backward()
    scale_t = torch.tensor(3.0, requires_grad=True)
    fastmi.critic_bound(x, y, estimator=estimator, scale=scale_t, bias=0.5, normalize=True,
                        symmetric=estimator == "infonce").loss.backward()
    # d loss / d log_scale = s d loss / d s: the log parameterisation, by autograd
    assert_close(module.log_scale.grad, 3.0 * scale_t.grad, "log_scale", floor=1.0)


def test_the_cap_stops_the_scale_and_its_gradient():
    module = fastmi.CriticBound("infonce", init_scale=150.0, normalize=True)
    assert module.scale.item() == pytest.approx(100.0)
    x, y = random_pair(8, 8, 6, seed=2)
    module(x, y).loss.backward()
    assert module.log_scale.grad.item() == 0.0
    uncapped = fastmi.CriticBound("infonce", init_scale=150.0, max_scale=math.inf, normalize=True)
    assert uncapped.scale.item() == pytest.approx(150.0)


def test_fixed_scale_is_a_buffer():
    module = fastmi.CriticBound("dv", init_scale=2.0, learn_scale=False)
    assert list(module.parameters()) == []
    assert "log_scale" in module.state_dict()
    x, y = random_pair(6, 9, 4, offset=3, seed=3)
    assert_close(module(x, y, offset=3).loss, fastmi.critic_bound(x, y, estimator="dv", scale=2.0, offset=3).loss)


def test_state_dict_round_trip_and_repr():
    module = fastmi.CriticBound("siglip", backend="tiled")
    with torch.no_grad():
        module.log_scale.fill_(1.5)
        module.bias.fill_(-3.0)
    copy = fastmi.CriticBound("siglip", backend="tiled")
    copy.load_state_dict(module.state_dict())
    assert copy.scale.item() == pytest.approx(math.exp(1.5)) and copy.bias.item() == -3.0
    assert "estimator='siglip'" in repr(copy) and "backend='tiled'" in repr(copy)
