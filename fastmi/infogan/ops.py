"""The InfoGAN loss as torch.library ops: the schemas, fake kernels and autograd that
every fused backend (cpu, triton, cuda) shares.

A fused backend supplies two plain functions with the op schemas below:

    forward_impl(real, fake, q, categorical, bernoulli, continuous, *problem_args)
        -> (discriminator, generator, info, stats)
    backward_impl(grad_discriminator, grad_generator, grad_info,
                  real, fake, q, categorical, bernoulli, continuous, *problem_args)
        -> (grad_real, grad_fake, grad_q)      # grad of an absent input: an empty [0]

where ``problem_args`` is :meth:`fastmi.infogan.problem.Problem.kernel_args` and an absent
upstream grad (None) counts as zero. :func:`define_fused_ops` registers them as the
custom ops ``fastmi::<backend>_forward`` / ``fastmi::<backend>_backward`` with a fake
(meta) implementation and autograd, so ``torch.compile(fullgraph=True)`` traces a call
without a graph break, and wraps them in a ``torch.autograd.Function`` for eager calls,
which skips the dispatcher's op boundary.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..kernels.infogan.config import STATS_FIXED
from ..runtime.library import define_op
from .outputs import MIStats

INPUTS_SCHEMA = "Tensor? real, Tensor? fake, Tensor q, Tensor? categorical, Tensor? bernoulli, Tensor? continuous"
PROBLEM_SCHEMA = ("int[] cat_sizes, int n_bernoulli, int n_continuous, bool learned_std, float fixed_logvar, "
                  "float prior_entropy, float lambda_cat, float lambda_cont, bool minimax, float real_label, "
                  "bool sum_reduction")
FORWARD_SCHEMA = f"({INPUTS_SCHEMA}, {PROBLEM_SCHEMA}) -> (Tensor, Tensor, Tensor, Tensor)"
BACKWARD_SCHEMA = (f"(Tensor? grad_discriminator, Tensor? grad_generator, Tensor? grad_info, {INPUTS_SCHEMA}, "
                   f"{PROBLEM_SCHEMA}) -> (Tensor, Tensor, Tensor)")
N_INPUTS = 6
N_PROBLEM_ARGS = 11


def _fake_forward(real, fake, q, categorical, bernoulli, continuous, cat_sizes, *_):
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    return (q.new_empty((), dtype=acc), q.new_empty((), dtype=acc), q.new_empty((), dtype=acc),
            q.new_empty((STATS_FIXED + len(cat_sizes),), dtype=acc))


def _fake_backward(grad_d, grad_g, grad_i, real, fake, q, *_):
    return (torch.empty_like(real) if real is not None else q.new_empty((0,)),
            torch.empty_like(fake) if fake is not None else q.new_empty((0,)),
            torch.empty_like(q))


def _input_grads(saved, grads):
    """Autograd's grads for (real, fake, q, codes...): None where an input is absent."""
    real, fake = saved[0], saved[1]
    grad_real, grad_fake, grad_q = grads
    return (grad_real if real is not None else None, grad_fake if fake is not None else None, grad_q,
            None, None, None)


class FusedOps(NamedTuple):
    forward: object    # the torch.library op fastmi::<backend>_forward
    backward: object   # the torch.library op fastmi::<backend>_backward
    eager: type        # a torch.autograd.Function over the plain implementations

    def loss(self, inputs, problem):
        """``(discriminator, generator, info, MIStats)`` for the public API."""
        args = problem.kernel_args()
        if torch.compiler.is_compiling():
            d, g, i, stats = self.forward(*inputs, *args)
        else:
            d, g, i, stats = self.eager.apply(*inputs, args)
        return d, g, i, MIStats.from_vector(stats)


def define_fused_ops(backend: str, forward_impl, backward_impl, *, register=torch.library.custom_op) -> FusedOps:
    """Registers the ops of ``backend``; ``register`` is ``torch.library.custom_op`` or,
    for Triton kernels, :func:`fastmi.runtime.library.register_triton`."""
    forward_op = define_op(f"fastmi::{backend}_forward", forward_impl, schema=FORWARD_SCHEMA, fake=_fake_forward,
                           register=register)
    backward_op = define_op(f"fastmi::{backend}_backward", backward_impl, schema=BACKWARD_SCHEMA,
                            fake=_fake_backward, register=register)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:N_INPUTS])
        ctx.problem_args = inputs[N_INPUTS:]
        ctx.mark_non_differentiable(output[3])

    def backward(ctx, grad_d, grad_g, grad_i, _grad_stats):
        saved = ctx.saved_tensors
        grads = backward_op(grad_d, grad_g, grad_i, *saved, *ctx.problem_args)
        return _input_grads(saved, grads) + (None,) * N_PROBLEM_ARGS

    forward_op.register_autograd(backward, setup_context=setup_context)

    class Eager(torch.autograd.Function):
        @staticmethod
        def forward(ctx, real, fake, q, categorical, bernoulli, continuous, problem_args):
            ctx.set_materialize_grads(False)  # an unused loss costs no zero tensor
            out = forward_impl(real, fake, q, categorical, bernoulli, continuous, *problem_args)
            ctx.save_for_backward(real, fake, q, categorical, bernoulli, continuous)
            ctx.problem_args = problem_args
            ctx.mark_non_differentiable(out[3])
            return tuple(out)

        @staticmethod
        def backward(ctx, grad_d, grad_g, grad_i, _grad_stats):
            saved = ctx.saved_tensors
            grads = backward_impl(grad_d, grad_g, grad_i, *saved, *ctx.problem_args)
            return _input_grads(saved, grads) + (None,)

    Eager.__name__ = Eager.__qualname__ = f"FastmiFused_{backend}"
    return FusedOps(forward_op, backward_op, Eager)


def define_extension_ops(backend: str, extension) -> FusedOps:
    """:func:`define_fused_ops` for a native extension whose module (``extension()``,
    built on first use) has ``forward_op`` and ``backward_op`` with the op schemas."""
    return define_fused_ops(backend, lambda *args: tuple(extension().forward_op(*args)),
                            lambda *args: tuple(extension().backward_op(*args)))
