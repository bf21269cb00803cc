"""Which GPUs fastmi trusts its fused GPU kernels on, and the check runner that decides.

``backend="auto"`` on CUDA tensors uses a fused GPU backend only on a GPU that passed
``python -m fastmi.validate`` (a record in the cache folder, keyed by the GPU model, its
driver and the torch / triton / fastmi versions), or whose model and triton release the
repository's committed GPU results cover (:data:`COMMITTED`). Elsewhere it uses the
reference, and says once, in a warning, which command validates the GPU. An explicit
``backend="triton"`` or ``"cuda"`` always runs what was asked.

A check is a function that raises on failure and returns a short detail on success; it
raises :class:`Skip` when it cannot apply here. :func:`run_checks` runs a list of them,
catching every failure, so that one broken check never hides the others.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import torch

from .native_build import cache_root

# GPU models whose results are committed (benchmarks/results/gpu/): model -> the triton
# major.minor and the result file. A GPU session that passes the checks adds its entry.
COMMITTED: dict = {}

VALIDATE_COMMAND = "python -m fastmi.validate"


class Skip(Exception):
    """A check that does not apply here (e.g. no second GPU stream on a CPU run)."""


class Check(NamedTuple):
    op: str          # "infogan", "critic"
    name: str        # what it checks, e.g. "triton: float64 oracle, MNIST B=64 float32"
    fn: Callable     # fn() -> detail string; raises on failure, Skip when it does not apply


class Outcome(NamedTuple):
    op: str
    name: str
    status: str      # PASS, FAIL, SKIP
    detail: str
    seconds: float


def run_checks(checks, *, budget: Optional[float] = None, report: Optional[Callable] = None) -> list:
    """Runs ``checks`` in order; each becomes an :class:`Outcome`. After ``budget`` seconds
    the rest are skipped. ``report(outcome)`` is called as each one ends."""
    start = time.perf_counter()
    outcomes = []
    for check in checks:
        t0 = time.perf_counter()
        if budget is not None and t0 - start > budget:
            status, detail = "SKIP", f"time budget of {budget:.0f} s spent"
        else:
            try:
                status, detail = "PASS", str(check.fn() or "")
            except Skip as exc:
                status, detail = "SKIP", str(exc)
            except Exception as exc:  # every failure is reported, and the run goes on
                lines = traceback.format_exc(limit=4).strip().splitlines()
                status = "FAIL"
                detail = (f"{type(exc).__name__}: {str(exc).strip()[:600]} | "
                          f"{' / '.join(line.strip() for line in lines[-3:])[:400]}")
        outcome = Outcome(check.op, check.name, status, detail, time.perf_counter() - t0)
        outcomes.append(outcome)
        if report is not None:
            report(outcome)
    return outcomes


# ---- helpers of the checks ----------------------------------------------------------------

def dtype_name(dtype) -> str:
    """``torch.bfloat16`` -> "bfloat16"."""
    return str(dtype).split(".")[1]


def sync(device) -> None:
    """Waits for the device's work (a check's failure surfaces inside the check)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def replay_concurrently(graphs, expected, equal, rounds: int = 5) -> str:
    """Replays each captured ``(graph, static outputs)`` (:func:`fastmi.runtime.graphs.
    capture_graph`) on a stream of its own, all at once, ``rounds`` times; after each round
    ``equal(static, expected[i], what)`` must hold. Two graphs are captured on one capture
    stream: a reduction state they shared would corrupt one of them here."""
    streams = [torch.cuda.Stream() for _ in graphs]
    for _ in range(rounds):
        for (graph, _static), stream in zip(graphs, streams):
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                graph.replay()
        torch.cuda.synchronize()
        for i, (_graph, static) in enumerate(graphs):
            equal(static, expected[i], f"graph {i}")
    return f"{len(graphs)} graphs x {rounds} concurrent replays: each equals its own eager result, bit for bit"


def replay_matches_eager(graph, captured: list, step, refill) -> None:
    """``refill()`` writes new data into the inputs a graph of ``step`` was captured on; its
    replay must then equal an eager ``step()`` on the same data, and a second replay the
    first, bit for bit."""
    with torch.no_grad():
        refill()
    graph.replay()
    torch.cuda.synchronize()
    replay = [t.clone() for t in captured]
    eager = step()
    graph.replay()
    torch.cuda.synchronize()
    assert_bitwise_equal(replay, eager, "graph replay vs eager on the same data")
    assert_bitwise_equal(replay, captured, "two replays")


def needs_cuda(device, what: str) -> None:
    """Raises Skip unless ``device`` is a CUDA device."""
    if torch.device(device).type != "cuda":
        raise Skip(f"{what} needs a CUDA device")


def assert_bitwise_equal(a: list, b: list, what: str) -> None:
    """Every tensor of ``a`` equal to its pair in ``b``, bit for bit (NaN equal to NaN)."""
    for i, (u, v) in enumerate(zip(a, b)):
        if not torch.equal(u.nan_to_num(7.0), v.nan_to_num(7.0)):
            diff = (u.double() - v.double()).abs().nan_to_num(0).max().item()
            raise AssertionError(f"{what}: output {i} differs (max |diff| {diff:.3g})")


# ---- the GPU's identity and its record ---------------------------------------------------

def driver_version() -> str:
    """The CUDA driver's version, e.g. "12.8" (from libcuda), or "unknown"."""
    try:
        version = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)) == 0:
            return f"{version.value // 1000}.{version.value % 1000 // 10}"
    except OSError:
        pass
    return "unknown"


def gpu_identity(index: Optional[int] = None) -> dict:
    """What a validation holds for: the GPU model and capability, the driver, and the
    torch, CUDA runtime, triton and fastmi versions."""
    index = torch.cuda.current_device() if index is None else index
    major, minor = torch.cuda.get_device_capability(index)
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    from .. import __version__
    return {"gpu": torch.cuda.get_device_name(index), "capability": f"{major}.{minor}", "driver": driver_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton_version, "fastmi": __version__}


def record_path(identity: dict) -> Path:
    """The record of a passed validation for ``identity`` in fastmi's cache folder."""
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    name = "".join(c if c.isalnum() else "-" for c in identity["gpu"])
    return cache_root() / "validated" / f"{name}-{key}.json"


def write_record(identity: dict, outcomes: list) -> Path:
    """Stores a passed validation (atomically: a reader never sees half a file)."""
    path = record_path(identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"identity": identity, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "checks": [o._asdict() for o in outcomes]}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(body, f, indent=1)
    os.replace(tmp, path)
    return path


def covered_by_committed(identity: dict, committed: Optional[dict] = None) -> bool:
    """Whether the repository's committed GPU results cover this GPU model and triton release."""
    entry = (COMMITTED if committed is None else committed).get(identity["gpu"])
    return entry is not None and ".".join(identity["triton"].split(".")[:2]) == entry["triton"]


_trusted: dict = {}
_warned = False


def gpu_trusted() -> bool:
    """Whether ``backend="auto"`` may use a fused GPU backend on the current GPU (cached
    per device for the process; the first untrusted call warns once)."""
    global _warned
    index = torch.cuda.current_device()
    trusted = _trusted.get(index)
    if trusted is None:
        identity = gpu_identity(index)
        trusted = _trusted[index] = record_path(identity).exists() or covered_by_committed(identity)
        if not trusted and not _warned:
            _warned = True
            warnings.warn(f"fastmi: the fused GPU kernels have not been validated on this GPU ({identity['gpu']}, "
                          f"driver {identity['driver']}, torch {identity['torch']}, triton {identity['triton']}); "
                          f"backend='auto' uses the reference. Run `{VALIDATE_COMMAND}` (under a minute) to "
                          f"validate them, or pass backend='triton' / 'cuda' explicitly.", RuntimeWarning,
                          stacklevel=6)
    return trusted


def forget() -> None:
    """Drops the cached verdicts (after a validation, or in tests)."""
    global _warned
    _trusted.clear()
    _warned = False
