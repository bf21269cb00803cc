"""Validation and normalization of the loss inputs, shared by every backend.

After :func:`prepare_inputs` every backend may assume:

- ``real`` [Br] and ``fake`` [Bf] (or None), ``q`` [Bf, W]: contiguous, one floating
  dtype (the promotion of the three, as torch would promote them), one device;
- ``categorical`` [Bf, m] int32/int64, ``bernoulli`` [Bf, nb] and ``continuous``
  [Bf, n] in the compute dtype (float64 when the logits are, else float32); each is
  None when the spec has no codes of its kind;
- Br >= 1, Bf >= 1, W == spec.q_width.

The values of the codes (categorical index in [0, K), bernoulli in {0, 1}) are checked
where that needs no host sync: inside the CPU kernel, and by :func:`check_code_values`
for the reference on CPU tensors. GPU kernels never read out of bounds and turn an
invalid code into a NaN loss.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .problem import Problem

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
INDEX_DTYPES = (torch.int32, torch.int64)
BERNOULLI_DTYPES = FLOAT_DTYPES + (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class LossInputs(NamedTuple):
    real: Optional[torch.Tensor]
    fake: Optional[torch.Tensor]
    q: torch.Tensor
    categorical: Optional[torch.Tensor]
    bernoulli: Optional[torch.Tensor]
    continuous: Optional[torch.Tensor]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _shape(t: torch.Tensor) -> tuple:
    return tuple(t.shape)


# The checks below run on every call, so they read cheap attributes (dtype, ndim,
# shape, device) and convert or copy only when an input needs it.

def _logits(name: str, value, rows: Optional[int]) -> Optional[torch.Tensor]:
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"infogan_loss: {name} must be a tensor or None, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"infogan_loss: {name} must be float32, bfloat16, float16 or float64, got {value.dtype}")
    shape = value.shape
    if not (value.ndim == 1 or (value.ndim == 2 and shape[1] == 1)):
        raise ValueError(f"infogan_loss: {name} must have shape [B] or [B, 1], got {_shape(value)}")
    if shape[0] == 0:
        raise ValueError(f"infogan_loss: {name} is an empty batch, shape {_shape(value)}; expected B >= 1")
    if rows is not None and shape[0] != rows:
        raise ValueError(f"infogan_loss: {name} has {shape[0]} rows but q has {rows}; "
                         f"expected shape [{rows}] or [{rows}, 1], got {_shape(value)}")
    return value.squeeze(1) if value.ndim == 2 else value


def _codes(name: str, value, rows: int, width: int, dtypes, expected: str) -> Optional[torch.Tensor]:
    if width == 0:
        if value is not None and value.numel() != 0:
            raise ValueError(f"infogan_loss: codes.{name} must be None or empty for a spec with no "
                             f"{name} codes, got shape {_shape(value)}")
        return None
    if value is None:
        raise ValueError(f"infogan_loss: codes.{name} is None but the spec has {width} {name} codes; "
                         f"expected shape [{rows}, {width}]")
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"infogan_loss: codes.{name} must be a tensor, got {type(value).__name__}")
    if value.dtype not in dtypes:
        raise TypeError(f"infogan_loss: codes.{name} must be {expected}, got {value.dtype}")
    shape = value.shape
    if value.ndim != 2 or shape[0] != rows or shape[1] != width:
        if value.ndim == 1 and width == 1 and shape[0] == rows:
            return value.unsqueeze(1)
        raise ValueError(f"infogan_loss: codes.{name} must have shape [{rows}, {width}], got {_shape(value)}")
    return value


def prepare_inputs(real_logits, fake_logits, q, codes, problem: Problem) -> LossInputs:
    """Checks shapes, dtypes and devices, and returns the normalized :class:`LossInputs`."""
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"infogan_loss: q must be a tensor, got {type(q).__name__}")
    if q.dtype not in FLOAT_DTYPES:
        raise TypeError(f"infogan_loss: q must be float32, bfloat16, float16 or float64, got {q.dtype}")
    width = problem.q_width
    q_shape = q.shape
    if q.ndim != 2 or q_shape[1] != width:
        raise ValueError(f"infogan_loss: q must have shape [B, {width}] (the spec's q_width), got {_shape(q)}")
    rows = q_shape[0]
    if rows == 0:
        raise ValueError(f"infogan_loss: q is an empty batch, shape {_shape(q)}; expected B >= 1")
    real = _logits("real_logits", real_logits, None)
    fake = _logits("fake_logits", fake_logits, rows)

    if not isinstance(codes, tuple) or not hasattr(codes, "categorical"):
        raise TypeError(f"infogan_loss: codes must be a fastmi.Codes, got {type(codes).__name__}")
    categorical = _codes("categorical", codes.categorical, rows, problem.n_categorical, INDEX_DTYPES,
                         "int32 or int64")
    bernoulli = _codes("bernoulli", codes.bernoulli, rows, problem.n_bernoulli, BERNOULLI_DTYPES,
                       "a float, int or bool tensor")
    continuous = _codes("continuous", codes.continuous, rows, problem.n_continuous, FLOAT_DTYPES,
                        "float32, bfloat16, float16 or float64")

    device = q.device
    for name, t in (("real_logits", real), ("fake_logits", fake), ("codes.categorical", categorical),
                    ("codes.bernoulli", bernoulli), ("codes.continuous", continuous)):
        if t is not None and t.device != device:
            raise ValueError(f"infogan_loss: {name} is on {t.device} but q is on {device}; "
                             f"expected every input on one device")

    dtype = q.dtype
    for t in (real, fake):
        if t is not None and t.dtype != dtype:
            dtype = torch.promote_types(dtype, t.dtype)
    acc = torch.float64 if dtype == torch.float64 else torch.float32

    def cast(t, to):
        if t is None:
            return None
        if t.dtype != to:
            t = t.to(to)
        return t.contiguous()

    def code(t):  # no gradient flows to the codes, whichever backend runs
        return None if t is None else t.detach() if t.requires_grad else t

    if bernoulli is not None and bernoulli.dtype == torch.float64 and acc != torch.float64 \
            and bernoulli.device.type == "cpu":
        _check_bernoulli(bernoulli)  # before rounding: 1 + 1e-10 would round to a valid 1.0
    bernoulli, continuous = code(bernoulli), code(continuous)
    return LossInputs(
        real=cast(real, dtype),
        fake=cast(fake, dtype),
        q=cast(q, dtype),
        categorical=None if categorical is None else categorical.contiguous(),
        bernoulli=cast(bernoulli, acc),
        continuous=cast(continuous, acc),
    )


def check_code_values(inputs: LossInputs, problem: Problem) -> None:
    """Raises a ValueError naming the first row and code whose value is invalid.

    Costs a host sync, so only CPU tensors are checked here."""
    cat = inputs.categorical
    if cat is not None and cat.device.type == "cpu":
        sizes = torch.tensor(problem.cat_sizes, dtype=cat.dtype)
        bad = (cat < 0) | (cat >= sizes)
        if bool(bad.any()):
            row, code = (int(i) for i in bad.nonzero()[0])
            raise ValueError(f"infogan_loss: codes.categorical[{row}, {code}] = {int(cat[row, code])} is "
                             f"outside [0, {problem.cat_sizes[code]}) (row {row}, categorical code {code})")
    bern = inputs.bernoulli
    if bern is not None and bern.device.type == "cpu":
        _check_bernoulli(bern)


def _check_bernoulli(bern: torch.Tensor) -> None:
    """Raises a ValueError naming the first bernoulli value that is not 0 or 1 (a host sync)."""
    bad = (bern != 0) & (bern != 1)
    if bool(bad.any()):
        row, code = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"infogan_loss: codes.bernoulli[{row}, {code}] = {float(bern[row, code])!r} is "
                         f"not 0 or 1 (row {row}, bernoulli code {code})")
