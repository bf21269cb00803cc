"""Validation and normalization of the inputs of ``critic_bound``, shared by every backend.

After :func:`prepare_inputs` every backend may assume:

- ``x`` [B, d] and ``y`` [N, d]: contiguous, one floating dtype (the promotion of the
  two, as torch would promote them), one device, 1 <= B <= N, N >= 2, d >= 1;
  with ``normalize`` their rows have unit L2 norm and they are in the compute dtype;
- ``scale`` and ``bias``: 0-d tensors in the compute dtype (float64 for float64 inputs,
  else float32) on that device, ``bias`` None when absent; a Python float arrives as a
  tensor that does not require grad;
- 0 <= offset <= N - B; symmetric only with N = B.

Values are checked where that needs no host sync: a scale or bias tensor must be finite
(and the scale positive), and with ``normalize`` no row may have norm 0, on CPU tensors
and outside torch.compile and torch.func transforms (which cannot read a value). On CUDA
tensors nothing is read back: a non-positive scale gives what the formulas give, and a
zero row makes the loss NaN (0 / 0).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ..runtime.registry import transforms_active
from .problem import CriticProblem

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
DTYPE_NAMES = "float32, bfloat16, float16 or float64"


class CriticInputs(NamedTuple):
    x: Tensor
    y: Tensor
    scale: Tensor
    bias: Optional[Tensor]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _shape(t: Tensor) -> tuple:
    return tuple(t.shape)


def _can_read_values(t: Tensor) -> bool:
    """Whether reading a value of ``t`` is free: a CPU tensor, outside torch.compile and
    torch.func transforms."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling() and not transforms_active()


def _embedding(name: str, value) -> Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"critic_bound: {name} must be a tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"critic_bound: {name} must be {DTYPE_NAMES}, got {value.dtype}")
    return value


def _checked_value(name: str, value: float, positive: bool) -> float:
    if not math.isfinite(value) or (positive and value <= 0):
        expected = "finite and > 0" if positive else "finite"
        raise ValueError(f"critic_bound: {name} must be {expected}, got {value!r}")
    return value


def _scalar(name: str, value, like: Tensor, acc: torch.dtype, positive: bool) -> Tensor:
    """A float or 0-d tensor as a 0-d tensor in ``acc`` on ``like``'s device."""
    if isinstance(value, torch.Tensor):
        if value.ndim != 0:
            raise ValueError(f"critic_bound: {name} must be a float or a 0-d tensor, got a tensor of shape "
                             f"{_shape(value)}")
        if not value.is_floating_point():
            raise TypeError(f"critic_bound: {name} must be a floating tensor, got {value.dtype}")
        if value.device != like.device:
            raise ValueError(f"critic_bound: {name} is on {value.device} but x is on {like.device}; "
                             f"expected every tensor on one device")
        if _can_read_values(value):  # free on CPU; a sync on a GPU
            _checked_value(name, float(value.detach()), positive)
        return value if value.dtype == acc else value.to(acc)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"critic_bound: {name} must be a float or a 0-d tensor, got {type(value).__name__}")
    return like.new_full((), _checked_value(name, float(value), positive), dtype=acc)


def _unit_rows(name: str, t: Tensor, acc: torch.dtype) -> Tensor:
    """``t / ||t||`` row-wise in ``acc`` (autograd gives the chain rule)."""
    with torch.autocast(t.device.type, enabled=False):
        t = t.to(acc)
        norms = torch.linalg.vector_norm(t, dim=1, keepdim=True)
        if _can_read_values(t):
            zero = norms.squeeze(1) == 0
            if bool(zero.any()):
                row = int(zero.nonzero()[0, 0])
                raise ValueError(f"critic_bound: normalize=True needs rows of nonzero norm, but {name}[{row}] "
                                 f"has norm 0")
        return t / norms


def prepare_inputs(x, y, scale, bias, problem: CriticProblem, group=None) -> CriticInputs:
    """Checks shapes, dtypes, devices and values; returns the normalized :class:`CriticInputs`."""
    x = _embedding("x", x)
    y = _embedding("y", y)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"critic_bound: x must have shape [B, d] with d >= 1, got {_shape(x)}")
    rows, dim = x.shape
    if rows == 0:
        raise ValueError(f"critic_bound: x is an empty batch, shape {_shape(x)}; expected B >= 1")
    if group is not None:
        if y.ndim != 2 or y.shape[0] != rows or y.shape[1] != dim:
            raise ValueError(f"critic_bound: with group=, y must have the shape of x, [B, d] = [{rows}, {dim}] "
                             f"(each rank's own pairs), got {_shape(y)}")
        if problem.offset != 0:
            raise ValueError(f"critic_bound: with group=, the offset is rank * B (set by the group); "
                             f"pass offset=0, got {problem.offset}")
    else:
        if y.ndim != 2 or y.shape[1] != dim or y.shape[0] < rows:
            raise ValueError(f"critic_bound: y must have shape [N, {dim}] with N >= B = {rows}, got {_shape(y)}")
        cols = y.shape[0]
        if cols < 2:
            raise ValueError(f"critic_bound: y must have shape [N, {dim}] with N >= 2 (every estimator needs a "
                             f"negative pair), got {_shape(y)}")
        if problem.offset > cols - rows:
            raise ValueError(f"critic_bound: offset must lie in [0, N - B] = [0, {cols - rows}] (row i's positive "
                             f"is y[i + offset]), got {problem.offset}")
        if problem.symmetric and cols != rows:
            raise ValueError(f"critic_bound: symmetric=True needs N = B (one square batch), got x {_shape(x)} "
                             f"and y {_shape(y)}")
    if y.device != x.device:
        raise ValueError(f"critic_bound: y is on {y.device} but x is on {x.device}; expected every tensor on "
                         f"one device")

    dtype = x.dtype if x.dtype == y.dtype else torch.promote_types(x.dtype, y.dtype)
    acc = compute_dtype(dtype)
    scale = _scalar("scale", scale, x, acc, positive=True)
    bias = None if bias is None else _scalar("bias", bias, x, acc, positive=False)
    if problem.normalize:
        x, y = _unit_rows("x", x, acc), _unit_rows("y", y, acc)
    else:
        x = x if x.dtype == dtype else x.to(dtype)
        y = y if y.dtype == dtype else y.to(dtype)
    return CriticInputs(x.contiguous(), y.contiguous(), scale, bias)


def check_group(group) -> None:
    """``group`` must be a process group of an initialized torch.distributed."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("critic_bound: group= needs an initialized torch.distributed "
                         "(call torch.distributed.init_process_group first)")
    if not isinstance(group, dist.ProcessGroup):
        raise TypeError(f"critic_bound: group must be a torch.distributed ProcessGroup or None, "
                        f"got {type(group).__name__}")
