"""The InfoGAN loss's GPU checks: what ``python -m fastmi.validate`` runs on a user's GPU,
``benchmarks/gpu_check.sh`` on the project's, and tests/test_gpu_checks.py under pytest.

Each check compares a fused backend with the float64 oracle or checks a behaviour the
kernels promise (fastmi/runtime/validation.py says what a check is):

- correctness: losses, stats and every gradient against the reference in float64 on the
  same rounded inputs, over specs (K = 65536 included), dtypes, options, absent logits;
  the cuda backend also in each forced layout;
- no host sync (``torch.cuda.set_sync_debug_mode("error")``), bit-identical results from
  run to run, inputs never written, invalid codes giving NaN without a fault;
- concurrency: two forwards on two streams at once, and two CUDA graphs replayed on two
  streams at once, each equal to its own eager result, bit for bit;
- CUDA graph capture and replay on new data, and ``torch.compile(fullgraph=True)``;
- (full only) B x W > 2^31 elements.

The checks take a device: on a CPU run (CI) the CUDA-only ones raise Skip, the others run
the same code against the CPU backend or the Triton interpreter.
"""

from __future__ import annotations

import functools

import torch

from ..runtime.graphs import capture_graph
from ..runtime.validation import (Check, Skip, assert_bitwise_equal, dtype_name, needs_cuda, replay_concurrently,
                                  replay_matches_eager, sync)
from .api import infogan_loss
from .testing import (CONT_ONLY, FLOAT32, HUGE, MNIST, MULTI, RICH, TOLERANCES, WIDE, check_backend, random_case,
                      random_upstream)

F32, BF16, F16, F64 = torch.float32, torch.bfloat16, torch.float16, torch.float64

# (name, spec, batch, dtype, options, random_case kwargs); the quick set is the first QUICK
CORRECTNESS = [
    ("mnist", MNIST, 64, F32, {}, {}),
    ("mnist Br != Bf", MNIST, 100_003, F32, {}, {"real_batch": 77_777}),
    ("mnist", MNIST, 65_536, BF16, {}, {}),
    ("huge-k", HUGE, 64, F32, {}, {}),
    ("rich int32 codes", RICH, 4097, F32, {}, {"index_dtype": torch.int32}),
    ("rich", RICH, 1000, F64, {}, {}),
    ("wide", WIDE, 3000, BF16, {}, {}),
    ("rich", RICH, 1000, F16, {}, {}),
    ("rich minimax sum t=0.9", RICH, 999, F32,
     {"generator_loss": "minimax", "reduction": "sum", "real_label": 0.9, "lambda_cont": 2.0}, {}),
    ("multi", MULTI, 20_000, F32, {}, {}),
    ("huge-k many rows", HUGE, 2000, BF16, {}, {}),
    ("mnist no real", MNIST, 1000, F32, {}, {"with_real": False}),
    ("rich no fake", RICH, 1000, BF16, {}, {"with_fake": False}),
    ("continuous only", CONT_ONLY, 5000, F32, {}, {}),
]
QUICK = 6
# the cuda backend with each layout forced (csrc/infogan/cuda/infogan_cuda.h: 0 tile, 1 warp, 2 block)
LAYOUTS = [
    ("tile", 0, RICH, 5000, F32), ("tile", 0, MNIST, 70_000, BF16),
    ("warp", 1, MNIST, 5000, F32), ("warp", 1, MULTI, 3000, BF16), ("warp", 1, HUGE, 300, F32),
    ("block", 2, RICH, 700, F32), ("block", 2, WIDE, 500, BF16),
]


def _leaves(case):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in case[:3]]


def _step(backend, spec, leaves, codes, upstream, **options) -> list:
    """One forward + backward: the outputs, the stats and the gradients (by
    torch.autograd.grad: no .grad accumulation kernels)."""
    out = infogan_loss(*leaves, codes, spec, backend=backend, **options)
    wrt = [t for t in leaves if t is not None]
    grads = torch.autograd.grad([out.discriminator, out.generator, out.info], wrt, upstream)
    return [out.discriminator, out.generator, out.info, out.stats.jsd_bound, out.stats.mi_categorical,
            out.stats.mi_bernoulli, out.stats.mi_continuous, *grads]


# ---- the checks ---------------------------------------------------------------------------------

def correctness(backend, device, spec, batch, dtype, options, kwargs) -> str:
    check_backend(backend, spec, batch, dtype, seed=batch % 1000, options=options, device=device, confident=True,
                  **kwargs)
    sync(device)
    return f"B={batch} W={spec.q_width} {dtype_name(dtype)}"


def forced_layout(device, layout, spec, batch, dtype) -> str:
    needs_cuda(device, "the cuda backend")
    from . import cuda
    ext = cuda.extension()
    ext.set_override(layout, 0)
    try:
        check_backend("cuda", spec, batch, dtype, seed=7, device=device, confident=True)
        sync(device)
    finally:
        ext.set_override(-1, 0)
    return f"B={batch} W={spec.q_width} {dtype_name(dtype)}"


def no_host_sync(backend, device) -> str:
    needs_cuda(device, "torch.cuda.set_sync_debug_mode")
    case = random_case(RICH, 5000, device=device, confident=True)
    leaves, up = _leaves(case), random_upstream(0, device=device)
    _step(backend, RICH, leaves, case.codes, up)  # builds, compiles, first-call allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            _step(backend, RICH, leaves, case.codes, up)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    return "forward + backward under torch.cuda.set_sync_debug_mode('error')"


def determinism_and_inputs(backend, device) -> str:
    batch = 300_001 if torch.device(device).type == "cuda" else 3001
    case = random_case(MULTI, batch, device=device, real_batch=batch // 3)
    before = [t.clone() for t in (case.real, case.fake, case.q, *case.codes[:3])]
    leaves, up = _leaves(case), random_upstream(0, device=device)
    first = _step(backend, MULTI, leaves, case.codes, up)
    second = _step(backend, MULTI, leaves, case.codes, up)
    sync(device)
    assert_bitwise_equal(first, second, "two identical calls")
    for leaf, src in zip(leaves, (case.real, case.fake, case.q)):
        if not torch.equal(leaf.detach(), src):
            raise AssertionError("an input was modified")
    for a, b in zip(before, (case.real, case.fake, case.q, *case.codes[:3])):
        if not torch.equal(a, b):
            raise AssertionError("an input was modified")
    return f"B={batch}: two calls agree bit for bit; inputs untouched"


def invalid_codes(backend, device) -> str:
    if torch.device(device).type != "cuda":
        raise Skip("on CPU tensors invalid codes raise (tests/test_errors.py)")
    case = random_case(RICH, 3000, device=device)
    cat = case.codes.categorical.clone()
    cat[10, 1] = 7
    cat[2999, 0] = -(2**40)
    codes = case.codes._replace(categorical=cat)
    leaves, up = _leaves(case), random_upstream(0, device=device)
    out = _step(backend, RICH, leaves, codes, up)
    torch.cuda.synchronize()  # a fault would surface here
    if not (torch.isnan(out[0]) and torch.isnan(out[1]) and torch.isnan(out[2])):
        raise AssertionError(f"losses should be NaN, got {out[:3]}")
    grad_q = out[-1]  # NaN in the bad code's block, the other rows finite
    if not (torch.isnan(grad_q[10, 3:10]).any() and torch.isfinite(grad_q[11:2999]).all()):
        raise AssertionError("the invalid code's gradient block should hold NaN and the other rows be finite")
    _step(backend, RICH, _leaves(case), case.codes, up)  # the device is still healthy
    torch.cuda.synchronize()
    return "NaN losses and NaN gradient block; no fault"


def large_offsets(backend, device) -> str:
    """B x W > 2^31 elements: a batch of n rows repeated; with mean reduction the losses
    equal the small batch's and each gradient row is the small one's times n / B."""
    needs_cuda(device, "a batch of 2.2e9 elements")
    n, reps = 1000, 160_000                 # B = 160,000,000 rows x W = 14 = 2.24e9 elements
    spec, dtype = MNIST, BF16
    small = random_case(spec, n, dtype=dtype, device=device, seed=4, index_dtype=torch.int32)
    up = random_upstream(0, device=device)
    want = _step(backend, spec, _leaves(small), small.codes, up)
    big_codes = small.codes._replace(categorical=small.codes.categorical.repeat(reps, 1),
                                     continuous=small.codes.continuous.repeat(reps, 1))
    big = small._replace(real=small.real.repeat(reps), fake=small.fake.repeat(reps), q=small.q.repeat(reps, 1),
                         codes=big_codes)
    assert big.q.numel() > 2**31
    got = _step(backend, spec, _leaves(big), big.codes, up)
    torch.cuda.synchronize()
    for i, name in enumerate(("discriminator", "generator", "info")):
        torch.testing.assert_close(got[i], want[i], rtol=2e-3, atol=2e-3, msg=lambda m: f"{name}: {m}")
    scale = n / (n * reps)
    for name, g_big, g_small in (("grad_q", got[-1], want[-1]), ("grad_fake", got[-2], want[-2])):
        expected = g_small.float() * scale  # the last n rows hold the small batch again
        torch.testing.assert_close(g_big[-n:].float(), expected, rtol=2e-2, atol=1e-2 * expected.abs().max().item(),
                                   msg=lambda m: f"{name}'s last rows: {m}")
    del big, got
    torch.cuda.empty_cache()
    return f"B={n * reps:,} x W=14 = {n * reps * 14:,} elements (bf16)"


def _two_cases(device):
    """Two different multi-program problems (different data, the same shapes)."""
    return [random_case(MULTI, 50_000, device=device, seed=seed, real_batch=20_000) for seed in (11, 12)]


def concurrent_streams(backend, device) -> str:
    """Two forward + backward steps launched on two streams at once give each its own
    result (as computed alone), bit for bit: no launch shares reduction state."""
    needs_cuda(device, "concurrent CUDA streams")
    cases, up = _two_cases(device), random_upstream(0, device=device)
    alone = [_step(backend, MULTI, _leaves(c), c.codes, up) for c in cases]
    torch.cuda.synchronize()
    streams = [torch.cuda.Stream() for _ in cases]
    leaves = [_leaves(c) for c in cases]
    for _ in range(5):  # several rounds: the two streams' launches interleave differently
        results = [None, None]
        for i, (case, stream) in enumerate(zip(cases, streams)):
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                results[i] = _step(backend, MULTI, leaves[i], case.codes, up)
        torch.cuda.synchronize()
        for i in range(2):
            assert_bitwise_equal(results[i], alone[i], f"stream {i}")
    return "2 streams x 5 rounds: each equals its own eager result, bit for bit"


def concurrent_graphs(backend, device) -> str:
    """Two CUDA graphs (captured, hence on the capture stream) replayed on two streams at
    once give each its own eager result, bit for bit."""
    needs_cuda(device, "CUDA graphs")
    cases, up = _two_cases(device), random_upstream(0, device=device)
    alone = [_step(backend, MULTI, _leaves(c), c.codes, up) for c in cases]
    graphs = []
    for case in cases:
        leaves = _leaves(case)
        graphs.append(capture_graph(functools.partial(_step, backend, MULTI, leaves, case.codes, up)))
    return replay_concurrently(graphs, alone, assert_bitwise_equal)


def cuda_graph(backend, device, spec, batch, dtype) -> str:
    needs_cuda(device, "CUDA graphs")
    case = random_case(spec, batch, dtype=dtype, device=device, seed=1, confident=True)
    leaves, up, codes = _leaves(case), random_upstream(0, device=device), case.codes

    def step():
        return _step(backend, spec, leaves, codes, up)

    graph, captured = capture_graph(step)
    new = random_case(spec, batch, dtype=dtype, device=device, seed=2, confident=True)

    def refill():
        for dst, src in [*zip(leaves, new[:3]), *zip(codes[:3], new.codes[:3])]:
            if dst is not None:
                dst.copy_(src)

    replay_matches_eager(graph, captured, step, refill)
    return f"B={batch} {dtype_name(dtype)}: replay == eager, bit for bit, twice"


def compiled(backend, device, spec, batch, dtype) -> str:
    case = random_case(spec, batch, dtype=dtype, device=device, seed=3, confident=True)
    up = random_upstream(0, device=device)

    def loss(real, fake, q):
        out = infogan_loss(real, fake, q, case.codes, spec, backend=backend)
        return out.discriminator, out.generator, out.info, out.stats.jsd_bound, out.stats.mi_categorical

    compile_backend = "inductor" if torch.device(device).type == "cuda" else "aot_eager"
    fn = torch.compile(loss, fullgraph=True, dynamic=False, backend=compile_backend)
    results = []
    for f in (loss, fn):
        leaves = _leaves(case)
        outs = f(*leaves)
        grads = torch.autograd.grad(outs[:3], leaves, up)
        results.append([*outs, *grads])
    sync(device)
    rtol, atol, _ = FLOAT32 if dtype != F64 else TOLERANCES[F64]
    for i, (a, b) in enumerate(zip(*results)):
        torch.testing.assert_close(b, a, rtol=rtol, atol=atol * a.abs().max().item(),
                                   msg=lambda m: f"output {i}: compiled vs eager: {m}")
    return f"B={batch} {dtype_name(dtype)}: fullgraph ({compile_backend}), matches eager"


def checks(backends, device="cuda", *, quick: bool = False, full: bool = False) -> list:
    """The checks of ``backends`` on ``device``: the quick set (for ``fastmi.validate``,
    under a minute on an H200), the standard set, or ``full`` (adds B x W > 2^31)."""
    out = []
    cases = CORRECTNESS[:QUICK] if quick else CORRECTNESS
    for backend in backends:
        for name, spec, batch, dtype, options, kwargs in cases:
            out.append(Check("infogan", f"{backend}: oracle, {name} B={batch} {dtype_name(dtype)}",
                             functools.partial(correctness, backend, device, spec, batch, dtype, options, kwargs)))
    if "cuda" in backends:
        for name, layout, spec, batch, dtype in LAYOUTS[: 3 if quick else None]:
            out.append(Check("infogan", f"cuda: oracle, forced {name} layout, B={batch} {dtype_name(dtype)}",
                             functools.partial(forced_layout, device, layout, spec, batch, dtype)))
    for backend in backends:
        out += [
            Check("infogan", f"{backend}: no host sync", functools.partial(no_host_sync, backend, device)),
            Check("infogan", f"{backend}: determinism, inputs untouched",
                  functools.partial(determinism_and_inputs, backend, device)),
            Check("infogan", f"{backend}: invalid codes", functools.partial(invalid_codes, backend, device)),
            Check("infogan", f"{backend}: two streams at once", functools.partial(concurrent_streams, backend, device)),
            Check("infogan", f"{backend}: two CUDA graphs at once",
                  functools.partial(concurrent_graphs, backend, device)),
            Check("infogan", f"{backend}: CUDA graph, MNIST", functools.partial(cuda_graph, backend, device, MNIST,
                                                                                100_000, F32)),
            Check("infogan", f"{backend}: CUDA graph, rich bf16", functools.partial(cuda_graph, backend, device, RICH,
                                                                                    3000, BF16)),
            Check("infogan", f"{backend}: torch.compile", functools.partial(compiled, backend, device, MNIST, 4096,
                                                                            F32)),
        ]
        if full:
            out.append(Check("infogan", f"{backend}: B x W > 2^31", functools.partial(large_offsets, backend, device)))
    return out
