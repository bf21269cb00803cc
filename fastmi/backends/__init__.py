"""The backend registry: which implementation serves a call.

Each backend is a module ``fastmi.backends.<name>`` with

    DEVICES                           the device types it runs on (or a function of none
                                      that returns them)
    is_available() -> str | None      None when usable, else the reason it is not
    loss(inputs: LossInputs, problem: Problem) -> (discriminator, generator, info, MIStats)

imported lazily, so that ``import fastmi`` neither builds native code nor imports triton.

``backend="auto"`` picks, for the tensors' device:

- CPU: ``"cpu"`` (the fused C++ kernel), else ``"reference"`` when it cannot build;
- CUDA: the rule of :func:`fastmi.backends.cuda_rule.choose_cuda_backend`.
"""

from __future__ import annotations

import importlib
import warnings

import torch

BACKENDS = ("reference", "cpu", "triton", "cuda")
_loss_fns: dict = {}
_names: dict = {}


def _module(name: str):
    return importlib.import_module(f"fastmi.backends.{name}")


def _devices(name: str) -> tuple:
    devices = _module(name).DEVICES
    return devices() if callable(devices) else devices


def unavailable_reason(name: str, device_type: str):
    """None when backend ``name`` runs on ``device_type`` here, else why it does not."""
    try:
        devices = _devices(name)
    except ImportError as exc:  # e.g. triton is not installed
        return f"it cannot be imported ({exc})"
    if device_type not in devices:
        return f"it runs on {', '.join(devices) or 'no device here'}, not on {device_type} tensors"
    return _module(name).is_available()


def available_backends(device="cpu") -> list:
    """The backends that run on ``device`` here (this may build native code)."""
    device_type = torch.device(device).type
    return [name for name in BACKENDS if unavailable_reason(name, device_type) is None]


def _auto(device_type: str) -> str:
    if device_type == "cuda":
        from .cuda_rule import choose_cuda_backend
        return choose_cuda_backend(lambda name: unavailable_reason(name, "cuda"))
    if device_type == "cpu":
        reason = unavailable_reason("cpu", "cpu")
        if reason is None:
            return "cpu"
        warnings.warn(f"fastmi: the fused CPU kernel is unavailable ({reason}); backend='auto' "
                      f"uses the reference", RuntimeWarning, stacklevel=5)
    return "reference"


@torch.compiler.assume_constant_result
def backend_name(backend: str, device_type: str) -> str:
    """The backend that serves ``backend`` on ``device_type`` tensors. Raises ValueError,
    listing the valid choices, when it cannot. torch.compile runs this once, at trace
    time, and keeps the name as a constant: the build and the checks stay out of graphs."""
    key = (backend, device_type)
    name = _names.get(key)
    if name is not None:
        return name
    if backend == "auto":
        name = _auto(device_type)
    elif backend in BACKENDS:
        name = backend
    else:
        raise ValueError(f"infogan_loss: backend must be one of {('auto',) + BACKENDS}, got {backend!r}")
    reason = unavailable_reason(name, device_type)
    if reason is not None:
        valid = ["auto"] + [b for b in BACKENDS if unavailable_reason(b, device_type) is None]
        raise ValueError(f"infogan_loss: backend {name!r} cannot serve {device_type} tensors here: "
                         f"{reason}. Valid choices for {device_type} tensors: {valid}")
    _loss_fns[name] = _module(name).loss
    _names[key] = name
    return name


def loss_fn(name: str):
    """The ``loss`` function of a backend that :func:`backend_name` returned."""
    return _loss_fns[name]
