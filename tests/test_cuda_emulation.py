"""The CUDA kernels themselves, run on the CPU by csrc/common/cuda/emulation.h, against the
float64 reference: losses, stats and every gradient, for each layout (tile, warp,
block), dtype, index dtype and option; plus the binding's checks, determinism, two
launches whose blocks interleave, invalid codes, and the custom-op wiring under
torch.compile.

The emulation runs each CUDA thread as a fiber in a shuffled order at every barrier, so
a missing __syncthreads, a shuffle that not every lane reaches, or a read of unwritten
shared memory (filled with NaN) fails here; what it cannot show (races between blocks,
speed) is checked by benchmarks/gpu_check.sh on a GPU.
"""

from __future__ import annotations

import functools

import pytest
import torch

import fastmi
from fastmi.infogan import cuda
from fastmi.infogan.backends import REGISTRY
from fastmi.infogan.inputs import prepare_inputs
from fastmi.infogan.problem import make_problem
from helpers import (BERN_ONLY, CONT_ONLY, HUGE, MNIST, MULTI, RICH, WIDE, assert_close, check_backend,
                     emulate_cuda_backend, oracle, random_case, random_upstream)

TILE, WARP, BLOCK, AUTO = 0, 1, 2, -1


@pytest.fixture(scope="module")
def ext():
    try:
        return cuda.emulation_extension()
    except Exception as exc:  # no C++ compiler: nothing here can run
        pytest.skip(f"the CPU emulation of the CUDA kernels does not build here: {exc}")


@pytest.fixture(autouse=True)
def _reset_override(ext):
    yield
    ext.set_override(AUTO, 0)


def run(ext, spec, batch, *, dtype=torch.float32, layout=AUTO, max_blocks=0, seed=None, options=None,
        upstream_mask=(True, True, True), misalign=False, **case_kwargs):
    """Forward and backward through the emulated kernels; returns (case, upstream, outputs, grads)."""
    options = options or {}
    seed = batch if seed is None else seed
    case = random_case(spec, batch, dtype=dtype, seed=seed, **case_kwargs)
    if misalign:  # q at a 4-byte offset: the tiles take the scalar path
        buf = torch.empty(case.q.numel() + 1, dtype=case.q.dtype)
        buf[1:] = case.q.reshape(-1)
        case = case._replace(q=buf[1:].view(case.q.shape))
        assert case.q.data_ptr() % 16 != 0
    upstream = random_upstream(seed)
    problem = make_problem(spec, **options)
    inputs = prepare_inputs(case.real, case.fake, case.q, case.codes, problem)
    ext.set_override(layout, max_blocks)
    d, g, i, stats = ext.forward_op(*inputs, *problem.kernel_args())
    acc = d.dtype
    ups = [u.to(acc) if keep else None for u, keep in zip(upstream, upstream_mask)]
    grads = ext.backward_op(*ups, *inputs, *problem.kernel_args())
    outputs = {"discriminator": d, "generator": g, "info": i, "jsd_bound": stats[0], "mi_bernoulli": stats[1],
               "mi_continuous": stats[2], "mi_categorical": stats[3:]}
    used = tuple(u if keep else torch.zeros(()) for u, keep in zip(upstream, upstream_mask))
    return case, used, outputs, dict(zip(("real_logits", "fake_logits", "q"), grads)), ext.describe(
        *inputs, *problem.kernel_args())


def check(ext, spec, batch, *, dtype=torch.float32, options=None, expect_layout=None, **kwargs):
    case, upstream, outputs, grads, plan = run(ext, spec, batch, dtype=dtype, options=options, **kwargs)
    has_d, has_g, _ = kwargs.get("upstream_mask", (True, True, True))
    unused = {"real_logits": not has_d, "fake_logits": not (has_d or has_g), "q": False}
    if expect_layout is not None:
        assert plan["forward"][0] == expect_layout and plan["backward"][0] == expect_layout, plan
    want = oracle(case, spec, upstream, **(options or {}))
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    for name, value in want.outputs.items():
        assert outputs[name].dtype == acc, f"output {name} dtype {outputs[name].dtype}"
        assert_close(outputs[name], value, dtype, f"output {name}")
    for name, value in want.grads.items():
        got = grads[name]
        if value is None or unused[name]:  # absent, or used by no loss with an upstream grad
            assert got.numel() == 0, f"grad {name} of an absent or unused input must be empty, got {tuple(got.shape)}"
            continue
        source = {"real_logits": case.real, "fake_logits": case.fake, "q": case.q}[name]
        assert got.dtype == source.dtype and got.shape == source.shape, f"grad {name}"
        assert_close(got, value, dtype, f"grad {name}")
    return plan


# ---- the layouts against the oracle ---------------------------------------------------------

# max_blocks=2 makes each block loop over several tiles / rows (the grid-stride path and
# the barriers between iterations); 0 lets the plan give every tile its own block.
@pytest.mark.parametrize("max_blocks", [0, 2])
@pytest.mark.parametrize("batch", [1, 63, 257, 1100])
@pytest.mark.parametrize("spec", [MNIST, RICH], ids=["mnist", "rich"])
def test_tile_layout_matches_reference(ext, spec, batch, max_blocks):
    check(ext, spec, batch, expect_layout="tile", max_blocks=max_blocks, confident=True)


@pytest.mark.parametrize("max_blocks", [0, 2])
@pytest.mark.parametrize("spec", [MNIST, RICH, WIDE, MULTI], ids=["mnist", "rich", "wide", "multi"])
def test_warp_layout_matches_reference(ext, spec, max_blocks):
    check(ext, spec, 37, layout=WARP, expect_layout="warp", max_blocks=max_blocks, confident=True)


@pytest.mark.parametrize("max_blocks", [0, 2])
@pytest.mark.parametrize("spec", [MNIST, RICH, WIDE, MULTI], ids=["mnist", "rich", "wide", "multi"])
def test_block_layout_matches_reference(ext, spec, max_blocks):
    check(ext, spec, 11, layout=BLOCK, expect_layout="block", max_blocks=max_blocks, confident=True)


def test_auto_layouts_for_wide_rows(ext):
    check(ext, WIDE, 40, expect_layout="warp")          # W = 1008: a warp per row
    check(ext, HUGE, 5, expect_layout="block")          # K = 65536 and few rows: a block per row
    check(ext, MULTI, 300, expect_layout="warp")        # W = 85 with few rows


def test_huge_code_on_warp_layout(ext):
    check(ext, HUGE, 3, layout=WARP, confident=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", [TILE, WARP, BLOCK], ids=["tile", "warp", "block"])
def test_dtypes(ext, dtype, layout):
    check(ext, RICH, 70 if layout != BLOCK else 9, dtype=dtype, layout=layout)


@pytest.mark.parametrize("layout", [TILE, WARP], ids=["tile", "warp"])
def test_int32_codes_and_real_batch_of_other_size(ext, layout):
    check(ext, MULTI if layout == WARP else RICH, 50, layout=layout, real_batch=173, index_dtype=torch.int32)


@pytest.mark.parametrize("which", ["no_real", "no_fake", "neither"])
def test_absent_logits(ext, which):
    kwargs = dict(with_real=which == "no_fake", with_fake=which == "no_real")
    check(ext, MNIST, 90, **kwargs)
    check(ext, WIDE, 7, layout=WARP, **kwargs)


@pytest.mark.parametrize("spec", [CONT_ONLY, BERN_ONLY], ids=["continuous", "bernoulli"])
def test_specs_without_categorical_codes(ext, spec):
    check(ext, spec, 300)
    check(ext, spec, 20, layout=WARP)


@pytest.mark.parametrize("options", [
    dict(generator_loss="minimax", reduction="sum"),
    dict(real_label=0.9, lambda_cat=0.5, lambda_cont=2.0),
], ids=["minimax-sum", "smoothing-lambdas"])
def test_options(ext, options):
    check(ext, RICH, 130, options=options)
    check(ext, RICH, 13, layout=BLOCK, options=options)


def test_absent_upstream_grads_count_as_zero(ext):
    check(ext, RICH, 40, upstream_mask=(False, True, False))
    check(ext, RICH, 40, upstream_mask=(False, False, False))


def test_unaligned_q_takes_the_scalar_path(ext):
    for dtype in (torch.float32, torch.bfloat16):
        check(ext, MNIST, 300, dtype=dtype, misalign=True, expect_layout="tile")


def test_grids_with_more_blocks_than_threads(ext, monkeypatch):
    """The last block sums 300+ block columns: several per thread."""
    monkeypatch.setenv("FASTMI_EMULATED_SMS", "200")
    plan = check(ext, MNIST, 2600, layout=WARP)
    assert plan["forward"][1] > 256, plan
    plan = check(ext, MNIST, 5000, max_blocks=1)   # one block does every tile
    assert plan["forward"][1] == 1, plan


# ---- behaviour ----------------------------------------------------------------------------------

def test_forward_is_deterministic_and_inputs_are_untouched(ext):
    case = random_case(MULTI, 500, seed=3)
    problem = make_problem(MULTI)
    inputs = prepare_inputs(case.real, case.fake, case.q, case.codes, problem)
    before = [None if t is None else t.clone() for t in inputs]
    first = ext.forward_op(*inputs, *problem.kernel_args())
    second = ext.forward_op(*inputs, *problem.kernel_args())
    for a, b in zip(first, second):
        assert torch.equal(a, b), "two forwards of one batch must agree bit for bit"
    up = tuple(u.float() for u in random_upstream(3))
    g1 = ext.backward_op(*up, *inputs, *problem.kernel_args())
    g2 = ext.backward_op(*up, *inputs, *problem.kernel_args())
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)
    for a, b in zip(inputs, before):
        assert (a is None and b is None) or torch.equal(a, b), "an input was written"


@pytest.mark.parametrize("layout", [TILE, WARP, BLOCK], ids=["tile", "warp", "block"])
def test_invalid_codes_make_nan_without_reading_out_of_bounds(ext, layout):
    spec = RICH
    case = random_case(spec, 20, seed=5)
    cat = case.codes.categorical.clone()
    cat[4, 1] = 7          # K = 7: one past the end
    cat[9, 0] = -1000000   # far before the start
    bern = case.codes.bernoulli.clone()
    bern[2, 1] = 0.5
    codes = case.codes._replace(categorical=cat, bernoulli=bern)
    problem = make_problem(spec)
    inputs = prepare_inputs(case.real, case.fake, case.q, codes, problem)
    ext.set_override(layout, 0)
    d, g, i, stats = ext.forward_op(*inputs, *problem.kernel_args())
    assert torch.isnan(d) and torch.isnan(g) and torch.isnan(i)
    assert torch.isnan(stats[3:]).all() and torch.isnan(stats[1]), stats      # mi_categorical, mi_bernoulli
    assert torch.isfinite(stats[0]) and torch.isfinite(stats[2]), stats       # jsd, mi_continuous
    up = tuple(u.float() for u in random_upstream(5))
    _, _, grad_q = ext.backward_op(*up, *inputs, *problem.kernel_args())
    bad = torch.zeros_like(grad_q, dtype=torch.bool)
    bad[4, 3:10] = True    # row 4, code 1 (columns 3..9)
    bad[9, 0:3] = True     # row 9, code 0
    bad[2, 11] = True      # row 2, bernoulli code 1 (column 10 + 1)
    assert torch.isnan(grad_q[bad]).all()
    assert torch.isfinite(grad_q[~bad]).all()


def test_binding_rejects_bad_inputs(ext):
    case = random_case(MNIST, 8, seed=1)
    problem = make_problem(MNIST)
    inputs = prepare_inputs(case.real, case.fake, case.q, case.codes, problem)
    args = problem.kernel_args()
    with pytest.raises(ValueError, match=r"q must be a contiguous \[B >= 1, 14\]"):
        ext.forward_op(inputs.real, inputs.fake, inputs.q[:, :13].contiguous(), *inputs[3:], *args)
    with pytest.raises(ValueError, match="fake_logits must be a contiguous 1-D tensor of 8 rows"):
        ext.forward_op(inputs.real, inputs.fake[:5], inputs.q, *inputs[3:], *args)
    with pytest.raises(TypeError, match="codes.categorical must be int32 or int64"):
        ext.forward_op(inputs.real, inputs.fake, inputs.q, inputs.categorical.float(), *inputs[4:], *args)
    with pytest.raises(TypeError, match="real_logits must have q's dtype"):
        ext.forward_op(inputs.real.double(), *inputs[1:], *args)
    with pytest.raises(ValueError, match="codes.continuous is missing"):
        ext.forward_op(*inputs[:5], None, *args)
    many = [2] * (ext.MAX_CATEGORICAL + 1)
    with pytest.raises(ValueError, match="at most 128 categorical codes"):
        ext.forward_op(inputs.real, inputs.fake, torch.zeros(8, 2 * len(many) + 4), torch.zeros(8, len(many),
                       dtype=torch.long), None, inputs.continuous, many, *args[1:])
    with pytest.raises(ValueError, match="must hold one element"):
        ext.backward_op(torch.ones(2), None, None, *inputs, *args)


# ---- autograd and torch.compile through define_fused_ops ---------------------------------------

@functools.lru_cache(maxsize=None)
def emulated_ops():
    """The emulated kernels behind the same define_fused_ops wiring as backend='cuda'."""
    from fastmi.infogan.ops import define_extension_ops

    return define_extension_ops("cuda_emulated_test", cuda.emulation_extension)


def _loss_and_grads(fn, case, spec, upstream):
    leaves = [None if t is None else t.detach().clone().requires_grad_(True) for t in case[:3]]
    d, g, i, stats = fn(leaves, case.codes)
    torch.autograd.backward([d, g, i], list(upstream))
    return (d.detach(), g.detach(), i.detach(), stats.jsd_bound), [None if t is None else t.grad for t in leaves]


def test_eager_autograd_function_and_torch_compile(ext):
    spec = RICH
    ops = emulated_ops()
    problem = make_problem(spec)
    case = random_case(spec, 33, seed=11)
    upstream = tuple(u.float() for u in random_upstream(11))

    def loss(leaves, codes):
        inputs = prepare_inputs(leaves[0], leaves[1], leaves[2], codes, problem)
        return ops.loss(inputs, problem)

    want = oracle(case, spec, upstream)
    for fn in (loss, torch.compile(loss, fullgraph=True, backend="aot_eager")):
        outs, grads = _loss_and_grads(fn, case, spec, upstream)
        for got, name in zip(outs, ("discriminator", "generator", "info", "jsd_bound")):
            assert_close(got, want.outputs[name], torch.float32, name)
        for got, name in zip(grads, ("real_logits", "fake_logits", "q")):
            assert_close(got, want.grads[name], torch.float32, f"grad {name}")


def test_emulation_switches_live_in_device_cuh():
    """device.cuh alone decides between the GPU build and the emulation: the other kernel
    files are written once for both, so the emulation runs the code the GPU runs."""
    for path in sorted(cuda.KERNEL_DIR.iterdir()):
        if path.suffix in (".cu", ".cuh") and path.name != "device.cuh":
            assert "FASTMI_CUDA_EMULATION" not in path.read_text(), f"{path.name} switches on the emulation"


@pytest.mark.parametrize("spec,batch,dtype", [(MNIST, 300, torch.float32), (RICH, 50, torch.bfloat16),
                                              (WIDE, 6, torch.float32)], ids=["mnist", "rich-bf16", "wide"])
def test_public_api_through_the_cuda_backend_module(ext, monkeypatch, spec, batch, dtype):
    """fastmi.infogan_loss(backend="cuda") end to end (registry, cuda.loss, the eager
    autograd.Function of define_fused_ops, the binding, the kernels), with the emulated
    kernels standing in for the GPU build and CPU tensors for CUDA ones."""
    emulate_cuda_backend(monkeypatch, ext)
    check_backend("cuda", spec, batch, dtype, seed=batch, confident=True, real_batch=batch + 5)


def test_public_api_compiles_without_graph_breaks(ext, monkeypatch):
    """torch.compile(fullgraph=True) of fastmi.infogan_loss(backend="cuda"): the registry
    resolves at trace time and the kernels run as the fastmi::cuda_* custom ops."""
    emulate_cuda_backend(monkeypatch, ext)
    spec = MNIST
    case = random_case(spec, 70, seed=4)
    upstream = tuple(u.float() for u in random_upstream(4))

    def loss(leaves, codes):
        out = fastmi.infogan_loss(*leaves, codes, spec, backend="cuda")
        return out.discriminator, out.generator, out.info, out.stats

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    outs, grads = _loss_and_grads(compiled, case, spec, upstream)
    want = oracle(case, spec, upstream)
    for got, name in zip(outs, ("discriminator", "generator", "info", "jsd_bound")):
        assert_close(got, want.outputs[name], torch.float32, name)
    for got, name in zip(grads, ("real_logits", "fake_logits", "q")):
        assert_close(got, want.grads[name], torch.float32, f"grad {name}")


def test_two_forwards_on_two_streams_whose_blocks_interleave(ext):
    """Two forwards of different data launched on two (emulated) streams, their blocks run
    alternately, as concurrent streams or CUDA graphs may run them on a GPU: each gets its
    own result, bit for bit. A reduction whose state two launches share (a ticket counter
    per stream slot) gives a wrong or unwritten result here."""
    ext.set_override(AUTO, 4)  # several blocks per launch: a multi-block reduction
    problem = make_problem(MULTI)
    inputs = [prepare_inputs(*random_case(MULTI, 600, seed=seed, real_batch=300)[:3],
                             random_case(MULTI, 600, seed=seed).codes, problem) for seed in (1, 2)]
    alone = [ext.forward_op(*i, *problem.kernel_args()) for i in inputs]
    assert ext.describe(*inputs[0], *problem.kernel_args())["forward"][1] == 4
    ext.defer_launches(True)
    try:
        together = []
        for stream, i in enumerate(inputs):
            ext.set_stream(stream)
            together.append(ext.forward_op(*i, *problem.kernel_args()))
    finally:
        ext.set_stream(0)
        ext.run_deferred()
    for k in range(2):
        for got, want in zip(together[k], alone[k]):
            assert torch.equal(got, want), f"stream {k}: {got} != {want}"


def test_more_categorical_codes_than_the_kernel_argument_holds(ext, monkeypatch):
    """m > 128: backend='cuda' says so before any launch, naming the cap and triton;
    backend='auto' (were it to choose cuda) runs the reference instead."""
    from fastmi.infogan import cuda as cuda_backend
    assert cuda_backend.MAX_CATEGORICAL == ext.MAX_CATEGORICAL
    emulate_cuda_backend(monkeypatch, ext)
    monkeypatch.setattr(REGISTRY, "_resolved", {("auto", "cpu"): "cuda"})
    spec = fastmi.LatentSpec(categorical=(2,) * (ext.MAX_CATEGORICAL + 1), continuous=1)
    case = random_case(spec, 6, seed=3)
    with pytest.raises(ValueError, match=r"backend 'cuda' cannot run this call: the cuda backend takes at most "
                                         r"128 categorical codes per call .* got 129; backend='triton'"):
        fastmi.infogan_loss(case.real, case.fake, case.q, case.codes, spec, backend="cuda")
    REGISTRY.resolve("cuda", "cpu")  # the limit is known once cuda was resolved
    got = fastmi.infogan_loss(case.real, case.fake, case.q, case.codes, spec, backend="auto")
    want = fastmi.infogan_loss(case.real, case.fake, case.q, case.codes, spec, backend="reference")
    assert torch.equal(got.discriminator, want.discriminator)
