"""The values :func:`fastmi.infogan_loss` returns."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..kernels.infogan.config import STAT_JSD, STAT_MI_BERN, STAT_MI_CONT, STATS_FIXED


class MIStats(NamedTuple):
    """Detached diagnostics, in nats, from the same partial sums as the losses (t = 1):

        jsd_bound        = log 2 - (mean_i softplus(-r_i) + mean_j softplus(f_j)) / 2
        mi_categorical_k = log K_k - mean_j e_jk                       (shape [m])
        mi_bernoulli     = nb log 2 - sum_b mean_j u_jb
        mi_continuous    = n H(prior) - sum_d mean_j h_jd

    A bound whose inputs are absent is NaN.
    """

    jsd_bound: torch.Tensor
    mi_categorical: torch.Tensor
    mi_bernoulli: torch.Tensor
    mi_continuous: torch.Tensor

    @classmethod
    def from_vector(cls, stats: torch.Tensor) -> "MIStats":
        """Views of a backend's stats vector ``[jsd, mi_bernoulli, mi_continuous, mi_cat_1..m]``."""
        fixed = stats[:STATS_FIXED].unbind()  # one op for the three scalar views
        return cls(fixed[STAT_JSD], stats[STATS_FIXED:], fixed[STAT_MI_BERN], fixed[STAT_MI_CONT])


class InfoGANLossOutput(NamedTuple):
    """``discriminator`` (the D/Q step), ``generator`` (the G step) and ``info``
    (L_info alone) carry autograd; ``stats`` is detached."""

    discriminator: torch.Tensor
    generator: torch.Tensor
    info: torch.Tensor
    stats: MIStats
