"""Tests of the benchmark tooling itself (no timings; skipped under --benchmark-only):
the counted bytes, the report's tables and plots, the profiler script, the ncu wrapper
and the one-call GPU script."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastmi.bench import providers as P
from fastmi.bench import report
from fastmi.bench import workloads as W

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("spec_name", list(W.SPECS))
def test_bytes_match_the_contract(spec_name, dtype):
    """The byte count behind every GB/s (the suites' and gpu_check.py's) against the
    contract's formula: the forward reads each input once, the backward reads each input
    once and writes each gradient once."""
    work = W.Workload(spec_name, 37, dtype, "cpu")
    inputs = W.make_inputs(work)
    moved = W.io_bytes(inputs, work.spec)
    s = torch.tensor([], dtype=work.dtype).element_size()
    spec = work.spec
    row = 2 * s + spec.q_width * s + 8 * len(spec.categorical) + 4 * (spec.bernoulli + spec.continuous)
    assert moved["fwd"] == 37 * row
    assert moved["bwd"] == 37 * (row + (2 + spec.q_width) * s)


def test_providers_per_device():
    assert P.base_providers("cpu")[0] == "eager" and "compile" in P.base_providers("cpu")
    assert "triton" not in P.providers("cpu")  # never the Triton interpreter
    assert not any(p.endswith("+graph") or p == "compile-max-autotune" for p in P.providers("cpu"))
    cuda = P.providers("cuda")
    assert "compile-max-autotune" in cuda and "eager+graph" in cuda and "compile+graph" in cuda
    assert P.split("cuda+graph") == ("cuda", True) and P.split("compile") == ("compile", False)


def test_workloads_quick_and_full():
    quick = W.workloads("cpu", full=False)
    assert {w.spec_name for w in quick} == {"mnist", "wide"} and {w.dtype_name for w in quick} == {"float32"}
    full = W.workloads("cuda", full=True)
    assert len(full) == 6 * 5 * 2 and max(w.batch for w in full) == 1 << 20
    assert W.SPECS["wide"].q_width == 1040 and W.SPECS["celeba"].q_width == 100 and W.SPECS["faces"].q_width == 10


def test_assert_matches_catches_a_wrong_element():
    want = [torch.linspace(-1, 1, 10_000_000)]
    W.assert_matches([want[0].clone()], want, torch.float32, "x")
    bad = want[0].clone()
    bad[9_999_999] += 1e-3
    with pytest.raises(AssertionError, match="differs from the eager reference"):
        W.assert_matches([bad], want, torch.float32, "x")
    bad[9_999_999] = float("nan")
    with pytest.raises(AssertionError):
        W.assert_matches([bad], want, torch.float32, "x")


def test_timer_measures_enqueued_work():
    start = P.timer()
    torch.ones(1000).sum()
    assert P.timer() >= start


def _bench(name, median, **info):
    return {"name": name, "fullname": f"benchmarks/bench_loss.py::{name}", "group": None,
            "extra_info": {"device": "cpu", "device_name": "Test CPU, 2 cores", "torch": torch.__version__,
                           "triton": "3.6.0", "python": "3.11", "fastmi": "0.1.0", "fastmi_commit": "abc",
                           "threads": 2, "date": "2026-11-28T00:00:00+00:00", **info},
            "stats": {"median": median, "min": median, "rounds": 5, "data": [median] * 5}}


def _fake_results(path: Path):
    benches = []
    for spec, q_width in (("mnist", 14), ("wide", 1040)):
        for batch in (64, 4096):
            for provider, t in (("eager", 8e-3), ("compile", 4e-3), ("cpu", 1e-3)):
                scale = batch / 64 * (q_width / 14)
                benches.append(_bench(f"test_loss[fwd_bwd-{provider}-{spec}-B{batch}-float32]", t * scale,
                                      kind="loss", op="fwd_bwd", provider=provider, spec=spec, batch=batch,
                                      dtype="float32", bytes=batch * 1000))
    benches.append(_bench("test_copy_bandwidth", 0.05, kind="copy", provider="copy", bytes=500_000_000))
    for provider, t in (("eager", 0.4), ("compile", 0.39), ("cpu", 0.35)):
        benches.append(_bench(f"test_train_step[{provider}]", t, kind="e2e", op="train_step", provider=provider,
                              spec="mnist-trainer", batch=64, dtype="float32", bytes=0))
    path.write_text(json.dumps({"machine_info": {}, "datetime": "2026-11-28T00:00:00", "benchmarks": benches}))


def test_report_tables_and_plots(tmp_path):
    _fake_results(tmp_path / "a.json")
    assert report.main([str(tmp_path / "a.json"), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    # mnist B=64: eager 8 ms, compile 4 ms, cpu 1 ms -> 8.0x eager, 4.0x compile; 64,000 B / 1 ms
    assert "| MNIST 1xCat(10)+2 cont | 64 | 8.00 ms | 4.00 ms | 1.00 ms | 8.0× | 4.0× | 0.06 |" in text
    assert "**10 GB/s**" in text  # the copy: 5e8 bytes / 0.05 s
    assert "| cpu | 350.00 ms | 1.1× | 1.1× |" in text
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Test CPU, 2 cores" in summary and "2026-11-28" in summary and "Reproduce:" in summary
    slim = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(slim["benchmarks"]) == 16 and "data" not in slim["benchmarks"][0]["stats"]

    matplotlib = pytest.importorskip("matplotlib")
    assert matplotlib is not None
    assert report.main([str(tmp_path / "a.json"), "--out", str(tmp_path / "plots")]) == 0
    for name in ("time_fwd_bwd_float32.png", "gbps_fwd_bwd_float32.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000


def test_report_merges_files_and_refuses_empty_input(tmp_path):
    _fake_results(tmp_path / "a.json")
    data = json.loads((tmp_path / "a.json").read_text())
    first = data["benchmarks"][0]
    first["stats"]["median"] = 2e-3  # a rerun of one test replaces the first file's result
    (tmp_path / "b.json").write_text(json.dumps({"benchmarks": [first]}))
    merged = report.load(report.read([tmp_path / "a.json", tmp_path / "b.json"]))
    rows = [r for r in merged["rows"] if r["name"] == first["fullname"]]
    assert len(rows) == 1 and rows[0]["median_s"] == 2e-3
    (tmp_path / "empty.json").write_text(json.dumps({"benchmarks": []}))
    assert report.main([str(tmp_path / "empty.json"), "--out", str(tmp_path / "o"), "--no-plots"]) == 1


def test_profile_script_counts_operators_and_writes_traces(tmp_path):
    sys.path.insert(0, str(HERE))
    try:
        import profile_steps
    finally:
        sys.path.remove(str(HERE))
    result = profile_steps.main(["--device", "cpu", "--steps", "2", "--batch", "512", "--providers", "eager", "cpu",
                                 "--out", str(tmp_path)])
    rows = {r["provider"]: r for r in result["providers"]}
    assert rows["eager"]["ops_per_step"] > 20 > rows["cpu"]["ops_per_step"]
    for name in ("eager", "cpu"):
        trace = json.loads(gzip.open(tmp_path / rows[name]["trace"]).read())
        assert any(e.get("name") == "step 1" for e in trace["traceEvents"])
    assert json.loads((tmp_path / "profile.json").read_text())["steps"] == 2


def test_ncu_wrapper_command_line():
    out = subprocess.run(["bash", str(HERE / "ncu_kernels.sh"), "/tmp/fastmi-ncu", "--dry-run", "--spec", "wide"],
                         capture_output=True, text=True, check=True).stdout
    assert "--clock-control none" in out and "--nvtx-include triton/" in out and "--nvtx-include cuda/" in out
    assert "benchmarks/profile_steps.py --no-profiler" in out and "--spec wide" in out
    regex = re.search(r"--kernel-name regex:(\S+)", out).group(1).replace("\\", "")
    # the regex selects the fused kernels by the names their sources give them, and
    # nothing that torch.compile generates
    triton_names = re.findall(r"^def (infogan_\w+_kernel)\(", (REPO / "kernels" / "infogan" / "forward.py").read_text()
                              + (REPO / "kernels" / "infogan" / "backward.py").read_text(), re.M)
    cuda_dir = REPO / "csrc" / "infogan" / "cuda"
    cuda_names = re.findall(r"^\s+(\w+_kernel)\(const", (cuda_dir / "forward.cuh").read_text()
                            + (cuda_dir / "backward.cuh").read_text(), re.M)
    assert sorted(triton_names) == ["infogan_backward_kernel", "infogan_finalize_kernel", "infogan_forward_kernel"]
    assert sorted(cuda_names) == ["backward_kernel", "forward_kernel"]
    for name in triton_names + cuda_names:
        assert re.match(regex, name), name
    assert not re.match(regex, "triton_per_fused__log_softmax_0")


def test_gpu_bench_script_selects_existing_tests():
    text = (HERE / "gpu_bench.sh").read_text()
    subprocess.run(["bash", "-n", str(HERE / "gpu_bench.sh")], check=True)
    works = re.search(r"for work in ([^;]+);", text).group(1).replace("\\", " ").split()
    ids = {w.id for w in W.workloads("cuda", full=False)}
    assert works and set(works) <= ids  # every torch.compile workload it names is in the GPU quick subset
    assert '-k "not compile"' in text and "--fastmi-device cuda" in text and "fastmi.bench report" in text
