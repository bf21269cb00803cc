"""The CUDA device rules of fastmi's native GPU code: which toolkit builds it, for which
architectures, and why it cannot run here.

The CUDA kernels are compiled with ninja on first use for the architecture of every
visible GPU. That needs a CUDA build of torch, a GPU of compute capability 7.0 or newer,
and nvcc: from ``CUDA_HOME`` (or ``CUDA_PATH``) when set, else the nvcc on ``PATH``, else
/usr/local/cuda.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

import torch

MIN_CAPABILITY = (7, 0)


def find_cuda_home() -> Path:
    """The CUDA toolkit to build with; raises RuntimeError naming what is missing.

    Mirrors torch.utils.cpp_extension (CUDA_HOME, CUDA_PATH, the nvcc on PATH,
    /usr/local/cuda) but also accepts an nvcc on PATH that is a wrapper script outside
    the toolkit, by checking that the candidate holds bin/nvcc and include/cuda_runtime.h.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(var)
        if value:
            home = Path(value)
            if not (home / "bin" / "nvcc").exists():
                raise RuntimeError(f"nvcc (the CUDA compiler) was not found: {var}={value} has no bin/nvcc; "
                                   f"point {var} at a CUDA toolkit or unset it")
            return home
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        candidates.append(Path(os.path.realpath(nvcc)).parent.parent)
    candidates.append(Path("/usr/local/cuda"))
    for home in candidates:
        if (home / "bin" / "nvcc").exists() and (home / "include" / "cuda_runtime.h").exists():
            return home
    raise RuntimeError("nvcc (the CUDA compiler) was not found: set CUDA_HOME to a CUDA toolkit or put its "
                       "bin/ on PATH (backend='triton' needs no compiler)")


def device_reason() -> Optional[str]:
    """Why no CUDA kernel can run here (torch without CUDA, no GPU, too old a GPU), or None."""
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    if not torch.cuda.is_available():
        return "no CUDA device is visible (torch.cuda.is_available() is False)"
    for index in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(index)
        if (major, minor) < MIN_CAPABILITY:
            return (f"GPU {index} ({torch.cuda.get_device_name(index)}) has compute capability "
                    f"{major}.{minor}; the kernels need {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer")
    return None


def arch_flags() -> list:
    """-gencode for the architecture of every visible GPU (sm_90 for an H100 / H200)."""
    caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    return [f"-gencode=arch=compute_{ma}{mi},code=sm_{ma}{mi}" for ma, mi in caps]
