"""The shared runtime's small rules: the backend registry's errors and the Triton fast
launcher's version gate."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import fastmi
from fastmi.runtime import triton_launch
from helpers import MNIST, random_case


def test_fast_launcher_runs_only_on_tested_triton_releases():
    assert triton_launch.fast_launch_supported("3.6.0")
    assert triton_launch.fast_launch_supported("3.6.1+git1234")
    for version in ("3.5.1", "3.7.0", "4.0.0", "2.3.1"):
        assert not triton_launch.fast_launch_supported(version), version


@pytest.mark.parametrize("env,expected", [("1", True), ("0", False)])
def test_fast_launcher_default_follows_the_installed_triton_and_the_switch(env, expected):
    pytest.importorskip("triton")
    code = ("import triton, fastmi.runtime.triton_launch as t; "
            "print(t.FAST_LAUNCH, t.fast_launch_supported(triton.__version__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "FASTMI_TRITON_FAST_LAUNCH": env}).stdout.split()
    supported = out[1] == "True"
    assert out[0] == str(expected and supported)


def test_auto_on_a_device_nothing_serves_offers_no_choice():
    """On meta tensors no backend runs: the error says so instead of offering 'auto',
    the choice that just failed."""
    case = random_case(MNIST, 4)
    meta = [t.to("meta") for t in case[:3]]
    codes = fastmi.Codes(*(t.to("meta") for t in case.codes[:3]), spec=MNIST)
    with pytest.raises(ValueError) as err:
        fastmi.infogan_loss(*meta, codes, MNIST)
    message = str(err.value)
    assert "cannot serve meta tensors here" in message and "No backend serves meta tensors" in message
    assert "'auto'" not in message


def test_explicit_fused_backend_inside_torch_func_raises_and_auto_switches():
    case = random_case(MNIST, 8, seed=1)

    def loss(q, backend):
        return fastmi.infogan_loss(case.real, case.fake, q, case.codes, MNIST, backend=backend).info

    with pytest.raises(RuntimeError, match="backend 'cpu' does not support torch.func transforms"):
        torch.func.grad(loss)(case.q, "cpu")
    got = torch.func.grad(loss)(case.q, "auto")
    want = torch.func.grad(loss)(case.q, "reference")
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    batched = torch.func.vmap(lambda q: loss(q, "auto"))(torch.stack([case.q, 2 * case.q]))
    torch.testing.assert_close(batched, torch.stack([loss(case.q, "cpu"), loss(2 * case.q, "cpu")]))
