"""fastmi.infogan.cuda and the GPU auto rule, on a machine without a GPU: the reasons
it gives, the missing-nvcc path, the custom ops' fake implementations, and the rule of
fastmi.runtime.gpu_rule with fake availability and fake measurements."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import fastmi
from fastmi.infogan import cuda
from fastmi.infogan.backends import REGISTRY
from fastmi.runtime import cuda_toolkit, gpu_rule, validation
from fastmi.infogan.problem import make_problem
from helpers import random_case

MNIST = fastmi.LatentSpec(categorical=(10,), continuous=2)
RICH = fastmi.LatentSpec(categorical=(3, 7), bernoulli=2, continuous=3)


def available(*names):
    """An unavailable_reason for the rule: only ``names`` run."""
    return lambda name: None if name in names else f"{name} is switched off in this test"


# ---- availability --------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_is_available_names_the_missing_piece():
    reason = cuda.is_available()
    assert isinstance(reason, str) and reason.startswith("the fused CUDA kernels are unavailable: ")
    if torch.version.cuda is None:
        assert f"this torch ({torch.__version__}) is built without CUDA" in reason
    else:
        assert "no CUDA device is visible" in reason
    with pytest.raises(RuntimeError, match="the fused CUDA kernels are unavailable"):
        cuda.extension()


def test_cuda_backend_on_cpu_tensors_lists_the_valid_choices():
    case = random_case(MNIST, 4)
    with pytest.raises(ValueError) as err:
        fastmi.infogan_loss(case.real, case.fake, case.q, case.codes, MNIST, backend="cuda")
    message = str(err.value)
    assert "backend 'cuda' cannot serve cpu tensors here" in message
    assert "it runs on cuda, not on cpu tensors" in message
    assert "Valid choices for cpu tensors: ['auto', 'reference'" in message and "'cuda'" not in message.split(
        "Valid choices")[1]


def test_missing_nvcc_gives_a_clear_error(monkeypatch, tmp_path):
    """A GPU but no compiler: the reason names nvcc and how to point at it, and nothing is built."""
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"nvcc \(the CUDA compiler\) was not found: CUDA_HOME=.* has no bin/nvcc"):
        cuda_toolkit.find_cuda_home()
    monkeypatch.setattr(cuda, "device_reason", lambda: None)  # pretend a GPU is there
    monkeypatch.setattr(cuda, "_extension", None)

    def no_build(*args, **kwargs):
        raise AssertionError("the extension must not be built without nvcc")

    monkeypatch.setattr(cuda, "build", no_build)
    reason = cuda.is_available()
    assert reason.startswith("the fused CUDA kernels are unavailable: nvcc (the CUDA compiler) was not found")
    assert "backend='triton' needs no compiler" in reason or "CUDA_HOME" in reason


def test_nvcc_on_path_without_cuda_home(monkeypatch, tmp_path):
    """No CUDA_HOME: the nvcc on PATH is followed to its toolkit (a symlink, as a
    packaged toolkit often installs it); an empty PATH falls back to /usr/local/cuda."""
    toolkit = tmp_path / "toolkit"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "include").mkdir()
    (toolkit / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (toolkit / "bin" / "nvcc").chmod(0o755)
    (toolkit / "include" / "cuda_runtime.h").write_text("")
    wrappers = tmp_path / "wrappers"
    wrappers.mkdir()
    os.symlink(toolkit / "bin" / "nvcc", wrappers / "nvcc")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(wrappers))
    assert cuda_toolkit.find_cuda_home() == toolkit
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    if os.path.exists("/usr/local/cuda/bin/nvcc") and os.path.exists("/usr/local/cuda/include/cuda_runtime.h"):
        assert str(cuda_toolkit.find_cuda_home()) == "/usr/local/cuda"
    else:
        with pytest.raises(RuntimeError, match="nvcc .* was not found"):
            cuda_toolkit.find_cuda_home()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_build_command_reports_the_reason():
    result = subprocess.run([sys.executable, "-m", "fastmi.build", "--cuda"], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 1
    assert "fastmi.build: cuda: FAILED: the fused CUDA kernels are unavailable" in result.stderr
    assert "fastmi.build: cpu: ready" in result.stdout


# ---- the custom ops ----------------------------------------------------------------------------

def test_custom_ops_are_registered_with_fake_implementations():
    """torch.compile traces fastmi::cuda_forward / _backward through their fake
    implementations: the shapes and dtypes of the outputs, on meta tensors."""
    problem = make_problem(RICH)
    case = random_case(RICH, 6)
    meta = [None if t is None else t.to("meta") for t in (case.real, case.fake, case.q)]
    codes = [t.to("meta") for t in (case.codes.categorical, case.codes.bernoulli, case.codes.continuous)]
    d, g, i, stats = torch.ops.fastmi.cuda_forward(*meta, *codes, *problem.kernel_args())
    assert d.shape == g.shape == i.shape == () and stats.shape == (3 + 2,)
    assert {t.dtype for t in (d, g, i, stats)} == {torch.float32}
    up = torch.ones((), device="meta")
    gr, gf, gq = torch.ops.fastmi.cuda_backward(up, None, up, *meta, *codes, *problem.kernel_args())
    assert gr.shape == (6,) and gf.shape == (6,) and gq.shape == (6, RICH.q_width)
    gr, gf, gq = torch.ops.fastmi.cuda_backward(up, up, up, None, None, meta[2], *codes, *problem.kernel_args())
    assert gr.shape == (0,) and gf.shape == (0,) and gq.shape == (6, RICH.q_width)


# ---- the auto rule ----------------------------------------------------------------------------

FAKE_GPU = "Fake GPU 80GB"
TABLE = {FAKE_GPU: [
    {"batch": 64, "width": 14, "dtype": "float32", "ms": {"triton": 0.060, "cuda": 0.030, "reference": 0.500}},
    {"batch": 1048576, "width": 14, "dtype": "float32", "ms": {"triton": 0.100, "cuda": 0.120, "reference": 3.0}},
    {"batch": 4096, "width": 1004, "dtype": "float32", "ms": {"triton": 0.200, "cuda": 0.150}},
]}


def test_rule_default_order_without_measurements():
    for table in ({}, {"Another GPU": TABLE[FAKE_GPU]}):
        kw = dict(device_name=FAKE_GPU, table=table)
        assert gpu_rule.choose_gpu_backend("infogan", available("triton", "cuda", "reference"), **kw) == "triton"
        assert gpu_rule.choose_gpu_backend("infogan", available("cuda", "reference"), **kw) == "cuda"
        assert gpu_rule.choose_gpu_backend("infogan", available("reference"), **kw) == "reference"
        assert gpu_rule.choose_gpu_backend("infogan", available(), **kw) == "reference"


def test_rule_follows_the_measurements():
    kw = dict(device_name=FAKE_GPU, table=TABLE)
    everything = available("triton", "cuda", "reference")
    # geometric means of time / best = triton (2 * 1 * 4/3)^(1/3) = 1.39, cuda (1 * 1.2 * 1)^(1/3) = 1.06
    assert gpu_rule.ranking(TABLE[FAKE_GPU]) == ["cuda", "triton", "reference"]
    assert gpu_rule.choose_gpu_backend("infogan", everything, **kw) == "cuda"
    # the winner unavailable (e.g. no nvcc): the next ranked one
    assert gpu_rule.choose_gpu_backend("infogan", available("triton", "reference"), **kw) == "triton"
    assert gpu_rule.choose_gpu_backend("infogan", available("reference"), **kw) == "reference"
    # a backend never measured ranks after the measured ones
    assert gpu_rule.ranking(TABLE[FAKE_GPU][2:]) == ["cuda", "triton", "reference"]


def test_registry_uses_the_rule_for_cuda_tensors(monkeypatch):
    """backend='auto' on CUDA tensors goes through choose_gpu_backend with the registry's
    own availability: here triton is made unavailable, so the rule falls to cuda."""
    monkeypatch.setattr(gpu_rule, "current_device_name", lambda: FAKE_GPU)
    monkeypatch.setattr(gpu_rule, "MEASURED", {"infogan": {}})
    monkeypatch.setattr(validation, "gpu_trusted", lambda: True)  # tests/test_validation.py: the gate
    monkeypatch.setattr(REGISTRY, "unavailable_reason",
                        lambda name, device_type: None if name in ("cuda", "reference") else "off")
    assert REGISTRY._auto("cuda") == "cuda"
    monkeypatch.setattr(REGISTRY, "unavailable_reason",
                        lambda name, device_type: None if name == "reference" else "off")
    assert REGISTRY._auto("cuda") == "reference"
