"""The static description of one loss call, shared by every backend.

A :class:`Problem` folds a :class:`~fastmi.infogan.spec.LatentSpec` and the loss options into
the plain values the kernels take. It is hashable, so torch.compile specializes on it
and the eager path builds it once per distinct call (an LRU cache).

The kernels' scalar arguments, in this order (see :meth:`Problem.kernel_args`):

    cat_sizes (int[]), n_bernoulli, n_continuous, learned_std, fixed_logvar,
    prior_entropy, lambda_cat, lambda_cont, minimax, real_label, sum_reduction

Every fused backend's forward op returns ``(discriminator, generator, info, stats)``
where ``stats`` is the vector ``[jsd_bound, mi_bernoulli, mi_continuous,
mi_categorical_1..m]`` (its indices: ``STAT_*`` in kernels/infogan/config.py).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

from .spec import LatentSpec

GENERATOR_LOSSES = ("nonsaturating", "minimax")
# The kernels' scalar arguments, in op-schema order (fastmi/infogan/ops.py PROBLEM_SCHEMA).
KERNEL_ARG_NAMES = ("cat_sizes", "n_bernoulli", "n_continuous", "learned_std", "fixed_logvar", "prior_entropy",
                    "lambda_cat", "lambda_cont", "minimax", "real_label", "sum_reduction")
REDUCTIONS = ("mean", "sum")


class Problem(NamedTuple):
    cat_sizes: tuple
    n_bernoulli: int
    n_continuous: int
    learned_std: bool
    fixed_logvar: float
    prior_entropy: float
    lambda_cat: float
    lambda_cont: float
    minimax: bool
    real_label: float
    sum_reduction: bool
    q_width: int          # W, precomputed: the hot path reads it on every call
    n_categorical: int
    op_args: tuple        # kernel_args(), precomputed for the same reason

    def kernel_args(self) -> tuple:
        """The scalar arguments of every backend op, in schema order."""
        return self.op_args

    @classmethod
    def from_kernel_args(cls, args) -> "Problem":
        """The Problem whose :meth:`kernel_args` are ``args`` (an op's backward sees only those)."""
        fields = dict(zip(KERNEL_ARG_NAMES, args))
        fields["cat_sizes"] = tuple(fields["cat_sizes"])
        return _problem(fields)


def _finite_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"infogan_loss: {name} must be a float, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"infogan_loss: {name} must be finite, got {value!r}")
    return value


@functools.lru_cache(maxsize=256)
def make_problem(spec: LatentSpec, lambda_cat=1.0, lambda_cont=1.0, generator_loss="nonsaturating",
                 real_label=1.0, reduction="mean") -> Problem:
    """Validates the options and folds them with ``spec`` into a :class:`Problem`."""
    if not isinstance(spec, LatentSpec):
        raise TypeError(f"infogan_loss: spec must be a fastmi.LatentSpec, got {type(spec).__name__}")
    lambda_cat = _finite_float("lambda_cat", lambda_cat)
    lambda_cont = _finite_float("lambda_cont", lambda_cont)
    real_label = _finite_float("real_label", real_label)
    if not 0.0 <= real_label <= 1.0:
        raise ValueError(f"infogan_loss: real_label must lie in [0, 1], got {real_label!r}")
    if generator_loss not in GENERATOR_LOSSES:
        raise ValueError(f"infogan_loss: generator_loss must be one of {GENERATOR_LOSSES}, got {generator_loss!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"infogan_loss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return _problem(dict(
        cat_sizes=spec.categorical,
        n_bernoulli=spec.bernoulli,
        n_continuous=spec.continuous,
        learned_std=spec.learned_std,
        fixed_logvar=spec.fixed_logvar,
        prior_entropy=spec.prior_entropy,
        lambda_cat=lambda_cat,
        lambda_cont=lambda_cont,
        minimax=generator_loss == "minimax",
        real_label=real_label,
        sum_reduction=reduction == "sum",
    ))


def _problem(fields: dict) -> Problem:
    """A Problem from its kernel arguments, with the derived fields filled in."""
    width = sum(fields["cat_sizes"]) + fields["n_bernoulli"] + fields["n_continuous"] * (
        2 if fields["learned_std"] else 1)
    return Problem(**fields, q_width=width, n_categorical=len(fields["cat_sizes"]),
                   op_args=tuple(fields[name] for name in KERNEL_ARG_NAMES))
