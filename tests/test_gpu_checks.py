"""The GPU checks (fastmi/infogan/checks.py, fastmi/critic/checks.py) as pytest tests:
each check is one test.

On a machine with a CUDA GPU they run against the triton and cuda backends, as
``python -m fastmi.validate --standard --full`` does. Without one (CI), the same check
code runs against the fused CPU backend (critic_bound: the tiled backend) on CPU tensors,
and the checks that need CUDA (streams, graphs, sync debug mode, memory) skip with that
reason; the Triton interpreter's runs are in tests/test_triton_interpreter.py and
tests/test_critic_triton_interpreter.py.
"""

from __future__ import annotations

import pytest
import torch

from fastmi.critic import checks as critic_checks
from fastmi.infogan import checks
from fastmi.runtime.validation import run_checks

if torch.cuda.is_available():
    from fastmi.validate import all_checks, available_gpu_backends
    CHECKS = all_checks(available_gpu_backends(), "cuda", quick=False, full=True)
else:  # critic_bound's checks run against its pure-PyTorch tiled backend, at CPU sizes
    CHECKS = checks.checks(["cpu"], "cpu", quick=True) + critic_checks.checks(["tiled"], "cpu")


@pytest.mark.parametrize("check", CHECKS, ids=[c.name for c in CHECKS])
def test_gpu_check(check):
    (outcome,) = run_checks([check])
    if outcome.status == "SKIP":
        pytest.skip(outcome.detail)
    assert outcome.status == "PASS", outcome.detail
