"""benchmarks/gpu_check.py on a machine without a GPU: it reports "no CUDA device" and
still writes its table; and its host-side pieces (the PASS / FAIL / SKIP bookkeeping,
the auto-rule entry it prints) do what the GPU session will rely on. (Its byte count is
the suites' fastmi.bench.workloads.io_bytes, tested in benchmarks/bench_tools.py.)"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from fastmi.runtime import gpu_rule

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_and_writes_the_table(gpu_check, tmp_path):
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| env | CUDA device | FAIL | no CUDA device:" in table
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["sections"][0]["status"] == "FAIL" and data["env"]["torch"] == torch.__version__


def test_report_bookkeeping(gpu_check):
    report = gpu_check.Report(budget=1000.0)
    assert report.run("s", "passes", lambda: "fine") == "fine"
    assert report.run("s", "fails", lambda: 1 / 0) is None

    def skip():
        raise gpu_check.validation.Skip("not here")

    report.run("s", "skips", skip)
    report.budget = -1.0
    report.run("s", "over budget", lambda: "never runs")
    assert [r["status"] for r in report.sections] == ["PASS", "FAIL", "SKIP", "SKIP"]
    assert "ZeroDivisionError" in report.sections[1]["detail"]
    assert "time budget" in report.sections[3]["detail"]


def test_rule_entry_feeds_the_auto_rule(gpu_check, monkeypatch, tmp_path):
    report = gpu_check.Report(budget=1000.0)
    report.data["timing"] = [
        {"provider": "triton", "batch": 64, "ms": 0.08, "gb_per_s": 1.0},
        {"provider": "cuda", "batch": 64, "ms": 0.05, "gb_per_s": 1.0},
        {"provider": "eager reference", "batch": 64, "ms": 0.6, "gb_per_s": 1.0},
        {"provider": "compile(reference)", "batch": 64, "ms": 0.3, "gb_per_s": 1.0},
        {"provider": "triton", "batch": 1 << 20, "ms": 0.07, "gb_per_s": 3000.0},
        {"provider": "cuda", "batch": 1 << 20, "ms": 0.09, "gb_per_s": 2500.0},
    ]
    report.data["copy_gb_per_s"] = 4000.0
    monkeypatch.setattr(gpu_check, "REPORT", report)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    detail = gpu_check.rule_entry()
    table = report.data["rule_entry"]
    assert set(table) == {"Fake GPU"} and [p["batch"] for p in table["Fake GPU"]] == [64, 1 << 20]
    assert table["Fake GPU"][0]["ms"] == {"triton": 0.08, "cuda": 0.05, "reference": 0.6}
    assert "auto picks in order ['cuda', 'triton', 'reference']" in detail
    everything = lambda name: None  # noqa: E731
    assert gpu_rule.choose_gpu_backend("infogan", everything, device_name="Fake GPU", table=table) == "cuda"
    gpu_check.write_outputs(tmp_path)
    text = (tmp_path / "gpu_check.md").read_text()
    assert "| triton | 1,048,576 | 70.0 | 3000 | 75% |" in text
    assert "MEASURED['Fake GPU'] = [" in text
