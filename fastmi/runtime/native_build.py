"""Just-in-time builds of fastmi's native code with ninja, cached on disk.

The build directory is named after a hash of the sources, the flags and the torch
version, so a change to any of them builds afresh and an unchanged tree loads the
cached library at once. ``FASTMI_CACHE_DIR`` moves the cache (default
``~/.cache/fastmi``); ``FASTMI_VERBOSE_BUILD=1`` shows the compiler's output.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import torch

import fastmi.csrc

SOURCE_DIR = Path(fastmi.csrc.__file__).resolve().parent


def cache_root() -> Path:
    if os.environ.get("FASTMI_CACHE_DIR"):
        return Path(os.environ["FASTMI_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastmi"


def _ensure_ninja_on_path() -> None:
    # pip's ninja package puts the binary in its own folder, which is on PATH only in an
    # activated environment; torch's builder looks it up on PATH.
    try:
        import ninja
    except ImportError:
        return
    bin_dir = getattr(ninja, "BIN_DIR", None)
    if bin_dir and bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def _digest(files, flags) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(str(f.relative_to(SOURCE_DIR)).encode())
        h.update(f.read_bytes())
    h.update(repr(flags).encode())
    h.update(torch.__version__.encode())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


def build(name: str, sources, *, what: str, cflags=(), ldflags=(), cuda_cflags=None):
    """Builds (or loads from the cache) the extension ``name`` from ``sources`` (paths
    relative to csrc/), printing one line while a build runs."""
    from torch.utils import cpp_extension

    _ensure_ninja_on_path()
    srcs = [SOURCE_DIR / s for s in sources]
    headers = [p for p in SOURCE_DIR.rglob("*") if p.suffix in (".h", ".cuh")]
    flags = (list(cflags), list(ldflags), list(cuda_cflags or ()))
    build_dir = cache_root() / f"{name}-{_digest(srcs + headers, flags)}"
    build_dir.mkdir(parents=True, exist_ok=True)
    cached = any(build_dir.glob(f"{name}*.so")) or any(build_dir.glob(f"{name}*.pyd"))
    if not cached:
        print(f"fastmi: building {what} with ninja (first use; cached in {build_dir}) ...",
              file=sys.stderr, flush=True)
    kwargs = dict(extra_cuda_cflags=list(cuda_cflags)) if cuda_cflags is not None else {}
    return cpp_extension.load(
        name=name,
        sources=[str(s) for s in srcs],
        extra_cflags=list(cflags),
        extra_ldflags=list(ldflags),
        extra_include_paths=[str(SOURCE_DIR)],
        build_directory=str(build_dir),
        verbose=os.environ.get("FASTMI_VERBOSE_BUILD") == "1",
        **kwargs,
    )


def host_isa_flags() -> list:
    """Vector-ISA flags for the host compiler, from what torch detected on this CPU (the
    cache key includes them, so a shared home directory never hands an AVX-512 build to
    an AVX2 machine)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512"):
        return ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"]
    if capability == "AVX2":
        return ["-mavx2", "-mfma", "-mf16c"]
    return []


def unavailable_reason(extension):
    """None when ``extension()`` loads (building it if needed), else its RuntimeError's text."""
    try:
        extension()
    except RuntimeError as exc:
        return str(exc)
    return None
