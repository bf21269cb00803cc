"""The InfoGAN loss's fused C++ CPU backend (csrc/infogan/cpu, in the ``fastmi_cpu`` library).

One multi-threaded, vectorized pass computes every term and partial sum; one more pass
computes every gradient from the inputs, into buffers that the library's pool recycles
from the gradients of earlier steps (:func:`fastmi.runtime.cpu_extension.empty_cache`).
Eager calls go through a C++ autograd node (``loss`` in the library), so neither
direction crosses the dispatcher or Python; under torch.compile the same kernels run as
the custom ops ``fastmi::cpu_forward`` and ``fastmi::cpu_backward``.
"""

from __future__ import annotations

import torch

from ..runtime import cpu_extension
from ..runtime.cpu_extension import extension
from .ops import define_extension_ops, differentiable_grads
from .outputs import MIStats


def devices() -> tuple:
    return ("cpu",)


def is_available():
    return cpu_extension.is_available()


ops = define_extension_ops("cpu", extension)
_double_backward_ready = False

def loss(inputs, problem):
    if torch.compiler.is_compiling():
        return ops.loss(inputs, problem)
    global _double_backward_ready
    if not _double_backward_ready:  # the C++ node's backward with create_graph=True calls it
        extension().set_differentiable_backward(differentiable_grads)
        _double_backward_ready = True
    d, g, i, jsd, mi_cat, mi_bern, mi_cont = extension().loss(*inputs, *problem.kernel_args())
    return d, g, i, MIStats(jsd, mi_cat, mi_bern, mi_cont)
