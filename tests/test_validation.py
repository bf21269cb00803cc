"""The validation gate of backend="auto" on CUDA tensors (fastmi/runtime/validation.py)
and ``python -m fastmi.validate``, on CPU with a fake GPU identity."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

from fastmi.infogan.backends import REGISTRY
from fastmi.runtime import gpu_rule, validation

FAKE = {"gpu": "Fake GPU 80GB", "capability": "9.0", "driver": "13.0", "torch": torch.__version__, "cuda": "13.0",
        "triton": "3.6.0", "fastmi": "0.1.0"}


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    """A fake GPU whose identity is FAKE, a fresh cache folder, fresh verdicts; the
    registry sees triton and the reference as available on it."""
    monkeypatch.setenv("FASTMI_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(validation, "gpu_identity", lambda index=None: dict(FAKE))
    monkeypatch.setattr(validation, "COMMITTED", {})
    monkeypatch.setattr(gpu_rule, "current_device_name", lambda: FAKE["gpu"])
    monkeypatch.setattr(REGISTRY, "unavailable_reason",
                        lambda name, device_type: None if name in ("triton", "reference") else "off")
    validation.forget()
    yield
    validation.forget()


def test_auto_keeps_the_reference_on_an_unvalidated_gpu_and_says_how_once(fake_gpu):
    with pytest.warns(RuntimeWarning, match=r"not been validated on this GPU \(Fake GPU 80GB.*"
                                            r"Run `python -m fastmi.validate`"):
        assert REGISTRY._auto("cuda") == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: a second call is silent
        assert REGISTRY._auto("cuda") == "reference"


def test_a_recorded_pass_lets_auto_use_the_fused_backend(fake_gpu):
    outcome = validation.Outcome("infogan", "triton: oracle", "PASS", "ok", 0.1)
    path = validation.write_record(dict(FAKE), [outcome])
    assert path.exists() and path.parent.name == "validated" and "Fake-GPU-80GB" in path.name
    validation.forget()
    assert REGISTRY._auto("cuda") == "triton"


def test_a_record_holds_only_for_its_driver_and_versions(fake_gpu):
    validation.write_record(dict(FAKE, driver="12.8"), [])
    validation.forget()
    with pytest.warns(RuntimeWarning):
        assert REGISTRY._auto("cuda") == "reference"


def test_committed_results_cover_a_gpu_model_and_triton_release(fake_gpu, monkeypatch):
    assert not validation.covered_by_committed(FAKE, {"Fake GPU 80GB": {"triton": "3.5", "source": "x"}})
    monkeypatch.setattr(validation, "COMMITTED", {"Fake GPU 80GB": {"triton": "3.6", "source": "x"}})
    assert validation.covered_by_committed(FAKE)
    assert REGISTRY._auto("cuda") == "triton"


def test_run_checks_reports_every_outcome():
    def boom():
        raise AssertionError("wrong")

    def skip():
        raise validation.Skip("not here")

    seen = []
    outcomes = validation.run_checks([validation.Check("op", "a", lambda: "fine"), validation.Check("op", "b", boom),
                                      validation.Check("op", "c", skip), validation.Check("op", "d", lambda: None)],
                                     report=seen.append)
    assert [o.status for o in outcomes] == ["PASS", "FAIL", "SKIP", "PASS"] and seen == outcomes
    assert outcomes[0].detail == "fine" and "AssertionError: wrong" in outcomes[1].detail
    assert validation.run_checks([validation.Check("op", "late", lambda: "x")], budget=-1.0)[0].status == "SKIP"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_validate_without_a_gpu_says_so_and_exits_2():
    result = subprocess.run([sys.executable, "-m", "fastmi.validate"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "fastmi.validate: no CUDA device: " in result.stderr
    assert "| - | CUDA device | FAIL | no CUDA device: " in result.stdout


def test_validate_help_names_the_exit_codes():
    result = subprocess.run([sys.executable, "-m", "fastmi.validate", "--help"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "0 when every check passed, 1 when one failed, 2 without a CUDA device" in \
        result.stdout
