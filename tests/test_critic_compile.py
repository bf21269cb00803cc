"""torch.compile(fullgraph=True) traces critic_bound without a graph break (the fused
path as the custom ops fastmi::critic_tiled_forward / _backward, with the tiled
implementation as their kernel); the ops pass torch.library.opcheck."""

import pytest
import torch

import fastmi
from critic_helpers import assert_close, random_pair
from fastmi.critic import bounds, tiled
from fastmi.critic.problem import make_problem

OPTIONS = [
    dict(estimator="infonce", symmetric=True, normalize=True, scale=5.0),
    dict(estimator="siglip", bias=-1.0, scale=3.0, offset=2),
    dict(estimator="smile", clip=1.0, offset=1),
    dict(estimator="dv"),
    dict(estimator="nwj", bias=0.5),
    dict(estimator="js"),
]


def _id(options):
    return "-".join(f"{k}={v}" for k, v in options.items())


# inductor compiles for tens of seconds on this machine: it runs one case per backend;
# aot_eager traces the same graphs (dynamo, fake kernels, AOT autograd) for the rest.
COMPILERS = {(backend, i): "inductor" if i == 0 else "aot_eager" for backend in ("reference", "tiled")
             for i in range(len(OPTIONS))}


@pytest.mark.parametrize("backend", ["reference", "tiled"])
@pytest.mark.parametrize("index", range(len(OPTIONS)), ids=[_id(o) for o in OPTIONS])
def test_compile_fullgraph_forward_and_backward(index, backend):
    torch._dynamo.reset()
    options = dict(OPTIONS[index])
    scale, bias = options.pop("scale", 2.0), options.pop("bias", None)
    offset = options.get("offset", 0)
    x, y = random_pair(6, 6 + offset, 8, offset=offset, seed=1)

    def step(x, y, scale, bias):
        out = fastmi.critic_bound(x, y, scale=scale, bias=bias, backend=backend, **options)
        return out.loss, out.mi, out.accuracy

    results = []
    for fn in (torch.compile(step, fullgraph=True, backend=COMPILERS[backend, index]), step):
        leaves = [x.clone().requires_grad_(), y.clone().requires_grad_(), torch.tensor(scale, requires_grad=True)]
        leaves.append(None if bias is None else torch.tensor(bias, requires_grad=True))
        loss, mi, accuracy = fn(*leaves)
        loss.backward()
        results.append([loss, mi, accuracy] + [None if t is None else t.grad for t in leaves])
    for name, got, want in zip(("loss", "mi", "accuracy", "grad_x", "grad_y", "grad_scale", "grad_bias"), *results):
        if want is None:
            assert got is None, name
        else:
            assert_close(got, want, name, floor=1.0)


def test_compiled_graph_calls_the_fused_ops():
    torch._dynamo.reset()
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    x, y = random_pair(8, 8, 4, seed=2)
    fn = torch.compile(lambda x, y: fastmi.critic_bound(x, y, estimator="dv", backend="tiled").loss,
                       backend=capture, fullgraph=True)
    fn(x, y)
    assert len(graphs) == 1
    targets = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert any("fastmi.critic_tiled_forward" in t for t in targets), targets


def test_compiled_module():
    torch._dynamo.reset()
    module = fastmi.CriticBound("siglip")
    x, y = random_pair(8, 8, 4, seed=3)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    loss = compiled(x, y).loss
    loss.backward()
    assert_close(loss, module(x, y).loss)
    assert module.log_scale.grad is not None and module.bias.grad is not None


def _op_args(estimator, *, symmetric=False, with_bias=True, dtype=torch.float32, offset=1):
    rows, cols = 6, 6 if symmetric else 6 + offset
    x, y = random_pair(rows, cols, 5, offset=0 if symmetric else offset, dtype=dtype, seed=4)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    problem = make_problem(estimator, symmetric, False, 2.0, 0 if symmetric else offset)
    scale = torch.tensor(1.5, dtype=acc)
    bias = torch.tensor(-0.2, dtype=acc) if with_bias else None
    return [x, y, scale, bias], tuple(problem.rows)


@pytest.fixture(params=["tiled", "cpu"])
def fused_ops(request):
    """The torch.library ops (forward, backward) of a fused backend: what torch.compile sees."""
    if request.param == "cpu":
        from fastmi.critic import cpu

        reason = cpu.is_available()  # None, or why the CPU library does not build here
        if reason is not None:
            pytest.skip(reason)
        return cpu.ops
    return tiled.ops


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("estimator,symmetric", [("infonce", True), ("infonce", False), ("dv", False),
                                                 ("smile", False), ("siglip", False)])
def test_opcheck_forward(estimator, symmetric, dtype, fused_ops):
    tensors, args = _op_args(estimator, symmetric=symmetric, dtype=dtype)
    tensors = [t.requires_grad_() if t is not None else None for t in tensors]
    torch.library.opcheck(fused_ops.forward, (*tensors, *args))


def test_opcheck_forward_without_bias(fused_ops):
    tensors, args = _op_args("js", with_bias=False)
    torch.library.opcheck(fused_ops.forward, (*[t.requires_grad_() if t is not None else None for t in tensors],
                                              *args))


@pytest.mark.parametrize("estimator,symmetric,with_bias", [("infonce", True, False), ("nwj", False, True),
                                                           ("smile", False, True), ("js", False, False)])
def test_opcheck_backward(estimator, symmetric, with_bias, fused_ops):
    tensors, args = _op_args(estimator, symmetric=symmetric, with_bias=with_bias)
    partials, row_lse, col_lse = fused_ops.forward(*tensors, *args)
    grad = torch.randn(len(bounds.PARTIALS), generator=torch.Generator().manual_seed(5))
    torch.library.opcheck(fused_ops.backward, (grad, *tensors, partials, row_lse, col_lse, *args))
