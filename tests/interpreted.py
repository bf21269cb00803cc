"""Running a test module again under the Triton interpreter, shared by the interpreted
suites of every op (tests/test_triton_interpreter.py, tests/test_critic_triton_interpreter.py).

triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when fastmi.kernels is
imported, so interpreted tests cannot share a process with the rest of the suite: the
normal suite runs the module in a child pytest with TRITON_INTERPRET=1 and fails with the
child's report when an interpreted test fails. The parent never sets the variable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def run_interpreted(test_file: str, what: str, timeout: int = 900) -> None:
    """Runs ``test_file``'s tests in a child pytest with TRITON_INTERPRET=1; fails with its
    report (``what`` names the suite) unless they pass."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    start = time.perf_counter()
    here = os.path.abspath(test_file)
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=5", here],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=os.path.dirname(os.path.dirname(here)),
    )
    elapsed = time.perf_counter() - start
    report = child.stdout[-6000:] + child.stderr[-3000:]
    assert child.returncode == 0, f"{what} failed (rc={child.returncode}):\n{report}"
    assert " passed" in child.stdout, report
    print(f"{what}: {elapsed:.0f} s\n{child.stdout[-1500:]}")


def check_cpu_tensors_need_the_interpreter(backend_module, registry, call_on_cpu) -> None:
    """Without TRITON_INTERPRET a Triton backend serves CUDA tensors only, says why not CPU,
    and ``call_on_cpu()`` (the op with backend="triton" on CPU tensors) raises a ValueError
    naming triton."""
    assert backend_module.devices() == ("cuda",)
    reason = registry.unavailable_reason("triton", "cpu")
    assert reason is not None and "cuda" in reason
    import torch

    if not torch.cuda.is_available():
        assert "TRITON_INTERPRET" in backend_module.is_available()
        with pytest.raises(ValueError, match="triton"):
            call_on_cpu()
