"""How ``backend="auto"`` chooses among the GPU backends for CUDA tensors.

The rule, by measured speed:

1. Take the forward + backward timings that ``benchmarks/gpu_check.sh`` measured on this
   GPU model (:data:`MEASURED`, keyed by ``torch.cuda.get_device_name()``).
2. For a call of known batch B and width W, the measured point nearest in
   (log2 B, log2 W) ranks the backends by its times. With no shape (the registry asks
   once per device type), each backend scores the geometric mean, over the points where
   it was measured, of its time divided by the fastest time at that point; the lowest
   score ranks first. A geometric mean of ratios weighs the launch-bound B = 64 point
   and the bandwidth-bound B = 1M point alike.
3. The first ranked backend that runs here wins. Backends never measured (and every
   backend on a GPU model with no entry) follow in :data:`DEFAULT_ORDER`: triton (no
   compiler needed beyond triton itself), cuda (needs nvcc), reference.

:data:`MEASURED` holds only numbers that gpu_check.py printed on a real GPU: its
"auto rule" section prints the entry for the GPU it ran on, in this format, to paste here:

    MEASURED["NVIDIA H200"] = [
        {"batch": 64, "width": 14, "dtype": "float32",
         "ms": {"triton": 0.05, "cuda": 0.04, "reference": 0.30}},
        ...
    ]
"""

from __future__ import annotations

import math
from typing import Callable, Optional

DEFAULT_ORDER = ("triton", "cuda", "reference")

# GPU name -> measured points (see the module docstring). Empty until a GPU session
# pastes gpu_check.py's output; until then the default order rules.
MEASURED: dict = {}


def _default_rank(name: str) -> int:
    return DEFAULT_ORDER.index(name) if name in DEFAULT_ORDER else len(DEFAULT_ORDER)


def ranking(points, batch: Optional[int] = None, width: Optional[int] = None) -> list:
    """The backends of ``DEFAULT_ORDER`` (and any measured ones), fastest first, by the rule
    of the module docstring."""
    points = [p for p in points or () if p.get("ms")]
    names = sorted({n for p in points for n in p["ms"]} | set(DEFAULT_ORDER), key=_default_rank)
    if not points:
        return names
    if batch is not None and width is not None:
        def distance(p):
            return math.log2(p["batch"] / batch) ** 2 + math.log2(p["width"] / width) ** 2
        nearest = min(points, key=distance)
        score = {n: nearest["ms"][n] for n in names if n in nearest["ms"]}
    else:
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


def choose_cuda_backend(unavailable_reason: Callable[[str], Optional[str]], *, batch: Optional[int] = None,
                        width: Optional[int] = None, device_name: Optional[str] = None,
                        table: Optional[dict] = None) -> str:
    """The backend ``backend="auto"`` uses for CUDA tensors.

    ``unavailable_reason(name)`` is None when backend ``name`` can serve CUDA tensors here.
    ``batch`` / ``width`` (optional) are the call's B and W; ``device_name`` defaults to the
    current GPU's and ``table`` to :data:`MEASURED`.
    """
    table = MEASURED if table is None else table
    name = device_name if device_name is not None else current_device_name()
    for backend in ranking(table.get(name, ()), batch, width):
        if unavailable_reason(backend) is None:
            return backend
    return "reference"
