"""The InfoGAN loss: the discriminator's BCE terms and the log-likelihood of the codes
under Q in one fused pass, with the two variational bounds in nats.

    api.py        infogan_loss, InfoGANLoss (the public entry points)
    spec.py       LatentSpec, Codes
    problem.py    the options folded into the kernels' scalar arguments
    inputs.py     validation and normalization of the inputs
    outputs.py    InfoGANLossOutput, MIStats
    backends.py   which backend serves a call
    reference.py  composite PyTorch: the eager baseline and the tests' oracle
    ops.py        the torch.library ops and autograd of the fused backends
    cpu.py triton.py cuda.py   glue to csrc/infogan/cpu, kernels/infogan, csrc/infogan/cuda
"""

from .api import InfoGANLoss, infogan_loss
from .backends import BACKENDS, available_backends
from .outputs import InfoGANLossOutput, MIStats
from .spec import Codes, LatentSpec

__all__ = ["BACKENDS", "Codes", "InfoGANLoss", "InfoGANLossOutput", "LatentSpec", "MIStats",
           "available_backends", "infogan_loss"]
