"""The providers a benchmark compares, and the operations it times.

Providers (each computes ``fastmi.infogan_loss`` and its gradients):

    eager                  backend="reference": composite PyTorch, the eager baseline
    cpu, triton, cuda      the fused backends available on the device (never the Triton
                           interpreter: triton runs on CUDA tensors only here)
    compile                torch.compile of the reference call, default mode
    compile-max-autotune   torch.compile(mode="max-autotune-no-cudagraphs"), GPU only
    <provider>+graph       GPU only: the operation captured once in a CUDA graph, then
                           replayed (the inputs stay at fixed addresses)

torch.compile runs with ``fullgraph=True`` (a graph break would time a partly eager
function) and ``dynamic=False`` (a graph specialized to each shape, as a training run
with a fixed batch size gets); :func:`configure_compile` raises dynamo's recompile
limit so that the many shapes of a benchmark session never fall back to eager.

Operations:

    fwd      the loss call, inputs requiring grad (it records what the backward needs)
    bwd      the backward of all three losses; the forward runs untimed before each round
    fwd_bwd  both, one after the other

:func:`make_runner` returns what pytest-benchmark times; :func:`timer` is the clock,
which synchronizes the GPU before reading the time.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple, Optional

import torch

from ..infogan.backends import available_backends
from ..infogan.api import infogan_loss
from ..infogan.spec import Codes, LatentSpec
from ..runtime.graphs import capture_graph
from .workloads import Inputs, Workload, upstream

COMPILE_MODES = {"compile": "default", "compile-max-autotune": "max-autotune-no-cudagraphs"}
GRAPH_SUFFIX = "+graph"
WARMUP_CALLS = 3


class Unsupported(Exception):
    """This provider cannot run this operation (the message says why)."""


def timer() -> float:
    """``time.perf_counter`` after ``torch.cuda.synchronize()`` once CUDA is in use: the
    time between two calls covers the GPU work enqueued between them, and a loop of
    iterations between them runs without a sync of its own."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def base_providers(device: str) -> list:
    """eager, the fused backends, then the compile providers, for ``device``."""
    fused = [b for b in available_backends(device) if b != "reference" and (device == "cuda" or b != "triton")]
    compiled = ["compile", "compile-max-autotune"] if device == "cuda" else ["compile"]
    return ["eager", *fused, *compiled]


def providers(device: str) -> list:
    """Every provider on ``device``: the base ones, and on CUDA a graph replay of each."""
    bases = base_providers(device)
    return bases + ([b + GRAPH_SUFFIX for b in bases] if device == "cuda" else [])


def split(provider: str) -> tuple:
    """(base provider, whether it is a CUDA-graph replay)."""
    if provider.endswith(GRAPH_SUFFIX):
        return provider[: -len(GRAPH_SUFFIX)], True
    return provider, False


def configure_compile() -> None:
    """Dynamo settings for a session that compiles one function per spec and shape:
    a high recompile limit, and an error (never a silent eager fallback) past it."""
    config = torch._dynamo.config
    limit = 1024
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), limit))
    if hasattr(config, "fail_on_recompile_limit_hit"):
        config.fail_on_recompile_limit_hit = True


_compiled: dict = {}


def compile_fn(fn: Callable, mode: str) -> Callable:
    """torch.compile of ``fn`` in ``mode`` ("default" or a torch.compile mode), as every
    compile provider uses it: one graph per shape, no graph break."""
    return torch.compile(fn, mode=None if mode == "default" else mode, fullgraph=True, dynamic=False)


def _compiled_reference(mode: str, spec: LatentSpec, **options):
    """torch.compile of the reference loss for ``spec``; one object per (mode, spec,
    options), shared by every shape and operation (dynamo caches a graph per shape)."""
    key = (mode, spec, tuple(sorted(options.items())))
    fn = _compiled.get(key)
    if fn is None:
        def loss(real, fake, q, categorical, bernoulli, continuous):
            out = infogan_loss(real, fake, q, Codes(categorical, bernoulli, continuous), spec,
                               backend="reference", **options)
            return out.discriminator, out.generator, out.info

        fn = compile_fn(loss, mode)
        _compiled[key] = fn
    return fn


def loss_function(base: str, spec: LatentSpec, **options) -> Callable:
    """``fn(real, fake, q, codes) -> (discriminator, generator, info)`` for a base provider."""
    if base in COMPILE_MODES:
        compiled = _compiled_reference(COMPILE_MODES[base], spec, **options)
        return lambda real, fake, q, codes: compiled(real, fake, q, *codes[:3])
    backend = "reference" if base == "eager" else base

    def fn(real, fake, q, codes):
        out = infogan_loss(real, fake, q, codes, spec, backend=backend, **options)
        return out.discriminator, out.generator, out.info

    return fn


class Runner(NamedTuple):
    """``target(*setup())`` is one timed call (``setup`` is None when the target takes no
    arguments); ``result`` names what the target returns: "losses" or "grads"."""

    target: Callable
    setup: Optional[Callable]
    result: str


def make_runner(provider: str, op: str, work: Workload, inputs: Inputs) -> Runner:
    """The timed call of ``op`` for ``provider`` on ``inputs``. A CUDA-graph provider is
    warmed up on a side stream and captured here."""
    base, graph = split(provider)
    fn = loss_function(base, work.spec)
    leaves = inputs.leaves
    args = (*leaves, inputs.codes)
    up = upstream(work.device)

    if op == "fwd":
        def body():
            return fn(*args)
        result = "losses"
    elif op == "fwd_bwd":
        def body():
            return torch.autograd.grad(fn(*args), leaves, up)
        result = "grads"
    elif op == "bwd":
        result = "grads"
        if not graph:
            return Runner(lambda outs: torch.autograd.grad(outs, leaves, up), lambda: ((fn(*args),), {}), result)
        if base in COMPILE_MODES:
            raise Unsupported("a compiled backward donates its saved buffers, so it cannot be replayed on the "
                              "same saved tensors (retain_graph); the compile providers' graph replay is timed "
                              "in fwd and fwd_bwd")
        outs = fn(*args)  # eager, before the capture: the saved tensors stay alive with outs

        def body():
            return torch.autograd.grad(outs, leaves, up, retain_graph=True)
    else:
        raise ValueError(f"op must be one of fwd, bwd, fwd_bwd, got {op!r}")

    if not graph:
        return Runner(body, None, result)
    return Runner(_capture(body), None, result)


def _capture(body: Callable) -> Callable:
    """A function that replays ``body``'s CUDA graph and returns its static outputs."""
    graph, static = capture_graph(body, WARMUP_CALLS)

    def replay():
        graph.replay()
        return static

    replay.graph = graph  # keeps the graph (and its memory pool) alive as long as the runner
    return replay


def warm_up(runner: Runner, calls: int = WARMUP_CALLS) -> float:
    """Runs the target ``calls`` times (builds, compiles, first allocations; two when a
    call takes over 0.25 s) and returns the seconds the last call took."""
    elapsed = 0.0
    for i in range(calls):
        args, kwargs = runner.setup() if runner.setup else ((), {})
        start = timer()
        runner.target(*args, **kwargs)
        elapsed = timer() - start
        if i >= 1 and elapsed > 0.25:  # a slow call: two were enough to reach the steady state
            break
    return elapsed
