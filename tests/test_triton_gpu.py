"""The Triton backend on a CUDA GPU: what the interpreter cannot show.

Skipped without a GPU. On one (the GPU-validation session, an H200): the interpreted
matrix on CUDA tensors, batches large enough for many programs and for B x W > 2^31,
the cached-runner launch path and its fallback for a misaligned input, CUDA-graph
capture and replay, no host sync, torch.compile with inductor, bitwise determinism,
and the speed-up over the eager composite reference at B = 64.
"""

from __future__ import annotations

import time

import pytest
import torch

import fastmi
from fastmi.bench.providers import capture_graph

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

if torch.cuda.is_available():
    pytest.importorskip("triton")
    from fastmi.infogan import triton as triton_backend

    from helpers import check_backend, evaluate, random_case, random_upstream
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


@pytest.mark.parametrize("batch", [64, 3000])
def test_cuda_graph_capture_and_replay(batch):
    """Forward and backward captured in a CUDA graph replay to the eager results on new
    data; the multi-program forward (3000 rows) leaves its ticket counter at zero."""
    spec = RICH
    static = random_case(spec, batch, seed=4, device=DEVICE, confident=True)
    leaves = [t.detach().clone().requires_grad_(True) for t in static[:3]]
    upstream = _upstream()

    def step():
        for leaf in leaves:
            leaf.grad = None
        out = fastmi.infogan_loss(*leaves, static.codes, spec, backend="triton")
        torch.autograd.backward([out.discriminator, out.generator, out.info], upstream)
        return out

    graph, captured = capture_graph(step)

    fresh = random_case(spec, batch, seed=40, device=DEVICE, confident=True)
    for leaf, value in zip(leaves, fresh[:3]):
        leaf.data.copy_(value)
    for codes_static, codes_fresh in zip(static.codes[:3], fresh.codes[:3]):
        codes_static.copy_(codes_fresh)
    graph.replay()
    torch.cuda.synchronize()
    want, want_grads = _fwd_bwd(static._replace(real=leaves[0].detach(), fake=leaves[1].detach(),
                                                q=leaves[2].detach()), spec)
    assert torch.equal(captured.discriminator, want.discriminator)
    assert torch.equal(captured.stats.mi_categorical, want.stats.mi_categorical)
    for leaf, ref in zip(leaves, want_grads):
        assert torch.equal(leaf.grad, ref)
    for counter in triton_backend._counters.values():
        assert counter.item() == 0


def test_no_host_sync():
    case = random_case(RICH, 3000, seed=5, device=DEVICE, confident=True)
    _fwd_bwd(case, RICH)  # compile first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _fwd_bwd(case, RICH)
    finally:
        torch.cuda.set_sync_debug_mode("default")


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


def test_bitwise_deterministic_with_many_programs():
    case = random_case(MNIST, 250_000, seed=7, device=DEVICE, confident=True)
    upstream = random_upstream(7, device=DEVICE)
    first, second = (evaluate(case, MNIST, "triton", upstream) for _ in range(2))
    for name in first.outputs:
        assert torch.equal(first.outputs[name].nan_to_num(7.0), second.outputs[name].nan_to_num(7.0)), name
    for name in first.grads:
        assert torch.equal(first.grads[name], second.grads[name]), name


@pytest.mark.slow
def test_offsets_past_2_to_the_31():
    """B x W > 2^31 elements (bf16 q of 4.3 GB): 8 distinct rows repeated, reduction
    "sum": the losses are 4100 times those of the 8 rows, and the last rows' gradients
    equal theirs (a 32-bit offset would wrap and read the wrong rows)."""
    spec = fastmi.LatentSpec(categorical=(65536,), bernoulli=1, continuous=2)
    repeats = 4100
    small = random_case(spec, 8, dtype=torch.bfloat16, seed=8, device=DEVICE, confident=True)
    assert 8 * repeats * spec.q_width > 2 ** 31
    big = small._replace(
        real=small.real, fake=small.fake.repeat(repeats), q=small.q.repeat(repeats, 1),
        codes=small.codes._replace(**{name: getattr(small.codes, name).repeat(repeats, 1)
                                      for name in ("categorical", "bernoulli", "continuous")}))
    out_small, grads_small = _fwd_bwd(small, spec, reduction="sum")
    out_big, grads_big = _fwd_bwd(big, spec, reduction="sum")
    torch.testing.assert_close(out_big.generator, out_small.generator * repeats, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(out_big.info, out_small.info * repeats, rtol=1e-4, atol=1e-3)
    assert torch.equal(grads_big[2][-8:], grads_small[2])
    assert torch.equal(grads_big[1][-8:], grads_small[1])


def _seconds_per_step(case, spec, backend, iterations=200):
    for _ in range(10):
        _fwd_bwd(case, spec, backend=backend)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        _fwd_bwd(case, spec, backend=backend)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iterations


def test_ten_times_faster_than_eager_at_b64():
    """Forward + backward at B = 64 (MNIST spec, float32), wall clock per step including
    the host: the fused backend must beat the eager composite reference by 10x."""
    case = random_case(MNIST, 64, seed=9, device=DEVICE, confident=True)
    reference = min(_seconds_per_step(case, MNIST, "reference") for _ in range(3))
    fused = min(_seconds_per_step(case, MNIST, "triton") for _ in range(3))
    print(f"B=64 fwd+bwd: reference {reference * 1e6:.1f} us, triton {fused * 1e6:.1f} us, "
          f"{reference / fused:.1f}x")
    assert reference / fused >= 10.0
