"""Variational bounds on I(X; Y) from a score matrix that is never stored:
``critic_bound(x, y)`` with S = scale * x y^T + bias (InfoNCE / CLIP, NWJ, DV / MINE,
JS, SMILE, SigLIP), shared/design/CRITIC_BOUNDS.md.

    api.py          critic_bound, CriticBound (the public entry points)
    problem.py      the hashable static options, and each row problem's kernel arguments
    inputs.py       validation and normalization of the inputs
    outputs.py      CriticBoundOutput
    bounds.py       the partial reductions and every estimator's formulas from them, once
    backends.py     which backend serves a call
    reference.py    composite PyTorch, the whole matrix: the oracle, double backward
    ops.py          the torch.library ops, fake kernels and autograd of the fused backends
    tiled.py        those ops in pure PyTorch, row tiles: the fused kernels' specification
    distributed.py  group=: gathered columns, local rows, the global log-sum-exps
    triton.py       the fused ops as Triton kernels (kernels/critic/) on CUDA tensors
    testing.py      random inputs, the float64 oracle, tolerances (tests and GPU checks)
    checks.py       the GPU checks of python -m fastmi.validate
"""

from .api import CriticBound, critic_bound
from .backends import BACKENDS, available_backends
from .outputs import CriticBoundOutput

__all__ = ["BACKENDS", "CriticBound", "CriticBoundOutput", "available_backends", "critic_bound"]
