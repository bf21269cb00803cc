"""Every estimator of ``fastmi.critic_bound`` as a formula of a few partial reductions of
the score matrix: written once here, for every backend (shared/design/CRITIC_BOUNDS.md).

A backend reduces the score matrix ``S[i, j] = s <x_i, y_j> + b`` of one row problem
(rows i of x, columns j of y, positive pairs P = {(i, i + o)}, negatives Neg = the rest)
to these partials, each a 0-d tensor with autograd:

    pos_sum       sum_P S
    row_lse_sum   sum_i LSE_j S[i, :]
    col_lse_sum   sum_j LSE_i S[:, j]               (symmetric InfoNCE, N = B)
    neg_lse       LSE_Neg S
    pos_softplus  sum_P softplus(-S)
    neg_softplus  sum_Neg softplus(S)
    neg_lse_clip  LSE_Neg clamp(S, -tau, tau)
    correct       #{i : argmax_j S[i, j] = i + o}   (first maximum; derivative 0)

and :func:`finish` forms, with B rows, N columns, n = B N - B negatives in this process,
n_all = W n over all W processes (n_all = n for one process; with group= the
log-sum-exps arrive combined over the processes) and lme = neg_lse - log n_all, the
log-mean-exp over the negatives:

    infonce  loss = (row_lse_sum - pos_sum) / B
             symmetric: (row_lse_sum + col_lse_sum - 2 pos_sum) / (2 B)
             mi = log N - loss
    nwj      mi = 1 + (pos_sum - B) / B - exp(lme - 1)            loss = -mi
    dv       mi = pos_sum / B - lme                               loss = -mi
    js       loss = pos_softplus / B + neg_softplus / n
             mi = 1 + pos_sum / B - exp(lme)                      (NWJ at S + 1)
             jsd_bound = log 2 - loss / 2
    smile    value = -(pos_sum / B - (neg_lse_clip - log n_all))   mi = -value
             loss = js_loss + (value - js_loss).detach(): the clipped DV value, the JS gradient
    siglip   loss = (pos_softplus + neg_softplus) / B
             mi = pos_sum / B - lme                               (the DV value)
    accuracy = correct / B; jsd_bound is NaN for every estimator but js.

NWJ's mean_Neg exp(S - 1) is exp(lme - 1), not a sum of exponentials: a float32 sum of
B N terms overflows once the scores pass 88 - log(B N) (66 at B = 65,536), the mean only
past 89, and the gradient is the same, exp(S - 1) / n on each negative.

:func:`needs` says which partials each estimator computes and which of them the loss is
differentiated through; :func:`finish` detaches every other one, so a fused backward only
ever forms the gradient of the partials in ``differentiate``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .outputs import CriticBoundOutput

PARTIALS = ("pos_sum", "row_lse_sum", "col_lse_sum", "neg_lse", "pos_softplus", "neg_softplus", "neg_lse_clip",
            "correct")
INDEX = {name: k for k, name in enumerate(PARTIALS)}
ESTIMATORS = ("infonce", "nwj", "dv", "js", "smile", "siglip")
LOG2 = math.log(2.0)


class Partials(NamedTuple):
    """The partials of one row problem: 0-d tensors, None where not computed."""

    pos_sum: Optional[Tensor] = None
    row_lse_sum: Optional[Tensor] = None
    col_lse_sum: Optional[Tensor] = None
    neg_lse: Optional[Tensor] = None
    pos_softplus: Optional[Tensor] = None
    neg_softplus: Optional[Tensor] = None
    neg_lse_clip: Optional[Tensor] = None
    correct: Optional[Tensor] = None

    @classmethod
    def from_vector(cls, vector: Tensor, mask: int) -> "Partials":
        """Views of a fused op's partials vector (``PARTIALS`` order), keeping those in ``mask``."""
        values = vector.unbind()  # one op, and one backward that stacks the grads
        return cls(*(values[k] if mask >> k & 1 else None for k in range(len(PARTIALS))))


class Counts(NamedTuple):
    """The sizes the means divide by."""

    rows: int             # B: the rows of this process
    cols: int             # N: the columns (every process's y rows, with group=)
    neg_pairs: int        # B N - B: this process's negatives (per-pair means)
    neg_pairs_all: int    # the negatives under the log-mean-exp, over every process

    @classmethod
    def single(cls, rows: int, cols: int) -> "Counts":
        neg = rows * cols - rows
        return cls(rows, cols, neg, neg)


def mask_of(names) -> int:
    """The bitmask over ``PARTIALS`` of ``names``."""
    return sum(1 << INDEX[name] for name in set(names))


def needs(estimator: str, symmetric: bool = False) -> tuple:
    """``(compute, differentiate)``: the partials an estimator uses, and those its loss is
    differentiated through (the rest feed the detached mi and accuracy)."""
    if estimator == "infonce":
        grad = ("pos_sum", "row_lse_sum") + (("col_lse_sum",) if symmetric else ())
        extra = ()
    elif estimator == "nwj":
        grad, extra = ("pos_sum", "neg_lse"), ()
    elif estimator == "dv":
        grad, extra = ("pos_sum", "neg_lse"), ()
    elif estimator == "js":
        grad, extra = ("pos_softplus", "neg_softplus"), ("pos_sum", "neg_lse")
    elif estimator == "smile":
        grad, extra = ("pos_softplus", "neg_softplus"), ("pos_sum", "neg_lse_clip")
    elif estimator == "siglip":
        grad, extra = ("pos_softplus", "neg_softplus"), ("pos_sum", "neg_lse")
    else:
        raise ValueError(f"critic_bound: estimator must be one of {ESTIMATORS}, got {estimator!r}")
    return frozenset(grad + extra + ("correct",)), frozenset(grad)


def finish(estimator: str, symmetric: bool, differentiate: frozenset, partials: Partials,
           counts: Counts) -> CriticBoundOutput:
    """The loss, mi, accuracy and jsd_bound of the module docstring from ``partials``."""
    p = Partials(*(None if v is None else (v if name in differentiate else v.detach())
                   for name, v in zip(PARTIALS, partials)))
    rows = counts.rows
    log_neg_all = math.log(counts.neg_pairs_all)
    lme = None if p.neg_lse is None else p.neg_lse - log_neg_all
    jsd_bound = None
    if estimator == "infonce":
        loss = (p.row_lse_sum - p.pos_sum) / rows
        if symmetric:
            loss = (loss + (p.col_lse_sum - p.pos_sum) / rows) / 2
        mi = math.log(counts.cols) - loss.detach()
    elif estimator == "nwj":
        mi = p.pos_sum / rows - torch.exp(lme - 1.0)
        loss = -mi
    elif estimator == "dv":
        mi = p.pos_sum / rows - lme
        loss = -mi
    elif estimator in ("js", "smile"):
        loss = p.pos_softplus / rows + p.neg_softplus / counts.neg_pairs
        if estimator == "js":
            mi = 1.0 + p.pos_sum / rows - torch.exp(lme)
            jsd_bound = LOG2 - loss.detach() / 2
        else:
            mi = p.pos_sum / rows - (p.neg_lse_clip - log_neg_all)
            loss = loss + (-mi - loss).detach()
    elif estimator == "siglip":
        loss = (p.pos_softplus + p.neg_softplus) / rows
        mi = p.pos_sum / rows - lme
    else:
        raise ValueError(f"critic_bound: estimator must be one of {ESTIMATORS}, got {estimator!r}")
    mi = mi.detach()
    accuracy = p.correct / rows
    if jsd_bound is None:
        jsd_bound = torch.full_like(mi, math.nan)
    return CriticBoundOutput(loss, mi, accuracy, jsd_bound)
