"""torch.library registration helpers shared by every op's fused backends.

An op registers its kernels as custom ops ``fastmi::<name>`` with a fake (meta)
implementation, so that ``torch.compile(fullgraph=True)`` traces a call without a graph
break. Native and interpreted kernels are opaque custom ops; Triton kernels on a GPU are
``torch.library.triton_op`` ops, so that inductor sees through them to the kernels.
"""

from __future__ import annotations

import os

import torch

from .triton_launch import interpreting

# FASTMI_TRITON_OPAQUE_OPS=1 registers plain custom ops for Triton kernels on GPUs too:
# torch.compile then calls the launcher as a black box (no graph break either) instead of
# tracing into it.
OPAQUE_TRITON_OPS = os.environ.get("FASTMI_TRITON_OPAQUE_OPS", "0") == "1"


def define_op(qualname: str, impl, *, schema: str, fake, register=torch.library.custom_op):
    """Registers ``impl`` as the functional custom op ``qualname`` with its fake kernel."""
    op = register(qualname, impl, mutates_args=(), schema=schema)
    op.register_fake(fake)
    return op


def register_triton(qualname: str, impl, *, mutates_args, schema: str):
    """A ``register`` for :func:`define_op` whose ``impl`` launches Triton kernels."""
    if interpreting() or OPAQUE_TRITON_OPS:  # wrap_triton cannot trace an interpreted kernel: keep it opaque
        return torch.library.custom_op(qualname, impl, mutates_args=mutates_args, schema=schema)
    # triton_op infers the schema from impl's annotations, which spell out `schema`
    return torch.library.triton_op(qualname, impl, mutates_args=mutates_args)
