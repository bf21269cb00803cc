"""Backend registries: which implementation of an op serves a call.

An op (``fastmi/<op>/``) keeps one :class:`Registry` of its backends. Each backend is a
module ``<package>.<name>`` that defines

    devices() -> tuple               the device types it runs on here
    is_available() -> str | None     None when usable, else the reason it is not
    <entry>(inputs, problem)         the op's computation (``entry`` names it)
    cannot_run(problem) -> str | None   (optional) why it cannot run one call's problem

imported lazily, so that ``import fastmi`` neither builds native code nor imports triton.

``backend="auto"`` picks, for the tensors' device type:

- CPU: the op's fused ``"cpu"`` backend, else ``"reference"`` (with a warning) when it
  cannot build;
- CUDA: on a GPU that passed ``python -m fastmi.validate`` (fastmi/runtime/validation.py),
  the rule of :func:`fastmi.runtime.gpu_rule.choose_gpu_backend`; elsewhere the reference,
  with a one-time warning that names the command.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Callable

import torch


def transforms_active() -> bool:
    """Whether a torch.func transform (vmap, grad, jacrev, ...) is running. Fused kernels
    do not support them: their ops have no batching rule, and the CPU's C++ autograd node
    is invisible to functorch."""
    return torch._C._are_functorch_transforms_active()


class Registry:
    """The backends of one op: ``names`` in the order users see them, modules under
    ``package``, each exporting ``entry``; ``who`` starts every error message."""

    def __init__(self, op: str, package: str, names: tuple, *, entry: str, who: str):
        self.op = op
        self.package = package
        self.names = tuple(names)
        self.entry = entry
        self.who = who
        self._resolved: dict = {}   # (backend, device type) -> name
        self._entries: dict = {}    # name -> the backend's entry function
        self._limits: dict = {}     # name -> its cannot_run, or None

    def module(self, name: str):
        return importlib.import_module(f"{self.package}.{name}")

    def unavailable_reason(self, name: str, device_type: str):
        """None when backend ``name`` runs on ``device_type`` tensors here, else why not."""
        try:
            devices = self.module(name).devices()
        except ImportError as exc:  # e.g. triton is not installed
            return f"it cannot be imported ({exc})"
        if device_type not in devices:
            return f"it runs on {', '.join(devices) or 'no device here'}, not on {device_type} tensors"
        return self.module(name).is_available()

    def available(self, device="cpu") -> list:
        """The backends that run on ``device`` here (this may build native code)."""
        device_type = torch.device(device).type
        return [name for name in self.names if self.unavailable_reason(name, device_type) is None]

    def _auto(self, device_type: str) -> str:
        if device_type == "cuda":
            from .validation import gpu_trusted
            if not gpu_trusted():  # a GPU the fused kernels have not passed their checks on
                return "reference"
            from .gpu_rule import choose_gpu_backend
            return choose_gpu_backend(self.op, lambda name: self.unavailable_reason(name, "cuda"))
        if device_type == "cpu" and "cpu" in self.names:
            reason = self.unavailable_reason("cpu", "cpu")
            if reason is None:
                return "cpu"
            warnings.warn(f"fastmi: the fused CPU kernel is unavailable ({reason}); backend='auto' "
                          f"uses the reference", RuntimeWarning, stacklevel=6)
        return "reference"

    def resolve(self, backend: str, device_type: str) -> str:
        """The backend that serves ``backend`` on ``device_type`` tensors. Raises ValueError,
        listing the valid choices, when it cannot."""
        key = (backend, device_type)
        name = self._resolved.get(key)
        if name is not None:
            return name
        if backend == "auto":
            name = self._auto(device_type)
        elif backend in self.names:
            name = backend
        else:
            raise ValueError(f"{self.who}: backend must be one of {('auto',) + self.names}, got {backend!r}")
        reason = self.unavailable_reason(name, device_type)
        if reason is not None:
            valid = [b for b in self.names if self.unavailable_reason(b, device_type) is None]
            choices = f"valid choices for {device_type} tensors: {['auto'] + valid}" if valid else \
                f"no backend serves {device_type} tensors"
            raise ValueError(f"{self.who}: backend {name!r} cannot serve {device_type} tensors here: "
                             f"{reason}. {choices[0].upper()}{choices[1:]}")
        self._entries[name] = getattr(self.module(name), self.entry)
        self._limits[name] = getattr(self.module(name), "cannot_run", None)
        self._resolved[key] = name
        return name

    def for_problem(self, backend: str, name: str, device_type: str, problem) -> str:
        """``name`` if it can run this call's problem; else, for ``"auto"``, the reference
        (which runs every problem), and for an explicit backend a ValueError saying why."""
        limit = self._limits.get(name)
        reason = None if limit is None else limit(problem)
        if reason is None:
            return name
        if backend != "auto":
            raise ValueError(f"{self.who}: backend {name!r} cannot run this call: {reason}")
        return self.resolve("reference", device_type)

    def under_transforms(self, backend: str, name: str) -> str:
        """The backend that serves a call made inside a torch.func transform: the reference
        for ``"auto"``, a clear error for an explicit fused backend."""
        if name == "reference":
            return name
        if backend == "auto":
            self._entries.setdefault("reference", getattr(self.module("reference"), self.entry))
            return "reference"
        raise RuntimeError(f"{self.who}: backend {name!r} does not support torch.func transforms (vmap, grad, "
                           f"jacrev, ...); use backend='reference', or 'auto', which switches to it inside them")

    def entry_of(self, name: str) -> Callable:
        """The entry function of a backend that :meth:`resolve` returned."""
        return self._entries[name]

    def forget(self) -> None:
        """Drops every resolved choice (tests that change what is available)."""
        self._resolved.clear()
        self._entries.clear()
        self._limits.clear()
