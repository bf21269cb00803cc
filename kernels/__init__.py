"""Triton kernels of fastmi (imported as ``fastmi.kernels``), one package per op over the
shared numerics:

- ``common/numerics.py``: to_acc, scalar arguments, softplus / sigmoid pairs, the online
  log-sum-exp, register-vector slots: what every op's kernels use.
- ``infogan/``: the InfoGAN loss: ``terms.py`` (the per-row math of ARCHITECTURE.md
  sections 3-5 and ``finalize``), ``forward.py`` and ``backward.py`` (one launch each),
  ``config.py`` (every tunable, the sum and stat indices, and ``choose_layout``).
- ``critic/``: critic_bound's flash-style kernels: ``forward.py`` (tiles of the score
  matrix folded into per-row / per-column statistics, their merge, the finalize),
  ``backward.py`` (the gradients from recomputed tiles), ``terms.py``, ``config.py``.

The launchers are the op packages' ``triton.py`` (fastmi/<op>/triton.py); nothing here
imports from fastmi outside this package.
"""
