"""pytest configuration of the benchmark suites, benchmarks/bench_*.py.

    pytest benchmarks/ --benchmark-only                      the quick subset, timed
    pytest benchmarks/ --benchmark-only --fastmi-full        the full matrix
    python -m pytest                                         CI: every suite once, as tests

pyproject's addopts hold ``--benchmark-disable`` (CI runs each benchmark body once, as a
test). pytest-benchmark refuses ``--benchmark-only`` together with ``--benchmark-disable``
and only ``--benchmark-enable`` overrides the latter, so ``--benchmark-only`` here also
enables benchmarking (:func:`pytest_configure`).

Options: ``--fastmi-full`` (every spec, batch size and dtype instead of the quick
subset), ``--fastmi-device`` (auto: cuda when a GPU is visible, else cpu) and
``--fastmi-threads`` (torch's CPU threads, default 2). Each result's ``extra_info`` holds
the operation, provider, spec, batch, dtype, the bytes it moves, the achieved GB/s, the
device name and the versions; ``python -m fastmi.bench report`` turns the JSON into
tables and plots.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch

from fastmi.bench import env as bench_env_info
from fastmi.bench import providers as P
from fastmi.bench import workloads as W

HERE = Path(__file__).resolve().parent


def pytest_addoption(parser):
    group = parser.getgroup("fastmi benchmarks")
    group.addoption("--fastmi-full", action="store_true", default=False,
                    help="benchmark the full matrix (every spec, batch size and dtype) instead of the quick subset")
    group.addoption("--fastmi-device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="the device to benchmark (auto: cuda when a GPU is visible, else cpu)")
    group.addoption("--fastmi-threads", type=int, default=2, help="torch CPU threads (default 2)")
    group.addoption("--fastmi-max-time", type=float, default=0.5,
                    help="seconds of timed rounds per benchmark (pytest-benchmark's max_time; default 0.5)")


def pytest_configure(config):
    # runs before pytest-benchmark's own pytest_configure (trylast), which raises a
    # UsageError for --benchmark-only next to the --benchmark-disable of addopts
    if config.getoption("benchmark_only", False):
        config.option.benchmark_enable = True


def pytest_collection_modifyitems(config, items):
    # every benchmark of these suites: the GPU-synchronizing clock and the time budget
    marker = pytest.mark.benchmark(timer=P.timer, max_time=config.getoption("fastmi_max_time", 0.5))
    for item in items:
        if "benchmark" in getattr(item, "fixturenames", ()) and HERE in Path(str(item.fspath)).parents:
            item.add_marker(marker)


def bench_device(config) -> str:
    device = config.getoption("fastmi_device", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device


def benchmarks_disabled(config) -> bool:
    return bool(config.getoption("benchmark_disable", False)) and not config.getoption("benchmark_enable", False)


def pytest_generate_tests(metafunc):
    config = metafunc.config
    device = bench_device(config)
    disabled = benchmarks_disabled(config)
    if "loss_case" in metafunc.fixturenames:
        works = W.workloads(device, config.getoption("fastmi_full"))
        first = works[0]
        params = []
        for work in works:
            for op in W.OPS:
                for provider in P.providers(device):
                    marks = []
                    if disabled and P.split(provider)[0] in P.COMPILE_MODES and work != first:
                        marks.append(pytest.mark.skip(reason=f"under --benchmark-disable the compile providers "
                                                             f"run one workload ({first.id}): each compilation "
                                                             f"costs seconds"))
                    params.append(pytest.param((op, provider, work), id=f"{op}-{provider}-{work.id}", marks=marks))
        metafunc.parametrize("loss_case", params)
    if "e2e_provider" in metafunc.fixturenames:
        params = []
        for provider in P.base_providers(device):
            marks = []
            if disabled and provider in P.COMPILE_MODES:
                marks.append(pytest.mark.skip(reason="under --benchmark-disable the compile providers run one "
                                                     "workload of bench_loss.py: each compilation costs seconds"))
            params.append(pytest.param(provider, id=provider, marks=marks))
        metafunc.parametrize("e2e_provider", params)


@pytest.fixture(scope="session")
def bench_env(request):
    """The device, its name and the versions; sets the thread count and dynamo's limits."""
    config = request.config
    device = bench_device(config)
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("--fastmi-device cuda: no CUDA device is visible")
    torch.set_num_threads(config.getoption("fastmi_threads"))
    P.configure_compile()
    if not benchmarks_disabled(config) and device == "cpu" and "cpu" in P.base_providers("cpu"):
        # tests/conftest.py makes the CPU kernel fill its gradient buffers with NaN first
        # (for the whole session when tests/ ran before): not part of a timed call
        from fastmi.runtime import cpu_extension
        cpu_extension.set_poison_outputs(False)
    return bench_env_info.describe(device)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["fastmi"] = bench_env_info.describe(bench_device(config))


class _LastCase:
    """Inputs and eager-reference results of the last workload (consecutive tests share
    a workload: the provider varies fastest), so big inputs are built once and freed."""

    def __init__(self):
        self.key, self.value = None, None

    def get(self, work: W.Workload):
        if self.key != work:
            self.key = self.value = None
            gc.collect()
            if work.device == "cuda":
                torch.cuda.empty_cache()
            inputs = W.make_inputs(work)
            fn = P.loss_function("eager", work.spec)
            outs = fn(*inputs.leaves, inputs.codes)
            losses = [t.detach() for t in outs]
            grads = torch.autograd.grad(outs, inputs.leaves, W.upstream(work.device))
            self.key, self.value = work, (inputs, {"losses": losses, "grads": list(grads)},
                                          W.io_bytes(inputs, work.spec))
        return self.value


_LAST = _LastCase()


@pytest.fixture
def case_data():
    return _LAST.get


def record(benchmark, info: dict, moved_bytes: int) -> None:
    """Fills ``benchmark.extra_info``: ``info`` plus the bytes moved and, when timed, the
    median seconds and the achieved GB/s."""
    benchmark.extra_info.update(info)
    benchmark.extra_info["bytes"] = int(moved_bytes)
    if not benchmark.disabled and benchmark.stats is not None:
        median = benchmark.stats.stats.median
        benchmark.extra_info["median_s"] = median
        benchmark.extra_info["gb_per_s"] = moved_bytes / median / 1e9


def rounds_for(config, seconds_per_call: float) -> int:
    """Rounds of a pedantic benchmark (one call per round) that fill about
    --fastmi-max-time, and at least --benchmark-min-rounds."""
    max_time = float(config.getoption("fastmi_max_time"))
    min_rounds = int(config.getoption("benchmark_min_rounds"))
    return max(min_rounds, min(100_000, int(max_time / max(seconds_per_call, 1e-7))))


@pytest.fixture
def bench_tools(request):
    """(record, rounds_for) bound to this session's config."""
    return record, lambda seconds: rounds_for(request.config, seconds)
