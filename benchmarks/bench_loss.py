"""pytest-benchmark suite: forward, backward and forward + backward of fastmi.infogan_loss.

    pytest benchmarks/bench_loss.py --benchmark-only [--fastmi-full] [--benchmark-json out.json]

Each test times one (operation, provider, workload): providers and workloads are listed
in fastmi/bench/providers.py and fastmi/bench/workloads.py; benchmarks/conftest.py
parametrizes them (the quick subset, or the full matrix with --fastmi-full). Every
provider is warmed up first (builds, JIT compilation, torch.compile, CUDA-graph
capture stay out of the timings), the clock synchronizes the GPU, and each result is
checked against the eager reference on the same inputs, so a fast wrong answer fails.

test_copy_bandwidth times a large tensor copy on the same device: the memory bandwidth
the report draws as the roofline of the achieved GB/s.
"""

from __future__ import annotations

import pytest
import torch

from fastmi.bench import providers as P
from fastmi.bench import workloads as W

def test_loss(benchmark, loss_case, bench_env, case_data, bench_tools):
    op, provider, work = loss_case
    record, rounds_for = bench_tools
    inputs, expected, moved = case_data(work)
    try:
        runner = P.make_runner(provider, op, work, inputs)
    except P.Unsupported as exc:
        pytest.skip(str(exc))
    rounds = 1
    if not benchmark.disabled:
        rounds = rounds_for(P.warm_up(runner))
    benchmark.group = f"{op} {work.id}"
    if runner.setup is None:
        result = benchmark(runner.target)
    else:
        result = benchmark.pedantic(runner.target, setup=runner.setup, rounds=rounds)
    base, graph = P.split(provider)
    record(benchmark, {**bench_env, "kind": "loss", "op": op, "provider": provider, "base_provider": base,
                       "cuda_graph": graph, "spec": work.spec_name, "spec_label": W.SPEC_LABELS[work.spec_name],
                       "spec_repr": repr(work.spec), "q_width": work.spec.q_width, "batch": work.batch,
                       "dtype": work.dtype_name}, moved[op])
    W.assert_matches(list(result), expected[runner.result], work.dtype, f"{op} {runner.result}", provider)


def test_copy_bandwidth(benchmark, bench_env, bench_tools):
    """dst.copy_(src) of 256 MiB (CPU) or 1 GiB (GPU) of float32: bytes read + written."""
    record, _ = bench_tools
    device = bench_env["device"]
    n = (1 << 26) if device == "cpu" else (1 << 28)
    src = torch.arange(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    if not benchmark.disabled:
        for _ in range(2):
            dst.copy_(src)
    benchmark.group = "copy"
    benchmark(dst.copy_, src)
    record(benchmark, {**bench_env, "kind": "copy", "provider": "copy", "elements": n}, 2 * src.nbytes)
    if not benchmark.disabled:
        assert benchmark.extra_info["gb_per_s"] > 0.1
    assert torch.equal(dst[-5:], src[-5:]) and torch.equal(dst[:5], src[:5])
