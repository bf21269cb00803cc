"""How ``backend="auto"`` chooses among an op's GPU backends for CUDA tensors.

The rule, by measured speed:

1. Take the forward + backward timings that ``benchmarks/gpu_check.sh`` measured for the
   op on this GPU model (:data:`MEASURED[op]`, keyed by ``torch.cuda.get_device_name()``).
2. Each backend scores the geometric mean, over the measured points where it ran, of its
   time divided by the fastest time at that point; the lowest score ranks first. A
   geometric mean of ratios weighs a launch-bound small batch and a bandwidth-bound
   large one alike.
3. The first ranked backend that runs here wins. Backends never measured (and every
   backend on a GPU model with no entry) follow in :data:`DEFAULT_ORDER`: triton (no
   compiler needed beyond triton itself), cuda (needs nvcc), reference.

:data:`MEASURED` holds only numbers that a GPU check printed on a real GPU, in this
format, to paste here:

    MEASURED["infogan"]["NVIDIA H200"] = [
        {"batch": 64, "width": 14, "dtype": "float32",
         "ms": {"triton": 0.05, "cuda": 0.04, "reference": 0.30}},
        ...
    ]
"""

from __future__ import annotations

import math
from typing import Callable, Optional

DEFAULT_ORDER = ("triton", "cuda", "reference")

# op -> GPU name -> measured points (see the module docstring). Empty until a GPU session
# pastes a GPU check's output; until then the default order rules.
MEASURED: dict = {"infogan": {}}


def _default_rank(name: str) -> int:
    return DEFAULT_ORDER.index(name) if name in DEFAULT_ORDER else len(DEFAULT_ORDER)


def ranking(points) -> list:
    """The backends of ``DEFAULT_ORDER`` (and any measured ones), fastest first, by the rule
    of the module docstring."""
    points = [p for p in points or () if p.get("ms")]
    names = sorted({n for p in points for n in p["ms"]} | set(DEFAULT_ORDER), key=_default_rank)
    logs: dict = {}
    for p in points:
        best = min(p["ms"].values())
        for n, ms in p["ms"].items():
            logs.setdefault(n, []).append(math.log(ms / best))
    score = {n: math.exp(sum(v) / len(v)) for n, v in logs.items()}
    measured = sorted(score, key=lambda n: (score[n], _default_rank(n)))
    return measured + [n for n in names if n not in score]


def current_device_name() -> Optional[str]:
    """``torch.cuda.get_device_name()`` of the current device, or None without one."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(torch.cuda.current_device())
    except Exception:  # a broken driver: no name, the default order
        pass
    return None


def choose_gpu_backend(op: str, unavailable_reason: Callable[[str], Optional[str]], *,
                       device_name: Optional[str] = None, table: Optional[dict] = None) -> str:
    """The backend ``backend="auto"`` uses for the op's CUDA tensors.

    ``unavailable_reason(name)`` is None when backend ``name`` can serve CUDA tensors here;
    ``device_name`` defaults to the current GPU's and ``table`` to ``MEASURED[op]``.
    """
    table = MEASURED.get(op, {}) if table is None else table
    name = device_name if device_name is not None else current_device_name()
    for backend in ranking(table.get(name, ())):
        if unavailable_reason(backend) is None:
            return backend
    return "reference"
