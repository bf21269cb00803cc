"""The InfoGAN loss's fused CUDA C++ backend (csrc/infogan/cuda).

The forward computes every per-row term of ARCHITECTURE.md section 3, reduces them
deterministically (one launch for a one-block grid; else per-block partial sums in the
call's own workspace that a second, one-block launch adds in a fixed order) and writes
the three losses and the stats vector

    [jsd_bound, mi_bernoulli, mi_continuous, mi_categorical_1..m]

to device memory (float32, or float64 for float64 inputs); the backward recomputes
softmax / sigmoid from the inputs, reads the
three upstream grads from device memory and writes the gradients of section 5. Neither
syncs with the host nor allocates by data, so both run inside CUDA graphs; both run
under ``torch.compile(fullgraph=True)`` as the custom ops ``fastmi::cuda_forward`` and
``fastmi::cuda_backward`` (fastmi/infogan/ops.py). csrc/infogan/cuda/launch.cu
documents the layouts and the files, forward.cuh the reduction.

Invalid codes (a categorical index outside [0, K), a bernoulli value other than 0 or 1)
are never used as an address: the read is clamped, and the term, hence the losses and
that code's gradient block, is NaN. (The CPU backends raise instead; checking here would
cost a host sync per call.)

Concurrency: no launch shares state with another (the workspace is each call's own), so
forwards on concurrent streams, threads or CUDA graphs cannot disturb each other.

The kernels are compiled with ninja on first use, for the architecture of every visible
GPU (``python -m fastmi.build --cuda`` builds them ahead of time), by the toolkit that
fastmi/runtime/cuda_toolkit.py finds. :func:`is_available` names whatever is missing,
and ``backend="auto"`` then picks another backend.

:func:`emulation_extension` builds the same kernel source for the CPU
(csrc/common/cuda/emulation.h runs each CUDA thread as a fiber), which is how the tests check
the kernels without a GPU.
"""

from __future__ import annotations


from ..runtime.cuda_toolkit import arch_flags, device_reason, find_cuda_home
from ..runtime.native_build import SOURCE_DIR, build, unavailable_reason
from .ops import define_extension_ops


def devices() -> tuple:
    return ("cuda",)


# nvcc flags of every build. -prec-div=false: float division is div.full.f32 (within 2
# ulp), with no slow-path subroutine; a kernel that calls one gets a register budget that
# made ptxas spill. Every divisor in the kernels lies in [1, 2^40] (sigmoid's 1 + e^-|x|,
# a softmax sum, a row count), where div.full.f32 is exact to 2 ulp.
NVCC_FLAGS = ("-O3", "-std=c++17", "-prec-div=false")
SOURCES = ("infogan/cuda/binding.cpp", "infogan/cuda/launch.cu")
# The kernels: launch.cu, the one CUDA translation unit, and the .cuh files it includes.
KERNEL_DIR = SOURCE_DIR / "infogan" / "cuda"

_extension = None
_build_error = None
_emulated = None


def extension():
    """The compiled extension, built with ninja on first use; raises RuntimeError with the
    reason when there is no GPU, no nvcc, or the build fails."""
    global _extension, _build_error
    if _extension is not None:
        return _extension
    reason = device_reason()
    if reason is None and _build_error is None:
        try:
            home = find_cuda_home()
        except RuntimeError as exc:
            reason = str(exc)
        else:
            from torch.utils import cpp_extension

            # torch guessed its CUDA_HOME at import, from PATH alone; build with this one
            cpp_extension.CUDA_HOME = str(home)
            try:
                _extension = build("fastmi_cuda", list(SOURCES), what="the fused CUDA kernels", cflags=["-O3"],
                                   cuda_cflags=[*NVCC_FLAGS, *arch_flags()])
                return _extension
            except Exception as exc:  # a compiler error: report it, let auto fall back
                text = str(exc).strip()
                _build_error = f"{type(exc).__name__}: {text.splitlines()[-1] if text else ''}"
    if reason is None:
        reason = (f"the build failed ({_build_error}); run `FASTMI_VERBOSE_BUILD=1 python -m fastmi.build --cuda` "
                  f"to see why")
    raise RuntimeError(f"the fused CUDA kernels are unavailable: {reason}")


def is_available():
    return unavailable_reason(extension)


# Categorical codes one call may hold (csrc/infogan/cuda/infogan_cuda.h FASTMI_CUDA_MAX_CAT):
# their class counts travel in the kernel argument, which CUDA caps at 4 KB.
MAX_CATEGORICAL = 128


def cannot_run(problem):
    """Why this backend cannot run a call (more categorical codes than the kernel argument
    holds), or None. backend='auto' then uses the reference; 'triton' has no such cap."""
    if problem.n_categorical > MAX_CATEGORICAL:
        return (f"the cuda backend takes at most {MAX_CATEGORICAL} categorical codes per call (their sizes travel "
                f"in the kernel argument), got {problem.n_categorical}; backend='triton' has no such limit")
    return None


def emulation_extension():
    """The same kernels and binding compiled for the CPU (csrc/common/cuda/emulation.h), taking
    CPU tensors: ``forward_op``, ``backward_op``, ``describe`` and ``set_override``
    as in :func:`extension`, and ``defer_launches`` / ``set_stream`` / ``run_deferred``,
    which run queued launches with their blocks interleaved across emulated streams. For
    tests; slow (a fiber per CUDA thread)."""
    global _emulated
    if _emulated is None:
        _emulated = build("fastmi_cuda_emulated", ["infogan/cuda/binding.cpp", "infogan/cuda/emulated.cpp"],
                          what="the CPU emulation of the CUDA kernels", cflags=list(EMULATION_CFLAGS))
    return _emulated


# Host-compiler flags of the emulation build. emulated.cpp includes launch.cu and its .cuh
# files, none of them a listed source: native_build's key hashes every file under csrc/,
# so an edit to any of them rebuilds.
EMULATION_CFLAGS = ("-O2", "-DFASTMI_CUDA_EMULATION")


ops = define_extension_ops("cuda", lambda: extension())  # looked up per call: tests swap it


def loss(inputs, problem):
    """``(discriminator, generator, info, MIStats)``: the eager autograd.Function, or the
    custom op under torch.compile."""
    return ops.loss(inputs, problem)
