"""Benchmark support for fastmi: the workloads, the providers that compute the loss, the
bytes each operation moves, and the report.

    python -m fastmi.bench report RESULTS.json [MORE.json ...] --out DIR

The pytest-benchmark suites live in ``benchmarks/`` (``benchmarks/README.md`` says how
to run them); this package holds what they, the profiler script and the report share:

- :mod:`fastmi.bench.workloads`: the InfoGAN paper's latent specs, batch sizes, dtypes,
  the quick subset and the full matrix, inputs, and the counted bytes of an operation;
- :mod:`fastmi.bench.providers`: eager reference, each fused backend, torch.compile of
  the reference, and CUDA-graph replays, as forward / backward / forward + backward;
- :mod:`fastmi.bench.env`: the device name and the versions a result records;
- :mod:`fastmi.bench.report`: speedup tables (x eager, x compile) and plots from a
  pytest-benchmark JSON file (matplotlib is imported only to draw).
"""
