"""Which layout suits a categorical code of K classes on the CPU: lanes of rows (8 rows
per vector, rows transposed into a column tile) or vectors along each row?

    python benchmarks/cpu_layout.py [--batch 16384] [--threads 1]

Times the fused CPU kernels alone (forward op + backward op, no autograd) for a spec
Cat(K) + 2 continuous with each layout forced, and prints the ratio. The kernel's
``kLaneMaxK`` (csrc/infogan/cpu/kernels.h) is set from this table.
"""

from __future__ import annotations

import argparse
import timeit

import torch

import fastmi
from fastmi.infogan import cpu
from fastmi.infogan.inputs import prepare_inputs
from fastmi.infogan.problem import make_problem


def kernel_time(spec, batch, repeats):
    g = torch.Generator().manual_seed(0)
    problem = make_problem(spec)
    inputs = prepare_inputs(torch.randn(batch, generator=g), torch.randn(batch, generator=g),
                            torch.randn(batch, spec.q_width, generator=g), spec.sample(batch, generator=g), problem)
    ext, args, one = cpu.extension(), problem.kernel_args(), torch.tensor(1.0)

    def run():
        ext.forward_op(*inputs, *args)
        ext.backward_op(one, one, one, *inputs, *args)

    run()
    number = max(1, int(0.05 / max(timeit.timeit(run, number=1), 1e-6)))
    return min(timeit.repeat(run, number=number, repeat=repeats)) / number


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--classes", type=int, nargs="+", default=[4, 10, 32, 64, 128, 256, 1024])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ext = cpu.extension()
    print(f"B={args.batch}, float32, {args.threads} thread(s), forward + backward kernels, best of {args.repeats}")
    print(f"{'K':>6} {'row lanes':>12} {'in-row':>12} {'in-row / lanes':>15}")
    try:
        for k in args.classes:
            spec = fastmi.LatentSpec(categorical=(k,), continuous=2)
            ext.set_lane_max_k(1 << 30)
            lanes = kernel_time(spec, args.batch, args.repeats)
            ext.set_lane_max_k(0)
            in_row = kernel_time(spec, args.batch, args.repeats)
            print(f"{k:>6} {lanes * 1e3:>10.3f}ms {in_row * 1e3:>10.3f}ms {in_row / lanes:>15.2f}")
    finally:
        ext.set_lane_max_k(24)  # the kernel's kLaneMaxK


if __name__ == "__main__":
    main()
