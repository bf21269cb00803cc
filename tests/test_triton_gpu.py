"""The Triton backend on a CUDA GPU: what the interpreter cannot show and the shared GPU
checks (fastmi/infogan/checks.py, run by tests/test_gpu_checks.py) do not cover.

Skipped without a GPU. On one: the interpreted matrix on CUDA tensors, batches large
enough for many programs, the cached-runner launch path and its fallback for a
misaligned input, and torch.compile with inductor in each mode.
"""

from __future__ import annotations

import pytest
import torch

import fastmi

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

if torch.cuda.is_available():
    pytest.importorskip("triton")
    from fastmi.infogan import triton as triton_backend

    from helpers import check_backend, random_case
    from test_triton_interpreter import CASES, HUGE_K, MNIST, RICH
else:  # collected on CPU-only machines, where every test skips
    CASES = []

DEVICE = "cuda"


_UPSTREAM = []


def _upstream():
    """Upstream grads for (discriminator, generator, info), made once: a torch.tensor on
    the device per step would add host-to-device copies (and syncs) to every step."""
    if not _UPSTREAM:
        _UPSTREAM.extend(torch.tensor(v, device=DEVICE) for v in (1.0, -0.5, 0.25))
    return _UPSTREAM


def _fwd_bwd(case, spec, backend="triton", **options):
    leaves = [None if t is None else t.detach().clone().requires_grad_(True) for t in case[:3]]
    out = fastmi.infogan_loss(*leaves, case.codes, spec, backend=backend, **options)
    torch.autograd.backward([out.discriminator, out.generator, out.info], _upstream())
    return out, [None if leaf is None else leaf.grad for leaf in leaves]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matches_float64_reference_on_gpu(case):
    check_backend("triton", case.spec, case.batch, case.dtype, seed=case.batch, options=case.options,
                  device=DEVICE, confident=True, **case.kwargs)


@pytest.mark.parametrize("spec,batch,dtype", [
    ("mnist", 100_000, torch.float32),    # 391 tiles: 391 programs
    ("mnist", 300_000, torch.bfloat16),   # 1172 tiles > MAX_PROGRAMS: two tiles per program
    ("rich", 70_000, torch.float16),
    ("huge_k", 64, torch.float32),        # 64 rows of a K = 65536 code, chunked
])
def test_large_batches(spec, batch, dtype):
    spec = {"mnist": MNIST, "rich": RICH, "huge_k": HUGE_K}[spec]
    check_backend("triton", spec, batch, dtype, seed=1, device=DEVICE, confident=True, real_batch=batch // 2 + 3)


def test_cached_runner_gives_the_same_bits():
    """The first call launches through JITFunction.run, later ones through the cached
    runner: all identical, and the runner is in use."""
    case = random_case(RICH, 5000, seed=2, device=DEVICE, confident=True, real_batch=4000)
    runs = [_fwd_bwd(case, RICH) for _ in range(3)]
    assert any(plan.runners for plan in triton_backend._plans.values())
    (out0, grads0) = runs[0]
    for out, grads in runs[1:]:
        for a, b in zip((out0.discriminator, out0.generator, out0.info, out0.stats.mi_categorical),
                        (out.discriminator, out.generator, out.info, out.stats.mi_categorical)):
            assert torch.equal(a, b)
        for a, b in zip(grads0, grads):
            assert torch.equal(a, b)


def test_misaligned_input_takes_the_ordinary_path():
    """A q whose data pointer is 4 bytes off a 16-byte boundary must not reuse a runner
    compiled for aligned pointers."""
    case = random_case(MNIST, 300, seed=3, device=DEVICE, confident=True)
    _fwd_bwd(case, MNIST)  # compile and cache the aligned specialization
    buffer = torch.empty(case.q.numel() + 1, device=DEVICE)
    q = buffer[1:].view_as(case.q)
    q.copy_(case.q)
    assert q.data_ptr() % 16 != 0
    misaligned = case._replace(q=q)
    out, grads = _fwd_bwd(misaligned, MNIST)
    want, want_grads = _fwd_bwd(case, MNIST, backend="reference")
    torch.testing.assert_close(out.discriminator, want.discriminator, rtol=1e-5, atol=1e-6)
    for got, ref in zip(grads, want_grads):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_torch_compile_inductor(mode):
    """fullgraph=True (no graph break) with the triton_op registration, forward and
    backward, matches eager."""
    case = random_case(RICH, 3000, seed=6, device=DEVICE, confident=True)

    def step(real, fake, q):
        out = fastmi.infogan_loss(real, fake, q, case.codes, RICH, backend="triton", lambda_cont=0.5)
        return out.discriminator + 0.5 * out.generator - out.info, out.stats.mi_categorical

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, mode=mode)
    results = []
    for fn in (step, compiled, compiled):
        leaves = [t.detach().clone().requires_grad_(True) for t in case[:3]]
        loss, mi_cat = fn(*leaves)
        loss.backward()
        results.append((loss.detach().clone(), mi_cat.clone(), *(leaf.grad for leaf in leaves)))
    for run in results[1:]:
        for eager, comp in zip(results[0], run):
            torch.testing.assert_close(comp, eager, rtol=1e-6, atol=1e-7)
