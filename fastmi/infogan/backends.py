"""The InfoGAN loss's backends (fastmi/infogan/<name>.py) and which one serves a call.

``"auto"``: the fused ``"cpu"`` kernel on CPU tensors (``"reference"`` when it cannot
build), the GPU rule of fastmi/runtime/gpu_rule.py on CUDA tensors.
"""

from __future__ import annotations

import torch

from ..runtime.registry import Registry

BACKENDS = ("reference", "cpu", "triton", "cuda")
REGISTRY = Registry("infogan", __package__, BACKENDS, entry="loss", who="infogan_loss")


def available_backends(device="cpu") -> list:
    """The InfoGAN backends that run on ``device`` here (this may build native code)."""
    return REGISTRY.available(device)


@torch.compiler.assume_constant_result
def backend_name(backend: str, device_type: str) -> str:
    """The backend that serves ``backend`` on ``device_type`` tensors (ValueError, listing
    the valid choices, when none can). torch.compile runs this once, at trace time, and
    keeps the name as a constant: the build and the checks stay out of graphs."""
    return REGISTRY.resolve(backend, device_type)


def loss_fn(name: str):
    """The ``loss`` function of a backend that :func:`backend_name` returned."""
    return REGISTRY.entry_of(name)
