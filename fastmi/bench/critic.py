"""critic_bound's CPU benchmarks, the shared pieces: providers, inputs, and one
forward + backward measured in a child process (time and peak memory).

Used by benchmarks/bench_critic.py (the pytest-benchmark suite) and
benchmarks/critic_cpu.py (the issue's targets, side by side, as a report).

Losses and providers (each step computes the loss and the gradients of both features,
the log scale and, for SigLIP, the bias; features are L2-normalised rows, y = x + noise,
the logit scale a float32 parameter exponentiated as CLIP does):

    clip    fastmi      critic_bound(estimator="infonce", symmetric=True, backend="cpu")
            reference   the same with backend="reference" (composite PyTorch, stores B x B)
            compile     torch.compile(fullgraph=True, dynamic=False) of the reference call
            openclip    OpenCLIP 3.3.0's ClipLoss (loss.py from the wheel in .whl/, by path)
    siglip  the same four with estimator="siglip" and OpenCLIP's SigLipLoss

Peak memory (:func:`measure_in_child`): one process per case, which builds the inputs,
warms the provider up (the build, torch.compile), frees the fused backend's gradient
pool, and before each timed step resets the kernel's resident-set high-water mark
(``/proc/self/clear_refs``) and reads ``VmHWM - VmRSS`` right after it: the memory a step
adds above the inputs, gradients included (the largest over the steps; the finiteness
check of the results comes after the reading). glibc keeps freed small blocks and reuses them unseen, so the
child runs with ``MALLOC_MMAP_THRESHOLD_=65536``: every buffer of 64 KiB or more is fresh
memory from the kernel and goes back on free (for every provider alike).

Run as ``python -m fastmi.bench.critic '<json spec>'``, it is that child: one JSON line out.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F

LOSSES = ("clip", "siglip")
PROVIDERS = ("fastmi", "reference", "compile", "openclip")
OPENCLIP_VERSION = "3.3.0"
REPO = Path(__file__).resolve().parents[2]
WHEELS = Path(os.environ.get("FASTMI_OPENCLIP_WHEELS", REPO / ".whl"))
INIT_SCALE, INIT_BIAS = 1 / 0.07, -10.0
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# The score matrices a provider that stores them holds at its peak, in float32 B x N
# units (measured here at B = 4,096: the reference and OpenCLIP 4-6, torch.compile 3-4),
# rounded up; with the machine's 24 GiB less headroom this decides what is skipped.
STORED_MATRICES = {"reference": 7, "compile": 5, "openclip": 7}
MEMORY_BUDGET = 18 << 30


def counted_flops(rows: int, cols: int, dim: int) -> float:
    """GEMM FLOPs of one forward + backward: 2 B N d forward; the backward recomputes the
    scores (2 B N d) and forms dx and dy (2 B N d each): 8 B N d in all."""
    return 8.0 * rows * cols * dim


def skip_reason(provider: str, rows: int) -> Optional[str]:
    """Why ``provider`` cannot run at B = ``rows`` here (its stored matrices), or None."""
    matrices = STORED_MATRICES.get(provider)
    if matrices is None:
        return None
    need = matrices * rows * rows * 4
    if need > MEMORY_BUDGET:
        return (f"{provider} stores B x B scores: about {need / 2**30:.0f} GiB at B = {rows:,} "
                f"(the machine has 24 GiB)")
    return None


def load_openclip():
    """OpenCLIP's open_clip/loss.py as a module, or the reason it is not here (its package
    __init__ pulls torchvision: the one file is loaded by path from the wheel)."""
    for wheel in sorted(WHEELS.glob(f"open_clip_torch-{OPENCLIP_VERSION}-*.whl")):
        origin = f"{wheel}/open_clip/loss.py"
        module = types.ModuleType("open_clip_loss")
        module.__file__ = origin
        sys.modules[module.__name__] = module  # torch.compile looks a traced function's module up by name
        exec(compile(zipfile.ZipFile(wheel).read("open_clip/loss.py"), origin, "exec"), module.__dict__)
        return module
    return (f"no open_clip_torch-{OPENCLIP_VERSION} wheel in {WHEELS} "
            f"(pip download --no-deps open-clip-torch=={OPENCLIP_VERSION} -d .whl)")


class Inputs(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor
    log_scale: torch.Tensor
    bias: torch.Tensor


def make_inputs(rows: int, dim: int, dtype=torch.float32, seed: int = 0) -> Inputs:
    """Paired unit rows (y = x + noise, normalised), as two CLIP towers emit them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=g)
    y = x + torch.randn(rows, dim, generator=g)
    x, y = (F.normalize(t, dim=-1).to(dtype).requires_grad_() for t in (x, y))
    log_scale = torch.tensor(math.log(INIT_SCALE), requires_grad=True)
    bias = torch.tensor(INIT_BIAS, requires_grad=True)
    return Inputs(x, y, log_scale, bias)


def loss_fn(loss: str, provider: str, openclip=None) -> Callable:
    """``fn(inputs) -> loss`` of a provider (ValueError with the reason when unavailable)."""
    import fastmi

    if provider in ("fastmi", "reference", "compile"):
        backend = "cpu" if provider == "fastmi" else "reference"
        if loss == "clip":
            def fn(x, y, log_scale, bias):
                return fastmi.critic_bound(x, y, estimator="infonce", symmetric=True, scale=log_scale.exp(),
                                           backend=backend).loss
        else:
            def fn(x, y, log_scale, bias):
                return fastmi.critic_bound(x, y, estimator="siglip", scale=log_scale.exp(), bias=bias,
                                           backend=backend).loss
    else:
        if not isinstance(openclip, types.ModuleType):
            raise ValueError(openclip or "OpenCLIP's loss.py was not loaded")
        if loss == "clip":
            criterion = openclip.ClipLoss()
            def fn(x, y, log_scale, bias):  # noqa: E306
                return criterion(x, y, log_scale.exp())
        else:
            criterion = openclip.SigLipLoss()
            def fn(x, y, log_scale, bias):  # noqa: E306
                return criterion(x, y, log_scale.exp(), bias)
    if provider == "compile":
        fn = torch.compile(fn, fullgraph=True, dynamic=False)
    return lambda inputs: fn(*inputs)


def wrt(loss: str, inputs: Inputs) -> list:
    return [inputs.x, inputs.y, inputs.log_scale] + ([inputs.bias] if loss == "siglip" else [])


def timed(body: Callable) -> float:
    """Seconds one call of ``body`` takes."""
    started = time.perf_counter()
    body()
    return time.perf_counter() - started


def step(fn: Callable, loss: str, inputs: Inputs) -> tuple:
    """One forward + backward: (loss, gradients), by torch.autograd.grad."""
    value = fn(inputs)
    return value.detach(), torch.autograd.grad(value, wrt(loss, inputs))


# ---- the child ------------------------------------------------------------------------------

def _status_kib(field: str) -> Optional[int]:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def _reset_high_water_mark() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def run_case(spec: dict) -> dict:
    """The child's work: ``spec`` has loss, provider, rows, dim, dtype, threads, steps,
    warmup_rows (0: warm up at full size, which torch.compile needs)."""
    torch.set_num_threads(int(spec.get("threads", 2)))
    if spec["provider"] == "compile":
        from .providers import configure_compile
        configure_compile()
    loss, provider, rows, dim = spec["loss"], spec["provider"], int(spec["rows"]), int(spec["dim"])
    dtype = DTYPES[spec.get("dtype", "float32")]
    fn = loss_fn(loss, provider, load_openclip() if provider == "openclip" else None)
    warm_rows = int(spec.get("warmup_rows") or rows)
    started = time.perf_counter()
    step(fn, loss, make_inputs(warm_rows, dim, dtype, seed=1))
    warmup_s = time.perf_counter() - started
    inputs = make_inputs(rows, dim, dtype)
    if provider == "fastmi":
        from ..runtime import cpu_extension
        cpu_extension.set_poison_outputs(False)
        cpu_extension.empty_cache()
    inputs_bytes = sum(t.numel() * t.element_size() for t in inputs)
    times, peaks, value, finite = [], [], None, True
    for _ in range(int(spec.get("steps", 3))):
        reset = _reset_high_water_mark()
        base_kib = _status_kib("VmRSS")
        started = time.perf_counter()
        value, grads = step(fn, loss, inputs)
        times.append(time.perf_counter() - started)
        if reset:  # read before the check below, whose temporaries (isfinite's abs copy) are not the step's
            peaks.append((_status_kib("VmHWM") - base_kib) * 1024)
        finite = finite and bool(torch.isfinite(value)) and all(bool(torch.isfinite(g).all()) for g in grads)
        del grads
    return {**spec, "seconds": statistics.median(times), "times": times, "warmup_s": warmup_s,
            "peak_above_inputs": max(peaks) if peaks else None,
            "inputs_bytes": inputs_bytes, "loss_value": float(value), "finite": finite,
            "threads_used": torch.get_num_threads()}


def child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # benchmarks/README.md: 2-thread regions on this VM
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"         # module docstring: freed buffers go back, are seen again
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def measure_in_child(spec: dict, timeout_s: float = 1800) -> dict:
    """:func:`run_case` in a fresh process; its result, or ``{"error": ...}``."""
    try:
        done = subprocess.run([sys.executable, "-m", "fastmi.bench.critic", json.dumps(spec)], capture_output=True,
                              text=True, timeout=timeout_s, env=child_env(), cwd=str(REPO))
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout_s:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        killed = " (killed: out of memory?)" if done.returncode in (-9, 137) else ""
        return {**spec, "error": f"exit {done.returncode}{killed}: {tail}"}
    return json.loads(lines[-1])


if __name__ == "__main__":
    print(json.dumps(run_case(json.loads(sys.argv[1]))), flush=True)
