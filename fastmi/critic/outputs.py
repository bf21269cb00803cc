"""The values :func:`fastmi.critic_bound` returns."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class CriticBoundOutput(NamedTuple):
    """``loss`` carries autograd (to x, y, scale and bias); the rest are detached, in nats.

    loss       what to minimise (the negative bound, or the estimator's training loss)
    mi         the bound on I(X; Y) in nats
    accuracy   top-1 retrieval x -> y: the fraction of rows whose largest score is their positive
    jsd_bound  for estimator="js": log 2 - loss / 2, the bound on JSD(p(x, y) || p(x) p(y));
               NaN for the other estimators

    All four are 0-d tensors in the compute dtype: float32, float64 for float64 inputs.
    """

    loss: Tensor
    mi: Tensor
    accuracy: Tensor
    jsd_bound: Tensor
