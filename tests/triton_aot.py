"""Ahead-of-time compilation of recorded Triton launches for sm_90, shared by the AOT tests
of every op (tests/test_triton_aot.py, tests/test_critic_triton_aot.py).

A backend's launch function is run with its kernels swapped for :class:`Recorder`s, so the
arguments are exactly those the backend passes; :func:`specializations` specializes each
recorded launch as ``JITFunction.run`` does on a GPU (triton's own binder: pointer dtypes,
int and alignment specialization, constexprs, launch options), and
:func:`compile_sm90` compiles one with ``triton.compile(ASTSource(...),
target=GPUTarget("cuda", 90, 32))`` and counts registers and spills by running the bundled
ptxas with ``-v`` on the PTX (CompiledKernel.n_spills needs a loaded kernel, i.e. a GPU).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from typing import NamedTuple

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import make_backend
from triton.runtime.jit import create_function_from_signature

TARGET = GPUTarget("cuda", 90, 32)


class Recorder:
    """Stands in for a kernel: ``kernel[grid](*args, **kwargs)`` records the launch."""

    def __init__(self, name, launches):
        self.name, self.launches = name, launches

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append((self.name, args, kwargs))
        return launch


class Specialization(NamedTuple):
    name: str           # the kernel's key in the caller's {name: kernel}
    signature: dict
    constexprs: dict
    attrs: dict
    options: object     # the backend's compile options (num_warps, num_stages, ...)

    def named_constexprs(self) -> dict:
        """The constexprs by parameter name."""
        arg_names = list(self.signature)
        return {arg_names[path[0]]: value for path, value in self.constexprs.items()}


def specializations(launches, kernels: dict) -> dict:
    """{key: Specialization}, one per distinct compile of the recorded ``launches``
    [(name, args, kwargs)], with ``kernels`` = {name: JITFunction}."""
    backend = make_backend(TARGET)
    found = {}
    for name, args, kwargs in launches:
        kernel = kernels[name]
        binder = create_function_from_signature(kernel.signature, kernel.params, backend)
        bound, specialization, options = binder(*args, **kwargs)
        # as JITFunction._pack_args does before compiling
        options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
        key = (name, tuple(signature.items()), tuple(sorted((k, repr(v)) for k, v in constexprs.items())),
               repr(sorted(attrs.items())), options.num_warps, options.num_stages)
        found.setdefault(key, Specialization(name, signature, constexprs, attrs, options))
    return found


def ptxas_report(ptx: str) -> tuple:
    """(registers, spill store bytes, spill load bytes) from ``ptxas -v`` for sm_90a."""
    ptxas = triton.knobs.nvidia.ptxas.path
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        run = subprocess.run([ptxas, "-v", "--gpu-name=sm_90a", src, "-o", os.path.join(tmp, "kernel.cubin")],
                             capture_output=True, text=True, check=True)
    log = run.stderr + run.stdout
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    regs = re.search(r"Used (\d+) registers", log)
    assert spills and regs, log
    return int(regs.group(1)), int(spills.group(1)), int(spills.group(2))


class Compiled(NamedTuple):
    registers: int
    spill_stores: int
    spill_loads: int
    shared: int         # bytes of shared memory
    ptx: str


def compile_sm90(kernel, spec: Specialization) -> Compiled:
    """``spec`` of ``kernel`` compiled for sm_90 ahead of time, with ptxas's counts."""
    src = triton.compiler.ASTSource(fn=kernel, signature=spec.signature, constexprs=spec.constexprs,
                                    attrs=spec.attrs)
    compiled = triton.compile(src, target=TARGET, options=spec.options.__dict__)
    assert compiled.metadata.target == TARGET
    assert compiled.asm["cubin"], "no cubin"
    regs, spill_stores, spill_loads = ptxas_report(compiled.asm["ptx"])
    return Compiled(regs, spill_stores, spill_loads, compiled.metadata.shared, compiled.asm["ptx"])


class Sm90Driver:
    """Stands in for triton's GPU driver while torch.compile traces: torch asks it only for
    the target, to compile the kernels to TTIR and find which arguments they write."""

    def get_current_target(self):
        return TARGET


_PENDING: dict = {}


def _compile_pending(key):
    kernel, spec = _PENDING[key]
    try:
        return key, compile_sm90(kernel, spec)._replace(ptx="")
    except Exception as exc:  # reported by the test of that specialization
        return key, f"{type(exc).__name__}: {exc}"


def compile_all(kernels: dict, specs: dict, workers: int = 0) -> dict:
    """{key: Compiled, or the compile error's text} for every specialization of ``specs``,
    compiled in ``workers`` forked processes (default: one per CPU), since a large matrix
    takes minutes one at a time."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _PENDING.clear()
    _PENDING.update({key: (kernels[spec.name], spec) for key, spec in specs.items()})
    workers = workers or os.cpu_count() or 1
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return dict(pool.map(_compile_pending, list(specs)))
    finally:
        _PENDING.clear()
