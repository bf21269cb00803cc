"""fastmi: fused InfoGAN losses and mutual-information bounds for PyTorch.

One pass over (D logits, Q outputs, codes) gives the discriminator's BCE terms and the
log-likelihood of the codes under Q, with autograd, and reports the two variational
bounds in nats:

    JSD(P_data || P_G) >= log 2 - (BCE_real + BCE_fake) / 2
    I(c; x)            >= H(c) + E log Q(c|x)
"""

from .backends import BACKENDS, available_backends
from .loss import InfoGANLoss, infogan_loss
from .outputs import InfoGANLossOutput, MIStats
from .spec import Codes, LatentSpec

__version__ = "0.1.0"

__all__ = ["BACKENDS", "Codes", "InfoGANLoss", "InfoGANLossOutput", "LatentSpec", "MIStats",
           "available_backends", "infogan_loss"]
