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

Gradients: the backward kernels give first-order gradients. A loss with no upstream grad
(None) is left out of every gradient, so an input that only such losses use gets None,
whatever its values. When grad mode is on during the backward (``create_graph=True``:
a gradient penalty such as R1 or WGAN-GP differentiates the gradient again), the eager
backward computes the gradients with the reference's composite formulas instead
(:func:`differentiable_grads`), which autograd can differentiate once more.
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
    real_used = real is not None and grad_d is not None
    fake_used = fake is not None and (grad_d is not None or grad_g is not None)
    return (torch.empty_like(real) if real_used else q.new_empty((0,)),
            torch.empty_like(fake) if fake_used else q.new_empty((0,)),
            torch.empty_like(q))


def _input_grads(grads):
    """Autograd's grads for (real, fake, q, codes...): None for the empty [0] grad of an
    input that is absent or that no loss with an upstream grad uses (real and fake
    logits have at least one element), and for the codes."""
    grad_real, grad_fake, grad_q = grads
    return (grad_real if grad_real.numel() else None, grad_fake if grad_fake.numel() else None, grad_q,
            None, None, None)


def differentiable_grads(grad_d, grad_g, grad_i, saved, problem_args):
    """The backward of section 5 in composite PyTorch (the reference's forward,
    differentiated by autograd with ``create_graph=True``), so that the gradients carry a
    graph for a second derivative. ``saved`` are the op's six inputs."""
    from .inputs import LossInputs
    from .problem import Problem
    from .reference import loss as reference_loss

    real, fake, q = saved[:3]
    with torch.enable_grad():
        d, g, i, _ = reference_loss(LossInputs(*saved), Problem.from_kernel_args(problem_args))
        pairs = [(out, up) for out, up in ((d, grad_d), (g, grad_g), (i, grad_i)) if up is not None]
        wrt = [t for t in (real, fake, q) if t is not None and t.requires_grad]
        grads = torch.autograd.grad([o for o, _ in pairs], wrt, [u for _, u in pairs], create_graph=True,
                                    allow_unused=True) if pairs and wrt else ()
    found = dict(zip(map(id, wrt), grads))
    return (found.get(id(real)), found.get(id(fake)), found.get(id(q)), None, None, None)


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
        return _input_grads(grads) + (None,) * N_PROBLEM_ARGS

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
            if torch.is_grad_enabled():  # create_graph=True: a second derivative will follow
                return differentiable_grads(grad_d, grad_g, grad_i, saved, ctx.problem_args) + (None,)
            grads = backward_impl(grad_d, grad_g, grad_i, *saved, *ctx.problem_args)
            return _input_grads(grads) + (None,)

    Eager.__name__ = Eager.__qualname__ = f"FastmiFused_{backend}"
    return FusedOps(forward_op, backward_op, Eager)


def define_extension_ops(backend: str, extension) -> FusedOps:
    """:func:`define_fused_ops` for a native extension whose module (``extension()``,
    built on first use) has ``forward_op`` and ``backward_op`` with the op schemas."""
    return define_fused_ops(backend, lambda *args: tuple(extension().forward_op(*args)),
                            lambda *args: tuple(extension().backward_op(*args)))
