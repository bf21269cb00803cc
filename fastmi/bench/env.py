"""The machine and versions a benchmark result records."""

from __future__ import annotations

import datetime
import functools
import os
import platform
import subprocess
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name as lscpu prints it (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    """"NVIDIA H200" for a GPU; "AMD EPYC, 2 cores" for the CPU."""
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"{cpu_model()}, {os.cpu_count()} cores"


def versions() -> dict:
    out = {"torch": torch.__version__, "python": platform.python_version()}
    try:
        import triton
        out["triton"] = triton.__version__
    except Exception as exc:  # not installed, or broken
        out["triton"] = f"unavailable ({type(exc).__name__})"
    from .. import __version__
    out["fastmi"] = __version__
    return out


def git_commit(path: Path = Path(__file__).resolve().parent) -> str:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except Exception:
        out = ""
    return out or "unknown"


def nvcc_version() -> str:
    """"nvcc 13.0, V13.0.88" from the nvcc the cuda backend builds with."""
    try:
        from ..infogan import cuda
        nvcc = cuda.find_cuda_home() / "bin" / "nvcc"
        text = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True).stdout
        return "nvcc " + next(line for line in text.splitlines() if "release" in line).split("release")[-1].strip()
    except Exception as exc:
        return f"unavailable ({exc})"


def gpu() -> dict:
    """GPU 0's name, capability, SM count, memory and driver (empty without a GPU)."""
    if not torch.cuda.is_available():
        return {}
    p = torch.cuda.get_device_properties(0)
    out = {"gpu": p.name, "capability": f"{p.major}.{p.minor}", "sms": p.multi_processor_count,
           "memory_gib": round(p.total_memory / 2**30, 1)}
    try:
        out["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        out["driver"] = "unknown"
    return out


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@functools.lru_cache(maxsize=None)
def _describe(device: str) -> tuple:
    info = {"device": device, "device_name": device_name(device), **versions(), "fastmi_commit": git_commit(),
            "threads": torch.get_num_threads(), "cpu": cpu_model(), "cpu_count": os.cpu_count(), "date": now(),
            "nvcc": nvcc_version()}
    if device == "cuda":
        info["torch_cuda"] = torch.version.cuda
        info["driver"] = gpu().get("driver", "unknown")
    else:
        # libgomp's spin-then-sleep default makes every 2-thread region of a 2-vCPU VM
        # several times slower (benchmarks/core_speed.py); a CPU result says which it ran with
        info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "default")
    return tuple(info.items())


def describe(device: str) -> dict:
    """Everything a result records about where it ran (looked up once per process: git,
    nvcc and nvidia-smi are subprocesses)."""
    return dict(_describe(device))
