"""torch.compile(fullgraph=True) traces fastmi without a graph break; the custom ops
pass torch.library.opcheck; autocast works."""

import pytest
import torch

import fastmi
from fastmi.infogan import cpu
from fastmi.infogan.inputs import prepare_inputs
from fastmi.infogan.problem import make_problem
from helpers import random_case

SPEC = fastmi.LatentSpec(categorical=(10, 4), bernoulli=1, continuous=2)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_compile_fullgraph_forward_and_backward(backend):
    torch._dynamo.reset()
    case = random_case(SPEC, 33, seed=1)

    def step(real, fake, q, codes):
        out = fastmi.infogan_loss(real, fake, q, codes, SPEC, backend=backend, real_label=0.9)
        return out.discriminator + 0.5 * out.generator, out.stats.mi_categorical

    compiled = torch.compile(step, fullgraph=True)
    leaves = [t.clone().requires_grad_() for t in case[:3]]
    loss, mi = compiled(*leaves, case.codes)
    loss.backward()
    eager_leaves = [t.clone().requires_grad_() for t in case[:3]]
    eager_loss, eager_mi = step(*eager_leaves, case.codes)
    eager_loss.backward()
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mi, eager_mi, rtol=1e-5, atol=1e-6)
    for a, b in zip(leaves, eager_leaves):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_compiled_cpu_graph_calls_the_fused_ops():
    torch._dynamo.reset()
    case = random_case(SPEC, 16, seed=2)
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    fn = torch.compile(lambda r, f, q, c: fastmi.infogan_loss(r, f, q, c, SPEC, backend="cpu").generator,
                       backend=capture, fullgraph=True)
    fn(case.real, case.fake, case.q, case.codes)
    assert len(graphs) == 1
    targets = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert any("fastmi.cpu_forward" in t for t in targets), targets


def _op_args(batch=12, dtype=torch.float32, **case_kw):
    case = random_case(SPEC, batch, dtype=dtype, seed=3, **case_kw)
    problem = make_problem(SPEC, real_label=0.9)
    inputs = prepare_inputs(case.real, case.fake, case.q, case.codes, problem)
    return inputs, problem.kernel_args()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_opcheck_forward(dtype):
    inputs, args = _op_args(dtype=dtype)
    leaves = [t.requires_grad_() if t is not None and t.is_floating_point() and i < 3 else t
              for i, t in enumerate(inputs)]
    torch.library.opcheck(cpu.ops.forward, (*leaves, *args))


def test_opcheck_backward():
    inputs, args = _op_args()
    grads = (torch.tensor(0.5), None, torch.tensor(-2.0))
    torch.library.opcheck(cpu.ops.backward, (*grads, *inputs, *args))


def test_opcheck_with_absent_inputs():
    inputs, args = _op_args(with_real=False)
    # Without real logits the JSD bound is NaN by contract, and opcheck's eager-vs-AOT
    # comparison treats NaN != NaN, so that one utility is left out here (it runs above).
    torch.library.opcheck(cpu.ops.forward, (*inputs, *args),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    torch.library.opcheck(cpu.ops.backward, (None, torch.tensor(1.0), None, *inputs, *args))


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_inside_autocast(backend):
    case = random_case(SPEC, 40, seed=4)
    linear = torch.nn.Linear(SPEC.q_width, SPEC.q_width)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = linear(case.q)            # bf16 under autocast
        assert q.dtype == torch.bfloat16
        out = fastmi.infogan_loss(case.real, case.fake, q, case.codes, SPEC, backend=backend)
    assert out.info.dtype == torch.float32
    out.info.backward()
    assert linear.weight.grad is not None and torch.isfinite(linear.weight.grad).all()
    ref = fastmi.infogan_loss(case.real.double(), case.fake.double(), q.detach().double(), case.codes, SPEC,
                              backend="reference")
    torch.testing.assert_close(out.info.double(), ref.info, rtol=1e-4, atol=1e-4)
