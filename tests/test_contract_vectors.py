"""The project reads the contract as written: shared/design/contract_vectors.json holds
cases computed in float64 straight from ARCHITECTURE.md by an independent
implementation. A copy ships in tests/data so the suite runs from a clean clone."""

import json
import math
from pathlib import Path

import pytest
import torch

import fastmi
from helpers import emulate_cuda_backend

VECTORS = json.loads((Path(__file__).parent / "data" / "contract_vectors.json").read_text())["cases"]


def _spec(case):
    s = case["spec"]
    return fastmi.LatentSpec(categorical=tuple(s["categorical"]), bernoulli=s["bernoulli"],
                             continuous=s["continuous"], std=s["std"], continuous_prior=s["continuous_prior"])


@pytest.mark.parametrize("backend", ["reference", "cpu", "cuda-emulated"])
@pytest.mark.parametrize("index", range(len(VECTORS)))
def test_contract_vector(backend, index, monkeypatch):
    """``cuda-emulated``: the CUDA kernels' CPU emulation (tests/helpers.py) on CPU tensors."""
    if backend == "cuda-emulated":
        emulate_cuda_backend(monkeypatch)
        backend = "cuda"
    check_contract_vector(backend, index)


def check_contract_vector(backend: str, index: int) -> None:
    """Case ``index`` through ``backend``: losses, stats and gradients to float64 precision
    (tests/test_triton_interpreter.py runs it on the Triton kernels too)."""
    case = VECTORS[index]
    spec = _spec(case)
    inputs = case["inputs"]
    f64 = torch.float64
    real = torch.tensor(inputs["real_logits"], dtype=f64, requires_grad=True)
    fake = torch.tensor(inputs["fake_logits"], dtype=f64, requires_grad=True)
    q = torch.tensor(inputs["q"], dtype=f64, requires_grad=True)
    rows = q.shape[0]
    codes = fastmi.Codes(torch.tensor(inputs["categorical"], dtype=torch.int64).reshape(rows, -1),
                         torch.tensor(inputs["bernoulli"], dtype=f64).reshape(rows, -1),
                         torch.tensor(inputs["continuous"], dtype=f64).reshape(rows, -1))
    out = fastmi.infogan_loss(real, fake, q, codes, spec, backend=backend, **case["options"])

    expected = case["outputs"]
    for name in ("discriminator", "generator", "info"):
        assert getattr(out, name).item() == pytest.approx(expected[name], rel=1e-12, abs=1e-12), name
    for name in ("jsd_bound", "mi_bernoulli", "mi_continuous"):
        got = getattr(out.stats, name).item()
        if expected[name] is None:
            assert math.isnan(got), f"{name} should be NaN (term absent), got {got}"
        else:
            assert got == pytest.approx(expected[name], rel=1e-12, abs=1e-12), name
    assert out.stats.mi_categorical.tolist() == pytest.approx(expected["mi_categorical"], rel=1e-12, abs=1e-12)

    up = case["upstream"]
    torch.autograd.backward([out.discriminator, out.generator, out.info],
                            [torch.tensor(up[k], dtype=f64) for k in ("discriminator", "generator", "info")])
    grads = case["gradients"]
    for name, leaf in (("real_logits", real), ("fake_logits", fake), ("q", q)):
        torch.testing.assert_close(leaf.grad, torch.tensor(grads[name], dtype=f64), rtol=1e-11, atol=1e-13)
