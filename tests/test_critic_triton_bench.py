"""The host-side logic of critic_bound's GPU benchmark (benchmarks/critic_gpu.py) and its
one-call device script, on the CPU: a dry run end to end, the run order, the counted
FLOPs, the targets' verdicts from measured rows, and the peers' loading."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("critic_gpu", REPO / "benchmarks" / "critic_gpu.py")
critic_gpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(critic_gpu)


def test_dry_run_writes_the_table(tmp_path):
    """fastmi (tiled on the CPU) and OpenCLIP eager when its wheel is in .whl/; the CUDA
    peers reported unavailable with the reason; a row per point, the targets n/a."""
    code = critic_gpu.main(["--dry-run", "--out", str(tmp_path), "--providers", "fastmi", "openclip", "inf-cl",
                            "siglip-kernel", "--rounds", "1", "--target-seconds", "0.01"])
    assert code == 0
    data = json.loads((tmp_path / "critic_gpu.json").read_text())
    rows = data["rows"]
    assert {(r["loss"], r["provider"]) for r in rows} == {("clip", "fastmi"), ("clip", "openclip"), ("clip", "inf-cl"),
                                                          ("siglip", "fastmi"), ("siglip", "openclip"),
                                                          ("siglip", "siglip-kernel")}
    for r in rows:
        if r["provider"] == "fastmi":
            assert r["status"] == "ok" and r["seconds"] > 0 and r["tflops"] > 0
        if r["provider"] in ("inf-cl", "siglip-kernel"):
            assert r["status"].startswith("unavailable") and ("CUDA" in r["status"] or "missing" in r["status"])
    openclip_here = (REPO / ".whl" / critic_gpu.PEER_WHEELS["open_clip"]).exists()
    openclip_rows = [r for r in rows if r["provider"] == "openclip"]
    assert all((r["status"] == "ok") == openclip_here for r in openclip_rows)
    if openclip_here:  # the first point of each loss compares OpenCLIP with fastmi
        assert {n["loss_name"] for n in data["compared"]} == {"clip", "siglip"}
        for n in data["compared"]:
            assert n["loss_rel_diff"] < 0.05  # OpenCLIP's logits are bfloat16, ours float32
    assert all(verdict == "n/a" for _, verdict, _ in data["targets"])
    text = (tmp_path / "critic_gpu.md").read_text()
    assert "## targets" in text and "| clip | 32 | 48 | fastmi |" in text


def test_plan_runs_the_targets_first():
    points = critic_gpu.plan(critic_gpu.LOSSES, {"fastmi", "inf-cl", "openclip", "openclip+compile", "siglip-kernel"},
                             critic_gpu.DIMS, critic_gpu.BATCHES)
    assert points[0] == critic_gpu.Point("clip", "fastmi", 512, 32768)
    first_siglip = points.index(critic_gpu.Point("siglip", "siglip-kernel", 512, 65536))
    assert first_siglip < 10
    assert len(points) == len(set(points)) == 2 * 4 * len(critic_gpu.DIMS) * len(critic_gpu.BATCHES)


def test_counted_flops():
    # 2 B N d forward, 3x backward: at B = N = 65,536, d = 512, 1.76e13 per step
    assert critic_gpu.counted_flops(65536, 65536, 512) == 8 * 65536 * 65536 * 512


def _row(loss, provider, batch, seconds, memory=None, dim=512):
    return dict(loss=loss, provider=provider, batch=batch, dim=dim, seconds=seconds, memory_above_inputs=memory,
                tflops=critic_gpu.counted_flops(batch, batch, dim) / seconds / 1e12, status="ok")


@pytest.mark.parametrize("fast", [True, False])
def test_targets_are_judged_from_the_rows(fast):
    """Each verdict flips with the measured numbers it reads."""
    ours = 0.010 if fast else 0.030
    # 50% of a 989 TFLOP/s peak at B = 65,536, d = 512: a step of 1.76e13 FLOPs in 35.6 ms
    # (at 262,144: 2.8e14 FLOPs in 570 ms)
    rows = [_row("clip", "fastmi", 32768, ours), _row("clip", "openclip", 32768, 0.020),
            _row("clip", "inf-cl", 32768, 0.025), _row("siglip", "fastmi", 65536, 0.030 if fast else 0.060),
            _row("siglip", "siglip-kernel", 65536, 0.05),
            _row("clip", "fastmi", 262144, 0.5, memory=(0.5 if fast else 1.5) * critic_gpu.GIB),
            _row("siglip", "fastmi", 262144, 0.5, memory=0.9 * critic_gpu.GIB)]
    verdicts = {target: verdict for target, verdict, _ in critic_gpu.targets(rows, 989.0)}
    expected = "PASS" if fast else "FAIL"
    assert verdicts["clip: memory above the inputs at B = 262,144 under 1 GiB"] == expected
    assert verdicts["siglip: memory above the inputs at B = 262,144 under 1 GiB"] == "PASS"
    assert verdicts["clip B = 32,768: at least 1.5x faster than OpenCLIP's ClipLoss"] == expected
    assert verdicts["clip B = 32,768: faster than Inf-CL's two calls"] == expected
    assert verdicts["siglip B = 65,536: at least as fast as siglip-kernel"] == expected
    assert verdicts["B >= 65,536: counted GEMM FLOPs at least 50% of the dense bf16 peak"] == expected


def test_missing_wheels_are_reported(tmp_path):
    peers = critic_gpu.load_peers(tmp_path, "cpu")
    assert set(peers) == {"inf_cl", "siglip_kernel", "open_clip"}
    assert all(isinstance(v, str) and "missing" in v for v in peers.values())


def test_device_script_is_valid_bash():
    script = REPO / "benchmarks" / "critic_gpu.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "fastmi.validate --ops critic" in text and "benchmarks/critic_gpu.py" in text
