"""Every critic_bound Triton kernel specialization that the tests use, and those of the GPU
benchmark's shapes, compiles for sm_90 (H100 / H200) ahead of time, on this GPU-less
machine, without a register spill (tests/triton_aot.py: recorded launches, triton's own
binder, triton.compile for GPUTarget("cuda", 90, 32), ptxas -v).

The launches are those of tests/test_critic_triton_interpreter.py, made by
fastmi/critic/triton.py with its kernels swapped for recorders: the contract vectors, the
CASES, each specialization the hypothesis matrix can draw (with SMALL_TILES, a compiled
kernel depends only on the problem's flags, the bias, the dtype and d: the kernels do not
specialize their integer arguments, kernels/critic/config.py), the row problems of
group=, gradcheck's shapes and the smaller tests'; plus bfloat16 at d = 512 and 1024 and
float32 and float16 at d = 512 with the default tiles, which GPU runs use
(benchmarks/critic_gpu.py). Also: the ops' schemas as triton_op infers them, the
constexprs as the kernels' trailing parameters (the cached-runner launch relies on it),
the value indices against bounds.PARTIALS, and torch.compile tracing into the kernels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")

if os.environ.get("TRITON_INTERPRET") == "1":  # kernels decorated for the interpreter cannot compile
    pytest.skip("ahead-of-time compilation needs TRITON_INTERPRET unset", allow_module_level=True)

from critic_helpers import CASES, ESTIMATORS, split_case  # noqa: E402
from fastmi.critic import bounds  # noqa: E402
from fastmi.critic import ops as critic_ops  # noqa: E402
from fastmi.critic import triton as triton_backend  # noqa: E402
from fastmi.critic.inputs import prepare_inputs  # noqa: E402
from fastmi.critic.problem import make_problem  # noqa: E402
from fastmi.kernels.critic import config  # noqa: E402
from test_critic_triton_interpreter import (CASE_DIM, CASE_DTYPES, GRADCHECK_SHAPE, HALF_CASES,  # noqa: E402
                                            HALF_DTYPES, MATRIX_DIM, MATRIX_DTYPES, SMALL_TILES,
                                            group_row_problems)
from triton_aot import Recorder, Sm90Driver, compile_all, specializations  # noqa: E402

NAMES = ("critic_tiles_kernel", "critic_merge_kernel", "critic_finalize_kernel", "critic_grad_kernel",
         "critic_split_sum_kernel", "critic_scalar_grads_kernel")
KERNELS = {name: getattr(triton_backend, name) for name in NAMES}
VECTORS = json.loads((Path(__file__).parent / "data" / "critic_vectors.json").read_text())["cases"]
# (estimator, symmetric) of every problem kind, and the GPU benchmark's shapes
KINDS = [("infonce", True)] + [(e, False) for e in ESTIMATORS]
GPU_SHAPES = [(torch.bfloat16, 512), (torch.bfloat16, 1024), (torch.float32, 512), (torch.float16, 512)]


def _call(x, y, estimator, *, symmetric=False, offset=0, normalize=False, clip=5.0, scale=2.0, bias=None):
    """One forward and one backward through the backend, as the public API makes them."""
    problem = make_problem(estimator, symmetric, normalize, clip, offset)
    inputs = prepare_inputs(x, y, scale, bias, problem)
    acc = torch.float64 if inputs.x.dtype == torch.float64 else torch.float32
    saved = triton_backend.forward(*inputs, *problem.rows)
    triton_backend.backward(torch.ones(len(bounds.PARTIALS), dtype=acc), *inputs, *saved, *problem.rows)


def _rows(rows, cols, dim, dtype):
    return torch.ones(rows, dim, dtype=dtype), torch.ones(cols, dim, dtype=dtype)


def _launches_of_the_tests() -> None:
    for case in VECTORS:
        x = torch.tensor(case["inputs"]["x"], dtype=torch.float64)
        y = torch.tensor(case["inputs"]["y"], dtype=torch.float64)
        options = {name: case[name] for name in ("offset", "symmetric", "normalize", "clip") if name in case}
        _call(x, y, case["estimator"], scale=case["scale"], bias=case.get("bias"), **options)
    for case, dtypes in [(c, CASE_DTYPES) for c in CASES] + [(c, HALF_DTYPES) for c in HALF_CASES]:
        rows, cols, options = split_case(case)
        for dtype in dtypes:
            _call(*_rows(rows, cols, CASE_DIM, dtype), **options)
    rows, cols, dim, offset = GRADCHECK_SHAPE
    for estimator in ESTIMATORS:
        _call(*_rows(rows, cols, dim, torch.float64), estimator, offset=offset, bias=-0.3)
    _call(*_rows(6, 6, dim, torch.float64), "infonce", symmetric=True)
    for options in (dict(estimator="infonce", symmetric=True), dict(estimator="siglip", bias=-10.0),
                    dict(estimator="js"), dict(estimator="dv"), dict(estimator="smile")):   # large scores
        _call(*_rows(12, 12, CASE_DIM, torch.float32), normalize=True, scale=100.0, **options)
    for dtype in (torch.float32, torch.bfloat16):                                        # inputs never written
        _call(*_rows(20, 25, CASE_DIM, dtype), "siglip", offset=3, bias=-1.0)


def _launches_of_small_tiles(monkeypatch) -> None:
    for name, value in SMALL_TILES.items():
        monkeypatch.setattr(config, name, value)
    monkeypatch.setattr(triton_backend, "_plans", {})
    for estimator, symmetric in KINDS:          # the hypothesis matrix's draws, and the determinism test's
        for bias in (None, 0.5):
            for dtype in MATRIX_DTYPES:
                _call(*_rows(45, 45 if symmetric else 50, MATRIX_DIM, dtype), estimator, symmetric=symmetric,
                      offset=0 if symmetric else 5, bias=bias)
    for _, problem, cols in group_row_problems(20):
        x, y = _rows(20, cols, MATRIX_DIM, torch.float32)
        scale, bias = torch.tensor(3.0), torch.tensor(-0.5)
        saved = triton_backend.forward(x, y, scale, bias, *problem)
        triton_backend.backward(torch.ones(len(bounds.PARTIALS)), x, y, scale, bias, *saved, *problem)


def _launches_of_gpu_shapes() -> None:
    for dtype, dim in GPU_SHAPES:
        kinds = KINDS if dtype == torch.bfloat16 and dim == 512 else [("infonce", True), ("siglip", False)]
        for estimator, symmetric in kinds:
            _call(*_rows(65536, 65536, dim, dtype), estimator, symmetric=symmetric,
                  bias=-10.0 if estimator == "siglip" else None)


def _record(*steps) -> list:
    launches = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in NAMES:
            monkeypatch.setattr(triton_backend, name, Recorder(name, launches))
        monkeypatch.setattr(triton_backend, "_plans", {})
        for step in steps:
            step(monkeypatch) if step is _launches_of_small_tiles else step()
    return launches


LAUNCHES = _record(_launches_of_the_tests, _launches_of_gpu_shapes, _launches_of_small_tiles)  # small tiles last
SPECIALIZATIONS = specializations(LAUNCHES, KERNELS)
DESCRIBED = ("DIM", "BLOCK_M", "BLOCK_N", "BLOCK_O", "BLOCK_T", "FP64", "HALF", "RESCALE", "ROW_LSE",
             "COL_LSE", "ARGMAX", "POS", "NEG_LSE_ON", "NEG_SP_ON", "CLIP_ON", "OWN_IS_X", "G_POS_SUM", "G_ROW",
             "G_COL", "G_NEG_LSE", "G_POS_SP", "G_NEG_SP", "G_CLIP")


def _describe(spec) -> str:
    named = spec.named_constexprs()
    inputs = spec.signature.get("x_ptr", spec.signature.get("own_ptr", ""))
    flags = " ".join(f"{k}={named[k]}" for k in DESCRIBED if k in named)
    return f"{spec.name} {inputs} warps={spec.options.num_warps} stages={spec.options.num_stages} {flags}"


def test_the_matrix_covers_every_dtype_layout_and_problem():
    """The compiled set holds each input dtype in both big kernels, both backward sides,
    every differentiated partial, the column LSEs, and the benchmark's
    default 16-bit tiles at d = 512 and 1024."""
    seen = set()
    for spec in SPECIALIZATIONS.values():
        named = spec.named_constexprs()
        if spec.name == "critic_tiles_kernel":
            seen.add(("tiles", spec.signature["x_ptr"]))
            seen.update(("tiles", k) for k in ("COL_LSE", "NEG_LSE_ON", "NEG_SP_ON", "CLIP_ON")
                        if named[k])
            seen.add(("tiles", named["BLOCK_M"], named["BLOCK_N"], named["DIM"]))
        if spec.name == "critic_grad_kernel":
            seen.add(("grad", spec.signature["own_ptr"], named["OWN_IS_X"]))
            seen.update(("grad", k) for k in DESCRIBED[-7:] if named[k])
    for dtype in ("*fp32", "*bf16", "*fp16", "*fp64"):
        assert ("tiles", dtype) in seen
        assert ("grad", dtype, True) in seen and ("grad", dtype, False) in seen
    for flag in ("COL_LSE", "NEG_LSE_ON", "NEG_SP_ON", "CLIP_ON"):
        assert ("tiles", flag) in seen, flag
    for flag in DESCRIBED[-7:]:
        if flag != "G_CLIP":  # neg_lse_clip is never differentiated: smile's gradient is js's
            assert ("grad", flag) in seen, flag
    tile_m, tile_n = config.FORWARD_TILES["16bit"][:2]
    for dim in (512, 1024):
        assert ("tiles", tile_m, tile_n, dim) in seen
    assert {s.name for s in SPECIALIZATIONS.values()} == set(NAMES)


@pytest.fixture(scope="module")
def compiled():
    """Every specialization compiled once, in parallel (a few minutes one at a time)."""
    return compile_all(KERNELS, SPECIALIZATIONS)


@pytest.mark.parametrize("key", list(SPECIALIZATIONS), ids=[f"{k[0]}-{i}" for i, k in enumerate(SPECIALIZATIONS)])
def test_compiles_for_sm90_without_spills(key, compiled):
    spec, result = SPECIALIZATIONS[key], compiled[key]
    what = _describe(spec)
    assert not isinstance(result, str), f"{what}: {result}"
    print(f"{what}: {result.registers} registers, shared {result.shared} B")
    assert (result.spill_stores, result.spill_loads) == (0, 0), \
        f"{what}: spills {result.spill_stores} B stored, {result.spill_loads} B loaded"


def test_constexprs_are_the_last_parameters_in_order():
    """The cached-runner launch (fastmi/runtime/triton_launch.py launch) appends the constexpr
    values to the runtime arguments: they must be exactly the kernel's trailing parameters."""
    for name, args, kwargs in LAUNCHES:
        kernel = KERNELS[name]
        constexprs = [k for k in kwargs if k not in ("num_warps", "num_stages")]
        assert constexprs == kernel.arg_names[len(args):], name
        assert all(p.is_constexpr for p in kernel.params[len(args):])
        assert not any(p.is_constexpr for p in kernel.params[:len(args)])


def test_value_indices_follow_bounds():
    assert [getattr(config, name.upper()) for name in bounds.PARTIALS] == list(range(len(bounds.PARTIALS)))
    assert config.N_PARTIALS == len(bounds.PARTIALS)


def test_op_schemas_match_ops_py():
    """triton_op infers the schemas from the annotations of forward/backward (it ignores
    ``schema=``): they must be the ones ops.py defines, up to int -> SymInt."""
    for op, name, schema in ((triton_backend.ops.forward, "critic_triton_forward", critic_ops.FORWARD_SCHEMA),
                             (triton_backend.ops.backward, "critic_triton_backward", critic_ops.BACKWARD_SCHEMA)):
        inferred = str(op._opoverload._schema).replace("SymInt", "int")
        assert inferred == f"fastmi::{name}{schema}"


# torch's own config.patch, not monkeypatch (see tests/test_triton_aot.py)
@torch._functorch.config.patch(force_non_lazy_backward_lowering=True)
def test_compile_traces_the_kernels_without_graph_break(monkeypatch):
    """torch.compile(fullgraph=True) of a loss and its backward with the GPU registration
    (triton_op): the graphs hold the three forward and the backward kernels, each writing
    only its outputs and the call's own workspaces (no input cloned, no shared state)."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    monkeypatch.setattr(triton.runtime.driver, "_active", Sm90Driver())
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm.code)
        return make_boxed_func(gm.forward)

    problem = make_problem("infonce", True, False, 5.0, 0)

    def step(x, y, scale):
        inputs = prepare_inputs(x, y, scale, None, problem)
        found = triton_backend.partials(*inputs, problem.rows)
        return bounds.finish("infonce", True, problem.differentiate, found, bounds.Counts.single(64, 64)).loss

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend=aot_autograd(fw_compiler=capture, bw_compiler=capture))
    leaves = [torch.randn(64, 32, requires_grad=True), torch.randn(64, 32, requires_grad=True),
              torch.tensor(2.0, requires_grad=True)]
    with pytest.raises(Exception):  # tracing done; running the kernels needs a GPU
        compiled(*leaves)[0].backward()
    assert len(graphs) == 2, graphs
    forward_graph, backward_graph = graphs
    assert forward_graph.count("triton_kernel_wrapper_functional(") == 3
    assert backward_graph.count("triton_kernel_wrapper_functional(") >= 3   # dx, dy, scalars (+ split sums)
    assert "aten.clone" not in forward_graph + backward_graph
    assert "_tensor_constant" not in forward_graph + backward_graph
