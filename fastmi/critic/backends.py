"""``critic_bound``'s backends (fastmi/critic/<name>.py) and which one serves a call.

Each backend module exports ``devices()``, ``is_available()`` and
``partials(x, y, scale, bias, rows)``: the partials of fastmi/critic/bounds.py for one
row problem, as 0-d tensors with autograd.

    reference   composite PyTorch, stores the B x N scores: the oracle, double backward
    tiled       the fused ops of ops.py in pure PyTorch, row tiles: O(B d + tile N) memory
    cpu         fused C++ (csrc/critic/cpu), through ops.py
    triton      fused Triton kernels, through ops.py

``"auto"`` follows fastmi/runtime/registry.py: the fused ``"cpu"`` backend on CPU tensors
(the reference where it is not there or cannot build), the GPU rule of
fastmi/runtime/gpu_rule.py on CUDA tensors.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from ..runtime.registry import Registry

BACKENDS = ("reference", "tiled", "cpu", "triton")
REGISTRY = Registry("critic", __package__, BACKENDS, entry="partials", who="critic_bound")


def available_backends(device="cpu") -> list:
    """The critic backends that run on ``device`` here (this may build native code)."""
    return REGISTRY.available(device)


@functools.lru_cache(maxsize=None)  # eager calls ask on every call; the answer is fixed per process
def _has_module(name: str) -> bool:
    return importlib.util.find_spec(f"{__package__}.{name}") is not None


@torch.compiler.assume_constant_result
def backend_name(backend: str, device_type: str) -> str:
    """The backend that serves ``backend`` on ``device_type`` tensors (ValueError, listing
    the valid choices, when none can). torch.compile runs this once, at trace time."""
    if backend == "auto" and device_type == "cpu" and not _has_module("cpu"):
        # A tree without the fused CPU backend: "auto" is the reference, as the registry
        # makes it where that backend cannot build, but with nothing to warn about.
        backend = "reference"
    return REGISTRY.resolve(backend, device_type)


def partials_fn(name: str):
    """The ``partials`` function of a backend that :func:`backend_name` returned."""
    return REGISTRY.entry_of(name)
