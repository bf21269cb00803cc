"""What the benchmarks run: latent specs, batch sizes, dtypes, inputs and counted bytes.

Specs are the latent codes of the InfoGAN paper's experiments (Chen et al. 2016,
section 7 and appendix C) plus one wide stress spec. Q's continuous outputs are a mean
and a learned log-variance per code (``std="learned"``, the library's default), so W =
sum(K) + 2 n.

    name     codes                              W
    mnist    1 x Cat(10) + 2 continuous         14
    svhn     4 x Cat(10) + 4 continuous         48
    celeba   10 x Cat(10)                       100
    chairs   3 x Cat(20) + 1 continuous         62
    faces    5 continuous                       10
    wide     Cat(1024) + 8 continuous           1040

The quick subset (the default) is mnist and wide, float32, at B = 64 and 65,536 (and
1,048,576 on a GPU); the full matrix is every spec x every batch size x float32 and
bfloat16.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from ..infogan.inputs import prepare_inputs
from ..infogan.problem import make_problem
from ..infogan.spec import Codes, LatentSpec

SPECS = {
    "mnist": LatentSpec(categorical=(10,), continuous=2),
    "svhn": LatentSpec(categorical=(10, 10, 10, 10), continuous=4),
    "celeba": LatentSpec(categorical=(10,) * 10, continuous=0),
    "chairs": LatentSpec(categorical=(20, 20, 20), continuous=1),
    "faces": LatentSpec(categorical=(), continuous=5),
    "wide": LatentSpec(categorical=(1024,), continuous=8),
}
SPEC_LABELS = {
    "mnist": "MNIST 1xCat(10)+2 cont",
    "svhn": "SVHN 4xCat(10)+4 cont",
    "celeba": "CelebA 10xCat(10)",
    "chairs": "Chairs 3xCat(20)+1 cont",
    "faces": "Faces 5 cont",
    "wide": "wide Cat(1024)+8 cont",
}
BATCHES = {"cpu": (64, 256, 4096, 65536), "cuda": (64, 256, 4096, 65536, 1 << 20)}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

QUICK_SPECS = ("mnist", "wide")
QUICK_BATCHES = {"cpu": (64, 65536), "cuda": (64, 65536, 1 << 20)}
QUICK_DTYPES = ("float32",)

OPS = ("fwd", "bwd", "fwd_bwd")
OP_LABELS = {"fwd": "forward", "bwd": "backward", "fwd_bwd": "forward + backward"}
# upstream grads of (discriminator, generator, info): the D step and the G step both
# need every loss, so the backward of each op is that of all three
UPSTREAM = (0.7, -0.3, 1.1)


class Workload(NamedTuple):
    spec_name: str
    batch: int
    dtype_name: str
    device: str

    @property
    def spec(self) -> LatentSpec:
        return SPECS[self.spec_name]

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.dtype_name]

    @property
    def id(self) -> str:
        return f"{self.spec_name}-B{self.batch}-{self.dtype_name}"


def workloads(device: str, full: bool) -> list:
    """Every workload of the quick subset (or of the full matrix) on ``device`` ("cpu"
    or "cuda"), spec-major, then dtype, then batch."""
    specs = tuple(SPECS) if full else QUICK_SPECS
    batches = BATCHES[device] if full else QUICK_BATCHES[device]
    dtypes = tuple(DTYPES) if full else QUICK_DTYPES
    return [Workload(s, b, d, device) for s in specs for d in dtypes for b in batches]


class Inputs(NamedTuple):
    real: torch.Tensor
    fake: torch.Tensor
    q: torch.Tensor
    codes: Codes

    @property
    def leaves(self) -> tuple:
        return (self.real, self.fake, self.q)


def make_inputs(work: Workload, seed: int = 0) -> Inputs:
    """Random D logits and Q outputs (leaves that require grad) in the workload's dtype,
    and codes drawn from the spec's prior, on its device (the same seed draws different
    values on a CPU and on a GPU)."""
    g = torch.Generator(device=work.device).manual_seed(seed)  # drawn on the device: GPU inputs reach GBs
    spec, batch, dtype = work.spec, work.batch, work.dtype

    def leaf(*shape):
        return torch.randn(*shape, generator=g, device=work.device).to(dtype).requires_grad_(True)

    real, fake, q = leaf(batch), leaf(batch), leaf(batch, spec.q_width)
    return Inputs(real, fake, q, spec.sample(batch, device=work.device, generator=g))


def upstream(device, dtype: torch.dtype = torch.float32) -> tuple:
    return tuple(torch.tensor(u, dtype=dtype, device=device) for u in UPSTREAM)


def io_bytes(inputs: Inputs, spec: LatentSpec) -> dict:
    """Bytes each operation moves, counted as the contract defines them: the forward
    reads every input once; the backward reads every input once and writes each
    gradient once. The inputs are those a backend sees after validation (codes in their
    index / compute dtype), so the count is the tensors' own ``nbytes``."""
    prepared = prepare_inputs(inputs.real, inputs.fake, inputs.q, inputs.codes, make_problem(spec))
    read = sum(t.nbytes for t in prepared if t is not None)
    written = sum(t.nbytes for t in inputs.leaves)
    return {"fwd": read, "bwd": read + written, "fwd_bwd": 2 * read + written}


def tolerance(dtype: torch.dtype) -> tuple:
    """(rtol, atol as a fraction of the largest magnitude) for comparing a provider with
    the eager reference on the same inputs."""
    return (1e-4, 1e-5) if dtype == torch.float32 else (3e-2, 2e-2)


def assert_matches(got, want, dtype: torch.dtype, what: str, provider: Optional[str] = None) -> None:
    """Every tensor of ``got`` is within the dtype's tolerance of the matching one of
    ``want``: |a - b| <= rtol |b| + atol max|b| elementwise, so a NaN or an infinity
    fails too. Compared in chunks: the inputs reach hundreds of MB."""
    rtol, atol = tolerance(dtype)
    assert len(got) == len(want), f"{provider} {what}: {len(got)} outputs, expected {len(want)}"
    chunk = 1 << 22
    for i, (a, b) in enumerate(zip(got, want)):
        a, b = a.detach().reshape(-1), b.detach().reshape(-1)
        assert a.shape == b.shape, f"{provider} {what}[{i}]: {a.numel()} elements, expected {b.numel()}"
        if b.numel() == 0:
            continue
        scale = float(b.abs().max())
        worst, largest = -math.inf, 0.0
        for start in range(0, b.numel(), chunk):
            x, y = a[start:start + chunk].float(), b[start:start + chunk].float()
            err = (x - y).abs_()
            biggest, excess = float(err.max()), float(err.sub_(y.abs().mul_(rtol)).max())
            if not (math.isfinite(biggest) and math.isfinite(excess)):  # NaN or inf: Python's max() drops a NaN
                largest = worst = math.inf
                break
            largest, worst = max(largest, biggest), max(worst, excess)
        assert worst <= atol * scale, (f"{provider} {what}[{i}] differs from the eager reference by up to "
                                       f"{largest:.3g} (scale {scale:.3g}, rtol {rtol}, atol {atol} x scale)")
