"""``critic_bound``'s partials as torch.library ops: the schemas, fake kernels and autograd
that every fused backend (tiled, cpu, triton) shares.

A fused backend supplies two plain functions with the op schemas below:

    forward_impl(x, y, scale, bias, offset, compute, differentiate, clip)
        -> (partials, row_lse, col_lse)
    backward_impl(grad_partials, x, y, scale, bias, partials, row_lse, col_lse,
                  offset, compute, differentiate, clip)
        -> (grad_x, grad_y, grad_scale, grad_bias)

Inputs: x [B, d] and y [N, d] in one dtype (float32, bfloat16, float16 or float64);
scale and bias 0-d tensors in the compute dtype (float32, float64 for float64 inputs),
bias None when absent; the scalars of :class:`fastmi.critic.problem.RowProblem`.
The score matrix is S = scale * x y^T + bias with positives S[i, i + offset]
(fastmi/critic/bounds.py); it is never an input or an output.

Forward returns, in the compute dtype:

- ``partials`` [8]: the partials of ``bounds.PARTIALS`` in that order; those outside
  ``compute`` are 0; ``correct`` is a count.
- ``row_lse`` [B] = LSE_j S[i, :] when ``row_lse_sum`` is in ``differentiate``, else [0].
- ``col_lse`` [N] = LSE_i S[:, j] when ``col_lse_sum`` is in ``differentiate``, else [0].

The backward recomputes S tile by tile from x, y, scale, bias and forms
G = sum_k grad_partials[k] dP_k/dS over k in ``differentiate`` (the upstream grads of the
other partials are ignored: bounds.finish detaches them; ``correct`` has derivative 0):

    pos_sum       g on P                         row_lse_sum   g exp(S - row_lse[i])
    col_lse_sum   g exp(S - col_lse[j])          neg_lse       g exp(S - neg_lse) on Neg
    pos_softplus  -g sigmoid(-S) on P            neg_softplus  g sigmoid(S) on Neg
    neg_lse_clip  g exp(clamp(S, -tau, tau) - neg_lse_clip) on Neg where -tau <= S <= tau

and returns grad_x = s G y, grad_y = s G^T x (in x's and y's dtypes), grad_scale =
sum G * (x y^T) and grad_bias = sum G (0-d, compute dtype; an empty [0] when bias is None).
Saved for the backward: the inputs, partials, row_lse and col_lse: O(B + N) beyond the
inputs. The backward kernels give first-order gradients. When grad mode is on during the
backward (``create_graph=True``: a gradient penalty differentiates the gradient again),
the backward computes the gradients with the reference's composite formulas instead
(:func:`differentiable_grads`), which autograd can differentiate once more; that one
backward stores the B x N scores, as the reference does.

:func:`define_critic_ops` registers the pair as ``fastmi::critic_<backend>_forward`` /
``_backward`` with fake kernels and autograd, so that ``torch.compile(fullgraph=True)``
traces a call without a graph break, and wraps the plain functions in a
``torch.autograd.Function`` for eager calls, which skips the dispatcher.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..runtime.library import define_op
from .bounds import INDEX, PARTIALS, Partials
from .problem import RowProblem

PROBLEM_SCHEMA = "int offset, int compute, int differentiate, float clip"
FORWARD_SCHEMA = f"(Tensor x, Tensor y, Tensor scale, Tensor? bias, {PROBLEM_SCHEMA}) -> (Tensor, Tensor, Tensor)"
BACKWARD_SCHEMA = (f"(Tensor grad_partials, Tensor x, Tensor y, Tensor scale, Tensor? bias, Tensor partials, "
                   f"Tensor row_lse, Tensor col_lse, {PROBLEM_SCHEMA}) -> (Tensor, Tensor, Tensor, Tensor)")
N_INPUTS = 4
N_PROBLEM_ARGS = 4
ROW_LSE_BIT = 1 << INDEX["row_lse_sum"]
COL_LSE_BIT = 1 << INDEX["col_lse_sum"]


def lse_shapes(n_rows: int, n_cols: int, differentiate: int) -> tuple:
    """The shapes of ``row_lse`` and ``col_lse`` for a problem of B rows and N columns."""
    return ((n_rows,) if differentiate & ROW_LSE_BIT else (0,)), ((n_cols,) if differentiate & COL_LSE_BIT else (0,))


def _fake_forward(x, y, scale, bias, offset, compute, differentiate, clip):
    row_shape, col_shape = lse_shapes(x.shape[0], y.shape[0], differentiate)
    return (scale.new_empty((len(PARTIALS),)), scale.new_empty(row_shape), scale.new_empty(col_shape))


def _fake_backward(grad_partials, x, y, scale, bias, *_):
    return (torch.empty_like(x), torch.empty_like(y), scale.new_empty(()),
            scale.new_empty(()) if bias is not None else scale.new_empty((0,)))


def _input_grads(bias, grads):
    grad_x, grad_y, grad_scale, grad_bias = grads
    return grad_x, grad_y, grad_scale, (grad_bias if bias is not None else None)


def differentiable_grads(grad_partials: Tensor, saved: tuple, problem_args: tuple) -> tuple:
    """The op's backward in composite PyTorch: the reference's partials, differentiated by
    autograd with ``create_graph=True`` (the gradients carry a graph for a second
    derivative). ``saved`` starts with the op's inputs x, y, scale, bias; as the fused
    backward, it differentiates the partials in ``differentiate`` only."""
    from .reference import partials as reference_partials

    rows = RowProblem(*problem_args)
    inputs = saved[:N_INPUTS]
    with torch.enable_grad():
        found = reference_partials(*inputs, rows)
        names = [name for name in PARTIALS if rows.differentiate >> INDEX[name] & 1]
        wrt = [t for t in inputs if t is not None and t.requires_grad]
        grads = torch.autograd.grad([getattr(found, name) for name in names], wrt,
                                    [grad_partials[INDEX[name]] for name in names], create_graph=True,
                                    allow_unused=True) if wrt else ()
    by_input = dict(zip(map(id, wrt), grads))
    return tuple(None if t is None else by_input.get(id(t)) for t in inputs)


class CriticOps(NamedTuple):
    backend: str
    forward: object    # the torch.library op fastmi::critic_<backend>_forward
    backward: object   # the torch.library op fastmi::critic_<backend>_backward
    eager: type        # a torch.autograd.Function over the plain implementations

    def partials(self, x: Tensor, y: Tensor, scale: Tensor, bias, rows: RowProblem) -> Partials:
        """The backend entry: the partials of ``rows.compute`` as 0-d tensors with autograd."""
        if torch.compiler.is_compiling():
            vector = self.forward(x, y, scale, bias, *rows)[0]
        else:
            vector = self.eager.apply(x, y, scale, bias, tuple(rows))[0]
        return Partials.from_vector(vector, rows.compute)


def define_critic_ops(backend: str, forward_impl, backward_impl, *, register=torch.library.custom_op) -> CriticOps:
    """Registers the ops of ``backend``; ``register`` is ``torch.library.custom_op`` or,
    for Triton kernels, :func:`fastmi.runtime.library.register_triton`."""
    forward_op = define_op(f"fastmi::critic_{backend}_forward", forward_impl, schema=FORWARD_SCHEMA,
                           fake=_fake_forward, register=register)
    backward_op = define_op(f"fastmi::critic_{backend}_backward", backward_impl, schema=BACKWARD_SCHEMA,
                            fake=_fake_backward, register=register)

    def setup_context(ctx, inputs, output):
        partials, row_lse, col_lse = output
        ctx.save_for_backward(*inputs[:N_INPUTS], partials, row_lse, col_lse)
        ctx.problem_args = inputs[N_INPUTS:]
        ctx.mark_non_differentiable(row_lse, col_lse)

    def backward(ctx, grad_partials, _grad_row_lse, _grad_col_lse):
        saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a second derivative will follow
            return differentiable_grads(grad_partials, saved, ctx.problem_args) + (None,) * N_PROBLEM_ARGS
        grads = backward_op(grad_partials, *saved, *ctx.problem_args)
        return _input_grads(saved[3], grads) + (None,) * N_PROBLEM_ARGS

    forward_op.register_autograd(backward, setup_context=setup_context)

    class Eager(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, y, scale, bias, problem_args):
            ctx.set_materialize_grads(False)  # a loss that does not use the partials costs no zeros
            partials, row_lse, col_lse = forward_impl(x, y, scale, bias, *problem_args)
            ctx.save_for_backward(x, y, scale, bias, partials, row_lse, col_lse)
            ctx.problem_args = problem_args
            ctx.mark_non_differentiable(row_lse, col_lse)
            return partials, row_lse, col_lse

        @staticmethod
        def backward(ctx, grad_partials, _grad_row_lse, _grad_col_lse):
            if grad_partials is None:
                return None, None, None, None, None
            saved = ctx.saved_tensors
            if torch.is_grad_enabled():  # create_graph=True: a second derivative will follow
                return differentiable_grads(grad_partials, saved, ctx.problem_args) + (None,)
            grads = backward_impl(grad_partials, *saved, *ctx.problem_args)
            return _input_grads(saved[3], grads) + (None,)

    Eager.__name__ = Eager.__qualname__ = f"FastmiCritic_{backend}"
    return CriticOps(backend, forward_op, backward_op, Eager)
