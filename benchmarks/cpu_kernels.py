"""The fused CPU kernels alone: ``forward_op`` and ``backward_op`` of the extension, called
directly (no autograd, no Python API), for the MNIST spec in float32.

    python benchmarks/cpu_kernels.py [--batch 65536] [--threads 2] [--rounds 40]
    python benchmarks/cpu_kernels.py --extension ~/.cache/fastmi/fastmi_cpu-<hash>/fastmi_cpu.so

Each call includes what the op itself does: input checks and the fresh output tensors.
For scale it also times ``torch.exp`` (out=) over 30 x B floats, about the number of
exp/log evaluations a forward + backward makes per row.
The best of ``--rounds`` rounds of 4 calls counts. ``--extension`` loads another build of
the extension (the ninja cache keeps one folder per source hash), so that two versions of
the kernel can be compared in alternating processes on a noisy machine. Run it with
``OMP_WAIT_POLICY=PASSIVE`` on a 2-vCPU VM (see core_speed.py).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import time

import torch

from fastmi.infogan import cpu
from fastmi.bench import workloads as W
from fastmi.infogan.inputs import prepare_inputs
from fastmi.infogan.problem import make_problem


def load_extension(path: str):
    loader = importlib.machinery.ExtensionFileLoader("fastmi_cpu", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location("fastmi_cpu", path,
                                                                                    loader=loader))
    loader.exec_module(module)
    return module


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=65536)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--extension", help="path of a built fastmi_cpu .so (default: the current build)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ext = load_extension(args.extension) if args.extension else cpu.extension()

    work = W.Workload("mnist", args.batch, "float32", "cpu")
    problem = make_problem(work.spec)
    inputs = prepare_inputs(*W.make_inputs(work), problem)
    scalars = problem.kernel_args()
    upstream = W.upstream("cpu")
    g = torch.Generator().manual_seed(1)
    exps_in, exps_out = torch.randn(30 * args.batch, generator=g), torch.empty(30 * args.batch)
    calls = {"forward": lambda: ext.forward_op(*inputs, *scalars),
             "backward": lambda: ext.backward_op(*upstream, *inputs, *scalars),
             "torch.exp of 30 x B floats": lambda: torch.exp(exps_in, out=exps_out)}
    best = {name: float("inf") for name in calls}
    for fn in calls.values():
        for _ in range(5):
            fn()
    for _ in range(args.rounds):
        for name, fn in calls.items():   # interleaved: a burst of load hits both alike
            start = time.perf_counter()
            for _ in range(4):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / 4)
    print(f"fastmi cpu kernels, MNIST spec, float32, B={args.batch}, {args.threads} threads, best of "
          f"{args.rounds} rounds: " + ", ".join(f"{name} {t * 1e6:.0f} us" for name, t in best.items()))


if __name__ == "__main__":
    main()
