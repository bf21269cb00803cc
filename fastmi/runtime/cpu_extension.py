"""The one native CPU library of fastmi (``fastmi_cpu``): every op's C++ kernels,
built with ninja on first use (``python -m fastmi.build`` builds it ahead of time) and
loaded once per process.

It also owns the CPU backward's gradient pool (csrc/common/cpu/grad_pool.h), which every
op's backward allocates from: :func:`empty_cache` frees what it holds.
"""

from __future__ import annotations

from .native_build import build, host_isa_flags, unavailable_reason

# Paths relative to csrc/. The kernels include no torch header: they compile with a
# plain C++ compiler, for any target GCC's vector extensions and OpenMP reach
# (tests/test_cpu_portable.py compiles them for the host and for aarch64). torch's build
# file names each object after its source's base name, so no two sources may share one
# (hence critic/cpu/critic_*.cpp beside infogan's kernels.cpp).
KERNEL_SOURCES = ("infogan/cpu/kernels.cpp", "critic/cpu/critic_schedule.cpp",
                  "critic/cpu/critic_forward.cpp", "critic/cpu/critic_backward.cpp")
# The module, the library-wide test hooks, then each op's tensor glue and autograd node.
SOURCES = (
    "fastmi_cpu.cpp",
    "common/cpu/hooks.cpp",
    *KERNEL_SOURCES,
    "infogan/cpu/binding.cpp",
    "infogan/cpu/autograd.cpp",
    "critic/cpu/critic_binding.cpp",
)

_extension = None
_build_error = None


def extension():
    """The compiled library; raises RuntimeError with the reason when it cannot build."""
    global _extension, _build_error
    if _extension is None and _build_error is None:
        try:
            _extension = build(
                "fastmi_cpu",
                list(SOURCES),
                what="the fused CPU kernels",
                cflags=["-O3", "-fopenmp", *host_isa_flags()],
                ldflags=["-fopenmp"],
            )
        except Exception as exc:  # a missing compiler or ninja: report it, let auto fall back
            _build_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
    if _extension is None:
        raise RuntimeError(f"the fused CPU kernels could not be built ({_build_error}); "
                           f"run `FASTMI_VERBOSE_BUILD=1 python -m fastmi.build` to see why")
    return _extension


def is_available():
    """None when the library loads (building it if needed), else why it does not."""
    return unavailable_reason(extension)


def empty_cache():
    """Frees the gradient buffers the CPU backward keeps for reuse (csrc/common/cpu/grad_pool.h:
    at most 8 freed buffers of 64 KiB or more, 512 MiB in all)."""
    if _extension is not None:
        _extension.empty_grad_pool()


def cached_bytes() -> int:
    """Bytes of freed gradient buffers the pool holds for the next backward."""
    return _extension.cached_grad_bytes() if _extension is not None else 0


def set_poison_outputs(on: bool) -> None:
    """Tests: fill every fresh gradient buffer with NaN before a kernel writes it."""
    extension().set_poison_outputs(on)
