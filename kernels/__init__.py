"""Triton kernels of fastmi (imported as ``fastmi.kernels``).

- ``infogan_math.py``: the per-row math of ARCHITECTURE.md sections 3-5 as jit helpers
  (softplus/sigmoid pairs, the NLL terms and their gradients, online log-sum-exp, and
  ``finalize``: the losses and stats from the partial sums).
- ``infogan_forward.py``: ``infogan_forward_kernel``, the whole forward in one launch.
- ``infogan_backward.py``: ``infogan_backward_kernel``, every gradient in one launch.
- ``config.py``: every tunable (block sizes, rows per tile, warps, program caps) and
  ``choose_layout``, the shape-only choice of the launch layout.

The launcher is ``fastmi/backends/triton.py`` (``forward`` / ``backward``, the op
implementations); nothing here imports from fastmi outside this package.
"""
