"""``python -m fastmi.validate`` and benchmarks/gpu_check.py include critic_bound's GPU
checks: each op takes its own fused GPU backends (the critic's is triton; its tiled
backend runs on CUDA tensors too but is the PyTorch specification, not a kernel to
validate), and ``--ops`` narrows the run."""

from __future__ import annotations

import torch

from fastmi import validate


def test_each_op_takes_its_own_gpu_backends():
    checks = validate.all_checks(["triton", "cuda"], "cpu", quick=True)
    ops = {c.op for c in checks}
    assert ops == {"infogan", "critic"}
    critic = [c for c in checks if c.op == "critic"]
    assert critic and all(c.name.startswith("triton: ") for c in critic)
    names = " ".join(c.name for c in critic)
    for what in ("oracle, clip", "oracle, siglip", "no host sync", "zero row", "bitwise determinism",
                 "two streams", "two CUDA graphs", "CUDA graph replay", "torch.compile", "memory"):
        assert what in names, what
    assert {c.name.split(":")[0] for c in checks if c.op == "infogan"} == {"triton", "cuda"}


def test_ops_narrows_the_checks():
    assert {c.op for c in validate.all_checks(["triton"], "cpu", ops=("critic",))} == {"critic"}
    assert validate.all_checks(["cuda"], "cpu", ops=("critic",)) == []


def test_gpu_backends_need_a_gpu_here():
    if not torch.cuda.is_available():
        assert validate.available_gpu_backends() == []
