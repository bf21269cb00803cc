"""The InfoGAN loss's public API: :func:`infogan_loss` and its module form :class:`InfoGANLoss`."""

from __future__ import annotations

from typing import Optional

import torch

from ..runtime.registry import transforms_active
from .backends import REGISTRY, backend_name, loss_fn
from .inputs import prepare_inputs
from .outputs import InfoGANLossOutput
from .problem import make_problem
from .spec import Codes, LatentSpec


def infogan_loss(
    real_logits: Optional[torch.Tensor],
    fake_logits: Optional[torch.Tensor],
    q: torch.Tensor,
    codes: Codes,
    spec: LatentSpec,
    *,
    lambda_cat: float = 1.0,
    lambda_cont: float = 1.0,
    generator_loss: str = "nonsaturating",
    real_label: float = 1.0,
    reduction: str = "mean",
    backend: str = "auto",
) -> InfoGANLossOutput:
    """The InfoGAN losses and mutual-information bounds of one batch, in one fused pass.

    With softplus(x) = log(1 + e^x), mean over rows (sum for ``reduction="sum"``):

        L_D_adv = mean_i [t softplus(-r_i) + (1 - t) softplus(r_i)] + mean_j softplus(f_j)
        L_G_adv = mean_j softplus(-f_j)    (or -mean_j softplus(f_j) for "minimax")
        L_info  = lambda_cat (sum_k mean_j CE(l_jk, c_jk) + sum_b mean_j BCE(v_jb, c_jb))
                + lambda_cont sum_d mean_j GaussianNLL(c_jd; mu_jd, s_jd)

    Args:
        real_logits: D's logits on a real batch, [Br] or [Br, 1], or None.
        fake_logits: D's logits on the generated batch, [Bf] or [Bf, 1], or None.
        q: Q's output on the generated batch, [Bf, spec.q_width], laid out as
            ``[cat logits | bernoulli logits | mu | logvar (when std="learned")]``.
        codes: the :class:`Codes` that generated the fake batch.
        spec: the :class:`LatentSpec`.
        lambda_cat: weight of the categorical and bernoulli terms.
        lambda_cont: weight of the continuous terms.
        generator_loss: ``"nonsaturating"`` or ``"minimax"``.
        real_label: t, one-sided label smoothing of the real term, in [0, 1].
        reduction: ``"mean"`` or ``"sum"``.
        backend: ``"auto"``, ``"reference"``, ``"cpu"``, ``"triton"`` or ``"cuda"``.

    Returns:
        :class:`InfoGANLossOutput` ``(discriminator, generator, info, stats)``:
        ``discriminator = L_D_adv + L_info`` (the D/Q step), ``generator = L_G_adv +
        L_info`` (the G step), ``info = L_info``, and detached ``stats`` (jsd_bound,
        mi_categorical [m], mi_bernoulli, mi_continuous) in nats. Losses and stats are
        float32 (float64 when the logits are float64); gradients come back in each
        input's dtype. No gradient flows to the codes.
    """
    # dynamo traces through lru_cache (and warns); the cache only pays off in eager
    build = make_problem.__wrapped__ if torch.compiler.is_compiling() else make_problem
    problem = build(spec, lambda_cat, lambda_cont, generator_loss, real_label, reduction)
    inputs = prepare_inputs(real_logits, fake_logits, q, codes, problem)
    device_type = inputs.q.device.type
    name = REGISTRY.for_problem(backend, backend_name(backend, device_type), device_type, problem)
    if not torch.compiler.is_compiling() and transforms_active():
        name = REGISTRY.under_transforms(backend, name)
    discriminator, generator, info, stats = loss_fn(name)(inputs, problem)
    return InfoGANLossOutput(discriminator, generator, info, stats)


class InfoGANLoss(torch.nn.Module):
    """:func:`infogan_loss` with its spec and options held by a module.

    ``InfoGANLoss(spec, lambda_cat=..., backend=...)(real_logits, fake_logits, q, codes)``
    """

    def __init__(self, spec: LatentSpec, *, lambda_cat: float = 1.0, lambda_cont: float = 1.0,
                 generator_loss: str = "nonsaturating", real_label: float = 1.0,
                 reduction: str = "mean", backend: str = "auto"):
        super().__init__()
        make_problem(spec, lambda_cat, lambda_cont, generator_loss, real_label, reduction)  # validate now
        self.spec = spec
        self.options = dict(lambda_cat=lambda_cat, lambda_cont=lambda_cont, generator_loss=generator_loss,
                            real_label=real_label, reduction=reduction, backend=backend)

    def forward(self, real_logits, fake_logits, q, codes) -> InfoGANLossOutput:
        return infogan_loss(real_logits, fake_logits, q, codes, self.spec, **self.options)

    def extra_repr(self) -> str:
        return f"spec={self.spec}, " + ", ".join(f"{k}={v!r}" for k, v in self.options.items())
