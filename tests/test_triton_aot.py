"""Every Triton kernel specialization the tests use compiles for sm_90 (H100/H200) ahead
of time, on this GPU-less machine, without a register spill.

The specializations are the launches of the interpreted test matrix
(tests/test_triton_interpreter.py CASES, plus the shapes of the contract-vector,
extreme-value, NaN and gradcheck tests it also runs): each case's forward and its
backward with all three and with one upstream grad are run
through fastmi/infogan/triton.py with the kernels swapped for recorders, so the
arguments are exactly those the backend passes. Each recorded launch is specialized as
``JITFunction.run`` does on a GPU (triton's own binder: pointer dtypes, int and
alignment specialization, constexprs, launch options) and compiled with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))``. The spill count
comes from running the bundled ptxas with ``-v`` on the PTX (CompiledKernel.n_spills
needs a loaded kernel, i.e. a GPU).

This module also traces the GPU registration (``torch.library.triton_op``) under
torch.compile: the graph must hold the two kernels, with no graph break.
"""

from __future__ import annotations

import os

import pytest
import torch

triton = pytest.importorskip("triton")

if os.environ.get("TRITON_INTERPRET") == "1":  # kernels decorated for the interpreter cannot compile
    pytest.skip("ahead-of-time compilation needs TRITON_INTERPRET unset", allow_module_level=True)

import fastmi  # noqa: E402
from fastmi.infogan import ops as fused_op  # noqa: E402
from fastmi.infogan import triton as triton_backend  # noqa: E402
from fastmi.infogan.inputs import prepare_inputs  # noqa: E402
from fastmi.infogan.problem import make_problem  # noqa: E402
from fastmi.kernels.infogan.backward import infogan_backward_kernel  # noqa: E402
from fastmi.kernels.infogan.forward import infogan_finalize_kernel, infogan_forward_kernel  # noqa: E402
import test_contract_vectors as contract  # noqa: E402
import test_numerics as numerics  # noqa: E402
from helpers import random_case  # noqa: E402
from test_triton_interpreter import CASES, Case  # noqa: E402
from triton_aot import Recorder, Sm90Driver, compile_sm90, specializations  # noqa: E402

KERNELS = {"forward": infogan_forward_kernel, "finalize": infogan_finalize_kernel,
           "backward": infogan_backward_kernel}


def _all_cases() -> list:
    """CASES plus the shapes of the backend-generic checks that the interpreted suite also
    runs on this backend (contract vectors, extremes, NaN inputs, gradcheck)."""
    cases = list(CASES)
    for i, vector in enumerate(contract.VECTORS):
        inputs = vector["inputs"]
        cases.append(Case(f"contract-{i}", contract._spec(vector), len(inputs["q"]), torch.float64,
                          options=vector["options"], kwargs=dict(real_batch=len(inputs["real_logits"]))))
    for dtype in (torch.float32, torch.bfloat16):
        cases.append(Case(f"extreme-{dtype}", numerics.SPEC, 64, dtype))
    cases.append(Case("nan", numerics.SPEC, 40))
    cases.append(Case("gradcheck", numerics.SPEC, 5, torch.float64, kwargs=dict(real_batch=4)))
    cases.append(Case("gradcheck-fixed", numerics.FIXED, 5, torch.float64,
                      options=dict(generator_loss="minimax", reduction="sum", real_label=0.8),
                      kwargs=dict(real_batch=4)))
    return cases


def _recorded_launches() -> list:
    launches = []
    saved = dict(triton_backend.__dict__)
    for name in KERNELS:
        setattr(triton_backend, f"infogan_{name}_kernel", Recorder(name, launches))
    try:
        for case in _all_cases():
            c = random_case(case.spec, case.batch, dtype=case.dtype, seed=case.batch, **case.kwargs)
            problem = make_problem(case.spec, **case.options)
            inputs = prepare_inputs(c.real, c.fake, c.q, c.codes, problem)
            args = problem.kernel_args()
            triton_backend.forward(*inputs, *args)
            upstream = [torch.ones((), dtype=torch.float64 if case.dtype == torch.float64 else torch.float32)] * 3
            triton_backend.backward(*upstream, *inputs, *args)
            triton_backend.backward(None, upstream[1], None, *inputs, *args)  # absent upstream grads
    finally:
        for name in KERNELS:
            setattr(triton_backend, f"infogan_{name}_kernel", saved[f"infogan_{name}_kernel"])
    return launches


SPECIALIZATIONS = specializations(_recorded_launches(), KERNELS)


def _describe(name, signature, constexprs, options) -> str:
    arg_names = list(signature)
    named = {arg_names[path[0]]: value for path, value in constexprs.items()}
    keys = ("FP64", "ROWS", "CAT_SIZES", "CAT_BLOCKS", "N_BERN", "N_CONT", "LEARNED_STD", "HAS_REAL", "HAS_FAKE",
            "SINGLE_PROGRAM", "HAS_GRAD_DISC", "HAS_GRAD_GEN", "HAS_GRAD_INFO")
    dtype = signature.get("q_ptr", signature.get("disc_ptr"))
    return f"{name} q={dtype} warps={options.num_warps} " + " ".join(f"{k}={named.get(k)}" for k in keys)


def test_the_matrix_covers_every_dtype_and_layout():
    """The compiled set holds each input dtype, small- and large-W layouts, the chunked-K
    path, single- and multi-program forwards, int32 and int64 codes."""
    seen = set()
    for spec in SPECIALIZATIONS.values():
        name, signature = spec.name, spec.signature
        named = spec.named_constexprs()
        if name == "finalize":  # one program over the float64 partial sums: no rows, no codes
            seen.add((name, signature["partials_ptr"], signature["disc_ptr"]))
            continue
        seen.add((name, signature["q_ptr"]))
        seen.add((name, "cat", signature["cat_ptr"]))
        if named["ROWS"] >= 64:
            seen.add((name, "small-W"))
        if named["ROWS"] == 1:
            seen.add((name, "large-W"))
        if any(b < k for b, k in zip(named["CAT_BLOCKS"], named["CAT_SIZES"])):
            seen.add((name, "chunked"))
        if name == "forward":
            seen.add((name, "single" if named["SINGLE_PROGRAM"] else "multi"))
    assert ("finalize", "*fp64", "*fp32") in seen and ("finalize", "*fp64", "*fp64") in seen
    for name in ("forward", "backward"):
        for dtype in ("*fp32", "*bf16", "*fp16", "*fp64"):
            assert (name, dtype) in seen, (name, dtype)
        for kind in ("small-W", "large-W", "chunked"):
            assert (name, kind) in seen, (name, kind)
        for codes in ("*i32", "*i64"):
            assert (name, "cat", codes) in seen
    assert ("forward", "single") in seen and ("forward", "multi") in seen


@pytest.mark.parametrize("key", list(SPECIALIZATIONS), ids=[f"{k[0]}-{i}" for i, k in enumerate(SPECIALIZATIONS)])
def test_compiles_for_sm90_without_spills(key):
    spec = SPECIALIZATIONS[key]
    compiled = compile_sm90(KERNELS[spec.name], spec)
    what = _describe(spec.name, spec.signature, spec.constexprs, spec.options)
    print(f"{what}: {compiled.registers} registers, shared {compiled.shared} B")
    assert (compiled.spill_stores, compiled.spill_loads) == (0, 0), \
        f"{what}: spills {compiled.spill_stores} B stored, {compiled.spill_loads} B loaded"


def test_constexprs_are_the_last_parameters_in_order():
    """The cached-runner launch (fastmi/runtime/triton_launch.py launch) appends the constexpr
    values to the runtime arguments: they must be exactly the kernel's trailing parameters."""
    for name, args, kwargs in _recorded_launches():
        kernel = KERNELS[name]
        constexprs = [k for k in kwargs if k != "num_warps"]
        assert constexprs == kernel.arg_names[len(args):], name
        assert all(p.is_constexpr for p in kernel.params[len(args):])
        assert not any(p.is_constexpr for p in kernel.params[:len(args)])


def test_op_schemas_match_fused_op():
    """triton_op infers the schemas from the annotations of forward/backward (it ignores
    ``schema=``): they must be the ones ops.py defines, up to int -> SymInt, which
    is how torch.library infers a Python int."""
    for op, name, schema in ((triton_backend.ops.forward, "triton_forward", fused_op.FORWARD_SCHEMA),
                             (triton_backend.ops.backward, "triton_backward", fused_op.BACKWARD_SCHEMA)):
        inferred = str(op._opoverload._schema).replace("SymInt", "int")
        assert inferred == f"fastmi::{name}{schema}"


# torch's own config.patch, not monkeypatch: pytest >= 9.2 restores an attribute that is
# missing from the module __dict__ by deleting it, and deleting a torch config entry hides
# it for the rest of the session (every later torch.compile then fails).
@torch._functorch.config.patch(force_non_lazy_backward_lowering=True)
def test_compile_traces_the_kernels_without_graph_break(monkeypatch):
    """torch.compile(fullgraph=True) of a loss and its backward with the GPU registration
    (triton_op): AOTAutograd decomposes the ops into triton_kernel_wrapper_functional
    calls of the two kernels, and torch's analysis of the kernels finds that they write
    only their outputs and workspaces (so no input is cloned). Only tracing runs here (no
    GPU): the captured graphs are checked."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    monkeypatch.setattr(triton.runtime.driver, "_active", Sm90Driver())
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm.code)
        return make_boxed_func(gm.forward)

    spec = fastmi.LatentSpec(categorical=(10,), continuous=2)
    case = random_case(spec, 300, seed=1)  # > 256 rows: the multi-program forward
    problem = make_problem(spec)

    def step(real, fake, q):
        inputs = prepare_inputs(real, fake, q, case.codes, problem)
        d, g, i, stats = triton_backend.loss(inputs, problem)
        return d + g + i, stats.mi_continuous

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend=aot_autograd(fw_compiler=capture, bw_compiler=capture))
    leaves = [t.detach().clone().requires_grad_(True) for t in case[:3]]
    with pytest.raises(Exception):  # tracing done; running the kernels needs a GPU
        compiled(*leaves)
    assert len(graphs) == 2, graphs
    forward_graph, backward_graph = graphs
    # the multi-program forward: the partial sums, then their finalize
    assert forward_graph.count("triton_kernel_wrapper_functional(") == 2
    assert backward_graph.count("triton_kernel_wrapper_functional(") == 1
    # the first launch writes only the call's workspace, the second only the outputs
    assert "tensors_to_clone = ['partials_ptr']" in forward_graph
    assert "tensors_to_clone = ['disc_ptr', 'gen_ptr', 'info_ptr', 'stats_ptr']" in forward_graph
    assert "tensors_to_clone = ['grad_real_ptr', 'grad_fake_ptr', 'grad_q_ptr']" in backward_graph
    assert "aten.clone" not in forward_graph + backward_graph
    # no module-level tensor and no shared state: the workspace is the call's own empty
    assert "_tensor_constant" not in forward_graph and "aten.zeros" not in forward_graph
