"""Forward + backward speed of the fused CPU backend against eager PyTorch and
torch.compile, side by side in one process, and the cost of the op boundary.

    python benchmarks/core_speed.py [--batches 64 65536] [--threads 2] [--json out.json]

One step = ``fastmi.infogan_loss(...)`` then ``torch.autograd.backward`` of the three
losses with upstream grads. Each provider is timed over interleaved rounds and the best
round counts (the usual microbenchmark estimate of the intrinsic cost on a noisy VM);
interleaving makes a burst of load hit every provider alike.

On the 2-vCPU VMs this project runs on, libgomp's default wait policy makes every
2-thread OpenMP region (torch's own ops too) several times slower than 1 thread; run
with ``OMP_WAIT_POLICY=PASSIVE`` (or ``--threads 1``) to measure the code, not that.

Providers:
  cpu          the public API, backend="cpu" (eager calls use the C++ autograd node)
  eager        the public API, backend="reference" (composite PyTorch)
  compile      torch.compile of the reference call (default mode)
  cpu-pyfn     the same C++ kernels behind a Python torch.autograd.Function
  cpu-op       the same C++ kernels called through the torch.library custom op
               (dispatcher + Python autograd registration), as torch.compile sees them
  cpu-no-pool  "cpu" with the gradient pool off (csrc/common/cpu/grad_pool.h): every backward
               takes fresh buffers from torch's CPU allocator
  cpu-ext      the extension's C++ autograd entry point called directly, the inputs
               checked once before timing: "cpu" less all of fastmi's Python
  floor        a torch.autograd.Function with the same inputs and outputs that computes
               nothing: what autograd and the call itself cost, whatever the loss

cpu-pyfn and cpu-op measure what the op boundary costs an eager call, cpu-no-pool what
the pool saves, cpu-ext what fastmi's Python layer costs. floor is what any
implementation behind autograd pays at small batch sizes (a C++ node, as in cpu-ext, can
sit a few microseconds under it), so the last column, compile / floor, is about the
largest speed-up over torch.compile that any implementation could show in that run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import os
import time

import torch

import fastmi
from fastmi.infogan import cpu
from fastmi.bench import workloads as W
from fastmi.infogan.inputs import prepare_inputs
from fastmi.infogan.outputs import MIStats
from fastmi.infogan.problem import make_problem

SPEC = W.SPECS["mnist"]   # MNIST InfoGAN: categorical=(10,), continuous=2


def make_inputs(batch: int):
    """(real, fake, q, codes): float32 leaves and codes, as the benchmark suite draws them."""
    return tuple(W.make_inputs(W.Workload("mnist", batch, "float32", "cpu")))


def _via(path):
    """A loss function that runs the CPU kernels through ``path`` ("pyfn" or "op")."""
    def fn(real, fake, q, codes):
        problem = make_problem(SPEC)
        inputs = prepare_inputs(real, fake, q, codes, problem)
        if path == "pyfn":
            d, g, i, stats = cpu.ops.eager.apply(*inputs, problem.kernel_args())
        else:
            d, g, i, stats = cpu.ops.forward(*inputs, *problem.kernel_args())
        return fastmi.InfoGANLossOutput(d, g, i, MIStats.from_vector(stats))
    return fn


class _Nothing(torch.autograd.Function):
    """Three 0-d outputs and gradients of the right shapes, no work: the autograd floor."""

    @staticmethod
    def forward(ctx, real, fake, q):
        ctx.shapes = (real, fake, q)
        zero = q.new_zeros(())
        return zero, zero.clone(), zero.clone()

    @staticmethod
    def backward(ctx, *grads):
        return tuple(torch.empty_like(t) for t in ctx.shapes)


def _extension_entry():
    """The C++ entry point with the checks and the normalization hoisted out of the step."""
    extension, problem = cpu.extension(), make_problem(SPEC)
    args = problem.kernel_args()
    inputs = None   # prepared once per batch (measure() passes the same tensors every step)

    def fn(real, fake, q, codes):
        nonlocal inputs
        if inputs is None or inputs.q is not q:
            inputs = prepare_inputs(real, fake, q, codes, problem)
            # the step's leaves must be the tensors the node sees, or their grads go elsewhere
            assert inputs.real is real and inputs.fake is fake and inputs.q is q
        d, g, i, *_ = extension.loss(*inputs, *args)
        return fastmi.InfoGANLossOutput(d, g, i, None)
    return fn


def _floor(real, fake, q, codes):
    d, g, i = _Nothing.apply(real, fake, q)
    return fastmi.InfoGANLossOutput(d, g, i, None)


@contextlib.contextmanager
def _pool_off():
    cpu.extension().set_grad_pool(False)
    try:
        yield
    finally:
        cpu.extension().set_grad_pool(True)


def providers():
    def api(backend):
        return lambda r, f, q, c: fastmi.infogan_loss(r, f, q, c, SPEC, backend=backend)
    no_pool = api("cpu")
    no_pool.context = _pool_off   # step() runs forward and backward inside it
    return {
        "cpu": api("cpu"),
        "eager": api("reference"),
        "compile": torch.compile(api("reference")),
        "cpu-pyfn": _via("pyfn"),
        "cpu-op": _via("op"),
        "cpu-no-pool": no_pool,
        "cpu-ext": _extension_entry(),
        "floor": _floor,
    }


def step(fn, inputs, upstream):
    with getattr(fn, "context", contextlib.nullcontext)():
        out = fn(*inputs)
        torch.autograd.backward([out.discriminator, out.generator, out.info], upstream)
    for t in inputs[:3]:
        t.grad = None


def measure(fns, inputs, rounds: int, min_round_s: float):
    upstream = W.upstream("cpu")
    iters = {}
    for name, fn in fns.items():   # warm up (compilation, JIT build) and size the rounds
        for _ in range(3):
            step(fn, inputs, upstream)
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < min_round_s:
            step(fn, inputs, upstream)
            n += 1
        iters[name] = max(n, 1)
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(iters[name]):
                step(fn, inputs, upstream)
            samples[name].append((time.perf_counter() - start) / iters[name])
    return {name: min(s) for name, s in samples.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 65536])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--min-round-s", type=float, default=0.2)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fns = providers()
    print(f"fastmi {fastmi.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"spec {SPEC}, float32, forward + backward of all three losses; best of {args.rounds} rounds; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    header = (f"{'B':>8} " + " ".join(f"{n:>11}" for n in fns)
              + "   cpu vs eager   cpu vs compile   compile / floor")
    print(header)
    results = []
    for batch in args.batches:
        times = measure(fns, make_inputs(batch), args.rounds, args.min_round_s)
        row = f"{batch:>8} " + " ".join(f"{times[n] * 1e6:>9.1f}us" for n in fns)
        row += (f"   {times['eager'] / times['cpu']:>11.1f}x   {times['compile'] / times['cpu']:>13.1f}x"
                f"   {times['compile'] / times['floor']:>14.1f}x")
        print(row)
        results.append({"batch": batch, "seconds": times})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": args.threads,
                       "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
