"""critic_bound reads the contract as written: shared/design/critic_vectors.json holds
float64 cases (every estimator, N > B with an offset, symmetric, normalize, bias) with the
loss, mi, accuracy and the gradients of x, y, scale and bias, computed from
CRITIC_BOUNDS.md by an implementation written apart from the project. A copy ships in
tests/data so the suite runs from a clean clone."""

import json
import math
from pathlib import Path

import pytest
import torch

import fastmi
from fastmi.critic import tiled

VECTORS = json.loads((Path(__file__).parent / "data" / "critic_vectors.json").read_text())["cases"]
OPTIONS = ("offset", "symmetric", "normalize", "clip")


@pytest.fixture(params=["reference", "tiled", "tiled-one-row"])
def backend(request, monkeypatch):
    if request.param == "tiled-one-row":  # a tile per row: every merge across tiles runs
        monkeypatch.setattr(tiled, "TILE_SCORES", 1)
        return "tiled"
    return request.param


@pytest.mark.parametrize("index", range(len(VECTORS)), ids=[f"{i}-{c['estimator']}" for i, c in enumerate(VECTORS)])
def test_contract_vector(backend, index):
    case = VECTORS[index]
    f64 = torch.float64
    x = torch.tensor(case["inputs"]["x"], dtype=f64, requires_grad=True)
    y = torch.tensor(case["inputs"]["y"], dtype=f64, requires_grad=True)
    scale = torch.tensor(case["scale"], dtype=f64, requires_grad=True)
    bias = None if case.get("bias") is None else torch.tensor(case["bias"], dtype=f64, requires_grad=True)
    options = {name: case[name] for name in OPTIONS if name in case}
    out = fastmi.critic_bound(x, y, estimator=case["estimator"], scale=scale, bias=bias, backend=backend, **options)
    out.loss.backward()

    expected = case["expected"]
    for name in ("loss", "mi", "accuracy"):
        assert getattr(out, name).item() == pytest.approx(expected[name], rel=1e-12, abs=1e-12), name
    if "jsd_bound" in expected:
        assert out.jsd_bound.item() == pytest.approx(expected["jsd_bound"], rel=1e-12, abs=1e-12)
    else:
        assert math.isnan(out.jsd_bound.item()), "jsd_bound is NaN but for estimator='js'"
    for name, leaf in (("grad_x", x), ("grad_y", y)):
        torch.testing.assert_close(leaf.grad, torch.tensor(expected[name], dtype=f64), rtol=1e-11, atol=1e-13)
    assert scale.grad.item() == pytest.approx(expected["grad_scale"], rel=1e-11, abs=1e-13)
    if bias is None:
        assert expected["grad_bias"] is None
    else:
        assert bias.grad.item() == pytest.approx(expected["grad_bias"], rel=1e-11, abs=1e-13)
