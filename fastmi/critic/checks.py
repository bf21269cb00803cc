"""critic_bound's GPU checks: what ``python -m fastmi.validate`` runs on a user's GPU,
``benchmarks/gpu_check.sh`` on the project's, and tests/test_gpu_checks.py under pytest.

Each check compares a fused backend with the float64 oracle or checks a behaviour the
kernels promise (fastmi/runtime/validation.py says what a check is):

- correctness: loss, mi, accuracy, jsd_bound and the gradients of x, y, scale and bias
  against the reference in float64 on the same rounded inputs (fastmi/critic/testing.py),
  over every estimator, symmetric, N > B with an offset, bias, normalize, sizes that are
  not multiples of the blocks, each dtype, CLIP's scale 100 and SigLIP's bias -10;
- no host sync (``torch.cuda.set_sync_debug_mode("error")``), a zero row under
  ``normalize=True`` giving NaN without a sync, bit-identical results from run to run,
  inputs never written;
- concurrency: two forwards on two streams at once, and two CUDA graphs replayed on two
  streams at once, each equal to its own eager result, bit for bit;
- CUDA graph capture and replay on new data, and ``torch.compile(fullgraph=True)``;
- memory: at B = 65,536, d = 512, bfloat16, the peak above the inputs is O(B d) (the
  eager B x B scores would be 16 GiB of float32).

The checks take a device: on a CPU run (CI) the CUDA-only ones raise Skip and the others
run the same code against the backend given (the tiled one there).
"""

from __future__ import annotations

import functools

import torch

from ..runtime.graphs import capture_graph
from ..runtime.validation import (Check, assert_bitwise_equal, dtype_name, needs_cuda, replay_concurrently,
                                  replay_matches_eager, sync)
from .api import critic_bound
from .testing import check_backend, random_pair

F32, BF16, F16, F64 = torch.float32, torch.bfloat16, torch.float16, torch.float64

# (name, rows, cols, d, dtype, options); the quick set is the first QUICK
CORRECTNESS = [
    ("clip", 4096, 4096, 512, BF16, dict(estimator="infonce", symmetric=True, scale=100.0, normalize=True)),
    ("siglip", 3000, 3000, 512, BF16, dict(estimator="siglip", scale=10.0, bias=-10.0, normalize=True)),
    ("infonce N>B", 1000, 3001, 256, F32, dict(estimator="infonce", scale=14.3, offset=1000)),
    ("dv", 777, 1500, 200, F32, dict(estimator="dv", scale=2.0, offset=500)),
    ("smile", 1025, 1025, 130, F16, dict(estimator="smile", scale=3.0, clip=1.0, bias=0.2)),
    ("js", 500, 700, 64, F64, dict(estimator="js", scale=2.0, bias=0.5, offset=100)),
    ("nwj", 2049, 2049, 96, BF16, dict(estimator="nwj", scale=1.5, bias=-0.4)),
    ("siglip N>B", 999, 4000, 1024, BF16, dict(estimator="siglip", scale=10.0, bias=-10.0, offset=2001)),
    ("clip d=1024", 2048, 2048, 1024, F16, dict(estimator="infonce", symmetric=True, scale=50.0, normalize=True)),
    ("infonce tiny", 1, 2, 3, F32, dict(estimator="infonce", scale=1.0)),
    ("clip fp64", 300, 300, 70, F64, dict(estimator="infonce", symmetric=True, scale=20.0, normalize=True)),
]
QUICK = 5
CPU_ROWS = 64  # on a CPU run every case shrinks to at most this many rows (and columns in proportion)


def _shrunk(rows, cols, device):
    """The case's sizes on a CPU run: the same shape of problem, CPU_ROWS rows at most."""
    if torch.device(device).type == "cuda" or rows <= CPU_ROWS:
        return rows, cols, 1
    factor = -(-rows // CPU_ROWS)
    return -(-rows // factor), -(-cols // factor), factor


# ---- the checks ---------------------------------------------------------------------------------

def correctness(backend, device, rows, cols, dim, dtype, options) -> str:
    rows, cols, factor = _shrunk(rows, cols, device)
    options = dict(options)
    if "offset" in options:
        options["offset"] = min(options["offset"] // factor, cols - rows)
    x, y = random_pair(rows, cols, dim, offset=options.get("offset", 0), dtype=dtype, seed=rows + dim,
                       device=device)
    check_backend(backend, x, y, upstream=0.7, **options)
    sync(device)
    return f"B={rows} N={cols} d={dim} {dtype_name(dtype)}"


def _step(backend, x, y, scale, bias, **options) -> list:
    """One forward + backward: loss, mi, accuracy and the gradients (torch.autograd.grad:
    no .grad accumulation kernels)."""
    out = critic_bound(x, y, scale=scale, bias=bias, backend=backend, **options)
    wrt = [t for t in (x, y, scale, bias) if t is not None]
    return [out.loss, out.mi, out.accuracy, *torch.autograd.grad(out.loss, wrt)]


def _leaves(rows, cols, dim, device, seed, dtype=BF16, offset=0):
    x, y = random_pair(rows, cols, dim, offset=offset, dtype=dtype, seed=seed, device=device)
    scale = torch.tensor(10.0, device=device, requires_grad=True)
    bias = torch.tensor(-10.0, device=device, requires_grad=True)
    return x.requires_grad_(), y.requires_grad_(), scale, bias


SIGLIP = dict(estimator="siglip", normalize=True)
CLIP = dict(estimator="infonce", symmetric=True)


def no_host_sync(backend, device) -> str:
    needs_cuda(device, "torch.cuda.set_sync_debug_mode")
    leaves = _leaves(5000, 5000, 256, device, seed=1)
    for options in (SIGLIP, CLIP):
        _step(backend, *leaves, **options)  # compiles, first-call allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for options in (SIGLIP, CLIP):
            _step(backend, *leaves, **options)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    return "siglip (normalize) and clip forward + backward under torch.cuda.set_sync_debug_mode('error')"


def zero_row_gives_nan(backend, device) -> str:
    """normalize=True with a row of norm 0 on a GPU: no host read (docs/critic.md), the
    loss and the gradients NaN (0 / 0)."""
    needs_cuda(device, "the no-sync zero-row behaviour")
    x, y, scale, bias = _leaves(300, 300, 64, device, seed=2)
    with torch.no_grad():
        x[17] = 0.0
    _step(backend, x, y, scale, bias, **SIGLIP)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = _step(backend, x, y, scale, bias, **SIGLIP)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    if not torch.isnan(out[0]):
        raise AssertionError(f"loss should be NaN with a zero row, got {out[0].item()}")
    return "NaN loss, no sync"


def determinism_and_inputs(backend, device) -> str:
    rows = 20_001 if torch.device(device).type == "cuda" else 301
    leaves = _leaves(rows, rows, 128, device, seed=3)
    before = [t.detach().clone() for t in leaves]
    for options in (SIGLIP, CLIP):
        first = _step(backend, *leaves, **options)
        second = _step(backend, *leaves, **options)
        sync(device)
        assert_bitwise_equal(first, second, f"two identical {options['estimator']} calls")
    for leaf, copy in zip(leaves, before):
        if not torch.equal(leaf.detach(), copy):
            raise AssertionError("an input was modified")
    return f"B={rows}: two calls agree bit for bit (siglip, symmetric infonce); inputs untouched"


def _two_problems(device):
    return [_leaves(9000, 9000, 256, device, seed=seed) for seed in (11, 12)]


def concurrent_streams(backend, device) -> str:
    """Two forward + backward steps launched on two streams at once give each its own
    result (as computed alone), bit for bit: no launch shares state with another."""
    needs_cuda(device, "concurrent CUDA streams")
    problems = _two_problems(device)
    alone = [_step(backend, *p, **CLIP) for p in problems]
    torch.cuda.synchronize()
    streams = [torch.cuda.Stream() for _ in problems]
    for _ in range(5):  # several rounds: the two streams' launches interleave differently
        results = [None, None]
        for i, (problem, stream) in enumerate(zip(problems, streams)):
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                results[i] = _step(backend, *problem, **CLIP)
        torch.cuda.synchronize()
        for i in range(2):
            assert_bitwise_equal(results[i], alone[i], f"stream {i}")
    return "2 streams x 5 rounds: each equals its own eager result, bit for bit"


def concurrent_graphs(backend, device) -> str:
    needs_cuda(device, "CUDA graphs")
    problems = _two_problems(device)
    alone = [_step(backend, *p, **SIGLIP) for p in problems]
    graphs = [capture_graph(functools.partial(_step, backend, *p, **SIGLIP)) for p in problems]
    return replay_concurrently(graphs, alone, assert_bitwise_equal)


def cuda_graph(backend, device) -> str:
    needs_cuda(device, "CUDA graphs")
    leaves = _leaves(6000, 6000, 512, device, seed=4)
    step = functools.partial(_step, backend, *leaves, **CLIP)
    graph, captured = capture_graph(step)
    new = _leaves(6000, 6000, 512, device, seed=5)
    replay_matches_eager(graph, captured, step, lambda: [leaf.copy_(src) for leaf, src in zip(leaves, new)])
    return "B=6000 d=512 bfloat16 symmetric infonce: replay == eager, bit for bit, twice"


def compiled(backend, device) -> str:
    rows = 3000 if torch.device(device).type == "cuda" else 40
    x, y, scale, bias = _leaves(rows, rows, 64, device, seed=6, dtype=F32)

    def loss(x, y, scale, bias):
        out = critic_bound(x, y, scale=scale, bias=bias, backend=backend, **SIGLIP)
        return out.loss, out.mi, out.accuracy

    compile_backend = "inductor" if torch.device(device).type == "cuda" else "aot_eager"
    torch._dynamo.reset()
    fn = torch.compile(loss, fullgraph=True, dynamic=False, backend=compile_backend)
    results = []
    for f in (loss, fn):
        leaves = [t.detach().clone().requires_grad_() for t in (x, y, scale, bias)]
        outs = f(*leaves)
        results.append([*outs, *torch.autograd.grad(outs[0], leaves)])
    sync(device)
    for i, (a, b) in enumerate(zip(*results)):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6 * max(a.abs().max().item(), 1.0),
                                   msg=lambda m: f"output {i}: compiled vs eager: {m}")
    return f"B={rows} float32 siglip: fullgraph ({compile_backend}), matches eager"


def memory(backend, device) -> str:
    """Peak memory of a forward + backward above the inputs at B = 65,536, d = 512,
    bfloat16: the gradients (2 B d) and O(B d) workspaces, far from the 16 GiB of the
    eager B x B float32 scores."""
    needs_cuda(device, "torch.cuda.max_memory_allocated")
    rows, dim = 65_536, 512
    leaves = _leaves(rows, rows, dim, device, seed=7)
    for options in (CLIP, SIGLIP):
        _step(backend, *leaves, **options)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        _step(backend, *leaves, **options)
        torch.cuda.synchronize()
        above = torch.cuda.max_memory_allocated() - base
        inputs = 2 * rows * dim * 2
        if above > 2 * inputs + (256 << 20):
            raise AssertionError(f"{options['estimator']}: {above / 2**20:.0f} MiB above the inputs "
                                 f"({inputs / 2**20:.0f} MiB of inputs)")
    return f"B={rows} d={dim} bfloat16: {above / 2**20:.0f} MiB above the {inputs / 2**20:.0f} MiB of inputs"


def checks(backends, device="cuda", *, quick: bool = False, full: bool = False) -> list:
    """The checks of ``backends`` on ``device``: the quick set (for ``fastmi.validate``),
    the standard set, or ``full`` (the same here: every check fits a few seconds)."""
    out = []
    cases = CORRECTNESS[:QUICK] if quick else CORRECTNESS
    for backend in backends:
        for name, rows, cols, dim, dtype, options in cases:
            out.append(Check("critic", f"{backend}: oracle, {name} B={rows} N={cols} d={dim} {dtype_name(dtype)}",
                             functools.partial(correctness, backend, device, rows, cols, dim, dtype, options)))
        for name, fn in (("no host sync", no_host_sync), ("zero row gives NaN, no sync", zero_row_gives_nan),
                         ("bitwise determinism, inputs untouched", determinism_and_inputs),
                         ("two streams at once", concurrent_streams), ("two CUDA graphs at once", concurrent_graphs),
                         ("CUDA graph replay", cuda_graph), ("torch.compile fullgraph", compiled),
                         ("memory O(B d)", memory)):
            out.append(Check("critic", f"{backend}: {name}", functools.partial(fn, backend, device)))
    return out
