"""The fused C++ CPU backend (csrc/cpu/infogan_cpu.cpp).

One multi-threaded, vectorized pass computes every term and partial sum; one more pass
computes every gradient from the inputs, into buffers that a small pool recycles from
the gradients of earlier steps (see :func:`empty_cache`). Eager calls go through a C++
autograd node (``loss`` in the extension), so neither direction crosses the dispatcher
or Python; under torch.compile the same kernels run as the custom ops
``fastmi::cpu_forward`` and ``fastmi::cpu_backward``.
"""

from __future__ import annotations

import torch

from ..outputs import MIStats
from .fused_op import define_extension_ops
from .native_build import build, host_isa_flags, unavailable_reason

DEVICES = ("cpu",)
_extension = None
_build_error = None


def extension():
    """The compiled extension, built with ninja on first use (``python -m fastmi.build``
    builds it ahead of time)."""
    global _extension, _build_error
    if _extension is None and _build_error is None:
        try:
            _extension = build(
                "fastmi_cpu",
                ["cpu/infogan_cpu.cpp"],
                what="the fused CPU kernel",
                cflags=["-O3", "-fopenmp", *host_isa_flags()],
                ldflags=["-fopenmp"],
            )
        except Exception as exc:  # a missing compiler or ninja: report it, let auto fall back
            _build_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    if _extension is None:
        raise RuntimeError(f"the fused CPU kernel could not be built ({_build_error}); "
                           f"run `FASTMI_VERBOSE_BUILD=1 python -m fastmi.build` to see why")
    return _extension


def empty_cache():
    """Frees the gradient buffers the backward keeps for reuse (csrc/cpu/grad_pool.h: at
    most 8 freed buffers of 64 KiB or more, 512 MiB in all)."""
    if _extension is not None:
        _extension.empty_grad_pool()


def cached_bytes() -> int:
    """Bytes of freed gradient buffers the pool holds for the next backward."""
    return _extension.cached_grad_bytes() if _extension is not None else 0


def is_available():
    return unavailable_reason(extension)


ops = define_extension_ops("cpu", extension)


def loss(inputs, problem):
    if torch.compiler.is_compiling():
        return ops.loss(inputs, problem)
    d, g, i, jsd, mi_cat, mi_bern, mi_cont = extension().loss(*inputs, *problem.kernel_args())
    return d, g, i, MIStats(jsd, mi_cat, mi_bern, mi_cont)
