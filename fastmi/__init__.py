"""fastmi: fused mutual-information bounds for PyTorch.

The InfoGAN loss (:func:`infogan_loss`): one pass over (D logits, Q outputs, codes)
gives the discriminator's BCE terms and the log-likelihood of the codes under Q, with
autograd, and reports the two variational bounds in nats:

    JSD(P_data || P_G) >= log 2 - (BCE_real + BCE_fake) / 2
    I(c; x)            >= H(c) + E log Q(c|x)

The critic bounds (:func:`critic_bound`): InfoNCE (CLIP), NWJ, DV, JS, SMILE and SigLIP
on the score matrix S = scale * x y^T + bias of two batches of embeddings, as reductions
that never store S.

Each op is a package of its own (``fastmi.infogan``, ``fastmi.critic``); ``fastmi.runtime`` holds what
they share (backend registry, native builds, op registration, launch helpers).
"""

from .critic import CriticBound, CriticBoundOutput, critic_bound
from .infogan import (BACKENDS, Codes, InfoGANLoss, InfoGANLossOutput, LatentSpec, MIStats, available_backends,
                      infogan_loss)
from .runtime.cpu_extension import empty_cache

__version__ = "0.1.0"

__all__ = ["BACKENDS", "Codes", "CriticBound", "CriticBoundOutput", "InfoGANLoss", "InfoGANLossOutput", "LatentSpec",
           "MIStats", "available_backends", "critic_bound", "empty_cache", "infogan_loss"]
