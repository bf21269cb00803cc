"""Launch machinery shared by the Triton backends of every op.

- :func:`interpreting`: whether triton runs kernels in its CPU interpreter
  (``TRITON_INTERPRET=1``, set before triton is imported), which is how CI runs them;
  :func:`triton_devices` and :func:`triton_unavailable_reason`: a Triton backend's
  ``devices()`` and ``is_available()``.
- :func:`split_float`: a Python float as two fp32 kernel arguments (hi, lo).
- :func:`launch`: one kernel launch, through ``wrap_triton`` while torch.compile traces,
  else through a cached CompiledKernel runner (see below).
- :class:`DeviceGuard`: makes the tensors' CUDA device current for the launch.
- :func:`set_poison_outputs` / :func:`new_output`: tests fill every fresh output with
  NaN, so that an element a kernel forgets to write fails a comparison.
"""

from __future__ import annotations

import os
import struct

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor
from torch._subclasses.functional_tensor import FunctionalTensor


def interpreting() -> bool:
    """Whether triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_devices() -> tuple:
    """The device types a Triton backend serves: CUDA, and CPU tensors under the interpreter."""
    return ("cuda", "cpu") if interpreting() else ("cuda",)


def triton_unavailable_reason():
    """None when Triton kernels can run here, else why not (a backend's ``is_available``)."""
    if interpreting():
        return None
    import torch as _torch

    if not _torch.cuda.is_available():
        return ("no CUDA device is visible (set TRITON_INTERPRET=1 before importing triton to run the "
                "Triton kernels on CPU tensors in the interpreter)")
    try:
        import triton

        triton.runtime.driver.active.get_current_target()
    except Exception as exc:  # a broken driver or an unsupported GPU
        return f"triton has no usable GPU driver ({type(exc).__name__}: {exc})"
    return None


def split_float(x: float) -> tuple:
    """(fp32(x), fp32(x - fp32(x))): a Python float as two fp32 kernel arguments, from
    which a float64 kernel restores ~48 mantissa bits (kernels/common/numerics.py
    ``scalar_arg``)."""
    hi = struct.unpack("f", struct.pack("f", x))[0]
    return hi, struct.unpack("f", struct.pack("f", x - hi))[0]


def tracing(t: Tensor) -> bool:
    """True while torch.compile traces an op (fake or functional tensors)."""
    return isinstance(t, (FakeTensor, FunctionalTensor))


# Launch through a cached CompiledKernel runner instead of JITFunction.run, whose argument
# binding and specialization cost tens of microseconds per launch on the host. A runner
# is reused only for launches that JITFunction.run would specialize identically: same
# kernel, device, constexprs (the caller keys its runners by shape and problem, hence the
# same ints), same tensor dtypes, and every pointer 16-byte aligned (triton's one pointer
# specialization), as it was when the runner's kernel was compiled. Anything else takes
# the ordinary path. FASTMI_TRITON_FAST_LAUNCH=0 turns it off.
#
# The runner's calling convention is a Triton internal (whether constexprs are passed
# changed across releases), so the fast path runs only on the releases it is tested with
# (tests/test_triton_aot.py checks the convention; tests/test_runtime.py this choice).
TESTED_TRITON = ("3.6",)


def fast_launch_supported(version: str) -> bool:
    """Whether the cached-runner launch may be used with triton ``version``."""
    return ".".join(version.split(".")[:2]) in TESTED_TRITON


def _fast_launch_default() -> bool:
    if os.environ.get("FASTMI_TRITON_FAST_LAUNCH", "1") != "1":
        return False
    try:
        import triton
    except ImportError:
        return False
    return fast_launch_supported(triton.__version__)


FAST_LAUNCH = _fast_launch_default()


def launch(kernel, grid: tuple, args: tuple, constexprs: dict, *, num_warps: int, runners: dict,
           traced: bool, num_stages: int = None) -> None:
    """``kernel[grid](*args, **constexprs)``. ``runners`` caches compiled launchers: the
    caller keeps one dict per (shape, problem), which fixes the grid of each kernel.
    ``num_stages`` (software-pipelining depth of a kernel's fixed-trip loops) is triton's
    default when None."""
    options = dict(num_warps=num_warps) if num_stages is None else dict(num_warps=num_warps, num_stages=num_stages)
    if traced:  # torch.compile: inductor sees the kernel through wrap_triton
        torch.library.wrap_triton(kernel)[grid](*args, **constexprs, **options)
        return
    if not FAST_LAUNCH or interpreting():
        kernel[grid](*args, **constexprs, **options)
        return
    tensors = [a for a in args if isinstance(a, Tensor)]
    aligned = all(t.data_ptr() % 16 == 0 for t in tensors)
    key = (kernel, tensors[0].get_device(), id(constexprs), *(t.dtype for t in tensors))
    runner = runners.get(key) if aligned else None
    if runner is not None:
        runner(*args, *constexprs.values())  # constexprs are the kernels' last parameters, in order
        return
    compiled = kernel[grid](*args, **constexprs, **options)
    if aligned and compiled is not None:
        runners[key] = compiled[grid]


class DeviceGuard:
    """Makes ``tensor``'s CUDA device current for the launch (triton launches on the
    current device); a CPU tensor (the interpreter) changes nothing."""

    __slots__ = ("index", "previous")

    def __init__(self, tensor: Tensor):
        self.index = tensor.get_device()
        self.previous = -1

    def __enter__(self):
        if self.index >= 0:
            current = torch.cuda.current_device()
            if current != self.index:
                self.previous = current
                torch.cuda.set_device(self.index)

    def __exit__(self, *exc):
        if self.previous >= 0:
            torch.cuda.set_device(self.previous)


_poison = False


def set_poison_outputs(on: bool) -> None:
    """Tests: fill every output with NaN before the launch, so an element a kernel forgets
    to write fails a comparison instead of passing by luck (costs a fill per output)."""
    global _poison
    _poison = bool(on)


def new_output(t: Tensor) -> Tensor:
    """A freshly allocated output tensor, NaN-filled while poisoning is on."""
    return t.fill_(float("nan")) if _poison else t
