"""How ``backend="auto"`` chooses among the GPU backends for CUDA tensors."""

from __future__ import annotations


def choose_cuda_backend(unavailable_reason) -> str:
    """The first of triton, cuda, reference that runs here.

    ``unavailable_reason(name)`` is None when backend ``name`` can serve CUDA tensors.
    """
    for name in ("triton", "cuda"):
        if unavailable_reason(name) is None:
            return name
    return "reference"
