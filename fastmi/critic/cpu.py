"""The ``"cpu"`` backend of ``critic_bound``: fused C++ (csrc/critic/cpu, in the
``fastmi_cpu`` library), through the ops of fastmi/critic/ops.py.

The score matrix is computed one tile of up to 256 x 256 scores at a time, each by a GEMM
of torch's BLAS into a per-thread scratch buffer and reduced at once: the forward keeps
only the partials and the per-row / per-column log-sum-exps (O(B + N)), the backward
recomputes each tile and accumulates dx, dy, dscale and dbias. Extra memory is
O((B + N) d + threads x tile^2), never O(B N); the result is bit-identical for any
thread count (csrc/critic/cpu/tiles.h says how). float32 and float64 inputs run in
place; bfloat16 and float16 inputs as float32 copies, gradients rounded back once.

Eager calls go through ops.py's ``torch.autograd.Function`` (a C++ autograd node saves
nothing measurable here: docs/critic.md); under torch.compile the same kernels run as
the custom ops ``fastmi::critic_cpu_forward`` and ``_backward``. With grad mode on during
the backward (``create_graph=True``) ops.py routes the gradients through the reference's
composite formulas, so they can be differentiated again.
"""

from __future__ import annotations

from ..runtime import cpu_extension
from ..runtime.cpu_extension import extension
from .ops import define_critic_ops


def devices() -> tuple:
    return ("cpu",)


def is_available():
    return cpu_extension.is_available()


def forward(x, y, scale, bias, offset, compute, differentiate, clip):
    """ops.py's forward: ``(partials [8], row_lse, col_lse)``."""
    return tuple(extension().critic_forward(x, y, scale, bias, offset, compute, differentiate, clip))


def backward(grad_partials, x, y, scale, bias, partials, row_lse, col_lse, offset, compute, differentiate, clip):
    """ops.py's backward: ``(grad_x, grad_y, grad_scale, grad_bias)``."""
    return tuple(extension().critic_backward(grad_partials, x, y, scale, bias, partials, row_lse, col_lse, offset,
                                             compute, differentiate, clip))


def set_tile(tile: int) -> None:
    """Tests and benchmarks: tiles of ``tile`` x ``tile`` scores (0: the default plan)."""
    extension().critic_set_tile(int(tile))


def tiles(rows: int, cols: int) -> tuple:
    """``(tile rows, tile columns, row tiles, column tiles)`` of a ``rows`` x ``cols`` problem."""
    return tuple(extension().critic_tiles(rows, cols))


ops = define_critic_ops("cpu", forward, backward)
partials = ops.partials
