"""The static description of one ``critic_bound`` call, shared by every backend.

A :class:`CriticProblem` holds the validated options and, for each row problem the call
solves, the :class:`RowProblem` that a backend receives. Both are hashable, so
torch.compile specializes on them and eager calls build them once per distinct call (an
LRU cache).

A :class:`RowProblem` is the scalar arguments of a backend, in the op schemas' order
(fastmi/critic/ops.py):

    offset         row i's positive is column i + offset
    compute        bitmask over bounds.PARTIALS: the partials the forward computes
    differentiate  bitmask, a subset of compute: the partials the loss is differentiated
                   through; the backward forms the gradient of these only
    clip           tau of neg_lse_clip (smile)
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

from . import bounds


class RowProblem(NamedTuple):
    offset: int
    compute: int
    differentiate: int
    clip: float


class CriticProblem(NamedTuple):
    estimator: str
    symmetric: bool
    normalize: bool
    clip: float
    offset: int
    differentiate: frozenset           # names of the partials the loss keeps attached
    rows: RowProblem                   # one process: x against y at offset (symmetric: with the column LSEs)
    group_rows: RowProblem             # group=: local x against every rank's y (offset set per rank)
    group_columns: Optional[RowProblem]  # group= and symmetric: local y against every rank's x


def _float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"critic_bound: {name} must be a float, got {type(value).__name__} {value!r}")
    return float(value)


# typed: True == 1 and hash alike, and a cached symmetric=True must not answer symmetric=1
@functools.lru_cache(maxsize=256, typed=True)
def make_problem(estimator="infonce", symmetric=False, normalize=False, clip=5.0, offset=0) -> CriticProblem:
    """Validates the options that do not depend on the tensors and builds the problem."""
    if not isinstance(estimator, str) or estimator not in bounds.ESTIMATORS:
        raise ValueError(f"critic_bound: estimator must be one of {bounds.ESTIMATORS}, got {estimator!r}")
    for name, flag in (("symmetric", symmetric), ("normalize", normalize)):
        if not isinstance(flag, bool):
            raise TypeError(f"critic_bound: {name} must be a bool, got {type(flag).__name__} {flag!r}")
    if symmetric and estimator != "infonce":
        raise ValueError(f"critic_bound: symmetric=True is defined for estimator='infonce' (CLIP's loss) only, "
                         f"got estimator={estimator!r}")
    clip = _float("clip", clip)
    if not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"critic_bound: clip must be a finite positive float (smile's tau), got {clip!r}")
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"critic_bound: offset must be an int, got {type(offset).__name__} {offset!r}")
    if offset < 0:
        raise ValueError(f"critic_bound: offset must be >= 0 (row i's positive is y[i + offset]), got {offset}")

    compute, differentiate = bounds.needs(estimator, symmetric)
    rows = RowProblem(offset, bounds.mask_of(compute), bounds.mask_of(differentiate), clip)
    # Across processes a column's LSE runs over every rank's rows: each rank solves the
    # transposed row problem instead (its y rows against all x), whose row LSEs are them.
    local = {"col_lse_sum"}
    group_rows = RowProblem(0, bounds.mask_of(compute - local), bounds.mask_of(differentiate - local), clip)
    group_columns = (RowProblem(0, bounds.mask_of({"row_lse_sum"}), bounds.mask_of({"row_lse_sum"}), clip)
                     if symmetric else None)
    return CriticProblem(estimator, symmetric, normalize, clip, offset, differentiate, rows, group_rows,
                         group_columns)
