"""Shared test helpers: fastmi.infogan.testing (random inputs, the float64 oracle,
per-dtype tolerances), which ``python -m fastmi.validate`` runs on a user's GPU too."""

from fastmi.infogan.testing import (BERN_ONLY, CONT_ONLY, FLOAT32, HUGE, MNIST, MULTI, RICH, TOLERANCES, WIDE,  # noqa: F401
                                    Case, Result, assert_close, assert_matches_oracle, check_backend, evaluate,
                                    oracle, random_case, random_upstream)


def emulate_cuda_backend(monkeypatch, ext=None):
    """Makes ``backend="cuda"`` serve CPU tensors with the CUDA kernels' CPU emulation (the
    same kernel sources, csrc/infogan/cuda/emulated.cpp) for this test; returns the
    emulation's extension. Skips the test when the emulation does not build here."""
    import pytest

    from fastmi.infogan import cuda
    from fastmi.infogan.backends import REGISTRY

    if ext is None:
        try:
            ext = cuda.emulation_extension()
        except Exception as exc:  # no C++ compiler: nothing to emulate with
            pytest.skip(f"the CPU emulation of the CUDA kernels does not build here: {exc}")
    monkeypatch.setattr(cuda, "devices", lambda: ("cuda", "cpu"))
    monkeypatch.setattr(cuda, "extension", lambda: ext)
    for cache in ("_resolved", "_entries", "_limits"):
        monkeypatch.setattr(REGISTRY, cache, {})
    return ext
