"""The InfoGAN loss's Triton backend (kernels/infogan/, shipped as ``fastmi.kernels.infogan``).

One launch computes the forward (every term, the partial sums and the final losses and
stats, kernels/infogan/forward.py) and one launch the backward (every gradient,
recomputed from the inputs, kernels/infogan/backward.py). Neither syncs with the host
nor allocates by data, so both are CUDA-graph capturable; kernels/infogan/config.py
holds the tunables and the layout choice.

Devices: CUDA tensors; also CPU tensors when ``TRITON_INTERPRET=1`` is set before
triton is imported (the Triton interpreter runs the same kernels in numpy, for tests).

Registration: :func:`fastmi.infogan.ops.define_fused_ops` makes the ops
``fastmi::triton_forward`` / ``fastmi::triton_backward``. On GPUs they are
``torch.library.triton_op`` ops, so torch.compile sees through them to the kernels
(launched with ``wrap_triton``); under the interpreter they are opaque custom ops,
because ``wrap_triton`` cannot trace an interpreted kernel. Eager calls go through the
autograd.Function of define_fused_ops and launch the kernels directly; after a
specialization's first launch they go through its cached CompiledKernel runner, which
skips triton's per-launch argument binding (fastmi/runtime/triton_launch.py;
FASTMI_TRITON_FAST_LAUNCH=0 turns that off).

Invalid codes: a categorical index outside [0, K) or a bernoulli value other than 0/1
makes the losses (and that element's gradient) NaN; the kernels never read memory at
the code's value. The CPU backends raise instead, which would need a host sync here.

Launches: a problem small enough for one program (e.g. B <= 256 at W = 14) takes one
forward launch; a larger one takes two, the programs' float64 partial sums going through
a workspace that the call allocates for itself, then one program that adds them in a
fixed order. No call shares state with another, so concurrent streams, threads and CUDA
graphs cannot disturb each other's results; the backward is one launch.
"""

from typing import Optional

import torch
import triton  # noqa: F401  (an ImportError here tells the registry that triton is missing)
from torch import Tensor

from ..kernels.infogan import config
from ..kernels.infogan.backward import infogan_backward_kernel
from ..kernels.infogan.forward import infogan_finalize_kernel, infogan_forward_kernel
from ..runtime.triton_launch import (DeviceGuard, new_output, split_float, tracing, triton_devices,
                                     triton_unavailable_reason)
from ..runtime.triton_launch import launch as launch_kernel
from ..runtime.library import register_triton
from .ops import define_fused_ops


def devices() -> tuple:
    return triton_devices()


def is_available():
    return triton_unavailable_reason()


# ---- launch preparation, cached per shape and problem ------------------------------------

class _Plan:
    """Everything about the two launches that depends only on the shapes and the problem."""

    __slots__ = ("layout", "grid", "backward_grid", "single", "trip_counts", "partial_blocks", "forward_scalars",
                 "finalize_scalars", "backward_scalars", "forward_constexprs", "finalize_constexprs",
                 "backward_constexprs", "runners")

    def __init__(self, n_rows, n_real, cat_sizes, n_bernoulli, n_continuous, learned_std, fixed_logvar,
                 prior_entropy, lambda_cat, lambda_cont, minimax, real_label, sum_reduction, fp64, has_real,
                 has_fake):
        layout = config.choose_layout(n_rows, n_real, cat_sizes, n_bernoulli, n_continuous, fp64)
        self.layout = layout
        self.grid = (layout.programs,)
        self.backward_grid = (layout.backward_programs,)
        self.single = layout.programs == 1
        self.trip_counts = (config.cdiv(layout.n_real_blocks, layout.programs),
                            config.cdiv(layout.n_tiles, layout.programs))
        self.partial_blocks = config.cdiv(layout.programs, config.BLOCK_PARTIALS)
        fl, pe, lc, lo, rl = (split_float(float(v)) for v in (fixed_logvar, prior_entropy, lambda_cat, lambda_cont,
                                                          real_label))
        self.forward_scalars = (*fl, *pe, *lc, *lo, *rl)
        self.finalize_scalars = (*pe, *lc, *lo, *rl)
        self.backward_scalars = (*fl, *lc, *lo, *rl)
        width = sum(cat_sizes) + n_bernoulli + n_continuous * (2 if learned_std else 1)
        shared = dict(
            W=width, CAT_SIZES=cat_sizes, CAT_OFFSETS=config.cat_offsets(cat_sizes), CAT_BLOCKS=layout.cat_blocks,
            N_BERN=n_bernoulli, BERN_OFFSET=sum(cat_sizes), BLOCK_BERN=layout.block_bern,
            N_CONT=n_continuous, MU_OFFSET=sum(cat_sizes) + n_bernoulli, BLOCK_CONT=layout.block_cont,
            LEARNED_STD=learned_std, HAS_REAL=has_real, HAS_FAKE=has_fake, MINIMAX=minimax,
            SUM_REDUCTION=sum_reduction, FP64=fp64, ROWS=layout.rows, BLOCK_REAL=layout.block_real,
        )
        self.forward_constexprs = dict(shared, N_SUMS=layout.n_sums, N_STATS=layout.n_stats,
                                       SINGLE_PROGRAM=self.single)
        self.finalize_constexprs = dict(CAT_SIZES=cat_sizes, N_BERN=n_bernoulli, N_CONT=n_continuous,
                                        HAS_REAL=has_real, HAS_FAKE=has_fake, MINIMAX=minimax,
                                        SUM_REDUCTION=sum_reduction, N_SUMS=layout.n_sums, N_STATS=layout.n_stats,
                                        BLOCK_PARTIALS=config.BLOCK_PARTIALS)
        self.backward_constexprs = {  # one per combination of present upstream grads
            flags: dict(shared, HAS_GRAD_DISC=flags[0], HAS_GRAD_GEN=flags[1], HAS_GRAD_INFO=flags[2])
            for flags in ((a, b, c) for a in (False, True) for b in (False, True) for c in (False, True))
        }
        self.runners = {}  # triton_launch.launch's cache of compiled launchers for this plan


_plans: dict = {}
_MAX_PLANS = 4096


def _plan(n_rows: int, n_real: int, q, fake, problem_args) -> _Plan:
    key = (n_rows, n_real, q.dtype, fake is not None, *problem_args[1:])
    key = key + (tuple(problem_args[0]),)
    plan = _plans.get(key)
    if plan is None:
        if len(_plans) >= _MAX_PLANS:  # e.g. a sweep over many batch sizes
            _plans.clear()
        (cat_sizes, n_bernoulli, n_continuous, learned_std, fixed_logvar, prior_entropy, lambda_cat, lambda_cont,
         minimax, real_label, sum_reduction) = problem_args
        plan = _plans[key] = _Plan(
            n_rows, n_real, tuple(cat_sizes), n_bernoulli, n_continuous, learned_std, fixed_logvar,
            prior_entropy, lambda_cat, lambda_cont, minimax, real_label, sum_reduction, q.dtype == torch.float64,
            n_real > 0, fake is not None)
    return plan


# ---- the two op implementations (their annotations are the op schemas) ---------------------

def forward(real: Optional[Tensor], fake: Optional[Tensor], q: Tensor, categorical: Optional[Tensor],
            bernoulli: Optional[Tensor], continuous: Optional[Tensor], cat_sizes: list[int], n_bernoulli: int,
            n_continuous: int, learned_std: bool, fixed_logvar: float, prior_entropy: float, lambda_cat: float,
            lambda_cont: float, minimax: bool, real_label: float,
            sum_reduction: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(discriminator, generator, info, stats)`` of one batch: one launch, or two (the
    partial sums, then their float64 finalize) when the batch needs several programs."""
    # int(): under torch.compile with dynamic shapes this specializes on the batch sizes,
    # which the layout (block sizes, grid) depends on
    n_rows, n_real = int(q.shape[0]), 0 if real is None else int(real.shape[0])
    plan = _plan(n_rows, n_real, q, fake, (cat_sizes, n_bernoulli, n_continuous, learned_std, fixed_logvar,
                                 prior_entropy, lambda_cat, lambda_cont, minimax, real_label, sum_reduction))
    layout = plan.layout
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    disc = new_output(torch.empty((), dtype=acc, device=q.device))
    gen = new_output(torch.empty((), dtype=acc, device=q.device))
    info = new_output(torch.empty((), dtype=acc, device=q.device))
    stats = new_output(torch.empty((config.STATS_FIXED + len(cat_sizes),), dtype=acc, device=q.device))
    traced = tracing(q)
    # the call's own workspace: nothing is shared with a launch on another stream or graph
    partials = stats if plan.single else torch.empty((layout.programs, layout.n_sums), dtype=torch.float64,
                                                     device=q.device)
    args = (q if real is None else real, q if fake is None else fake, q,
            q if categorical is None else categorical, q if bernoulli is None else bernoulli,
            q if continuous is None else continuous,
            disc, gen, info, stats, partials,
            n_real, n_rows, *plan.trip_counts, *plan.forward_scalars)
    with DeviceGuard(q):
        launch_kernel(infogan_forward_kernel, plan.grid, args, plan.forward_constexprs,
                      num_warps=layout.num_warps, runners=plan.runners, traced=traced)
        if not plan.single:
            launch_kernel(infogan_finalize_kernel, (1,),
                          (partials, disc, gen, info, stats, layout.programs, n_real, n_rows, plan.partial_blocks,
                           *plan.finalize_scalars),
                          plan.finalize_constexprs, num_warps=layout.num_warps, runners=plan.runners, traced=traced)
    return disc, gen, info, stats


def backward(grad_discriminator: Optional[Tensor], grad_generator: Optional[Tensor], grad_info: Optional[Tensor],
             real: Optional[Tensor], fake: Optional[Tensor], q: Tensor, categorical: Optional[Tensor],
             bernoulli: Optional[Tensor], continuous: Optional[Tensor], cat_sizes: list[int], n_bernoulli: int,
             n_continuous: int, learned_std: bool, fixed_logvar: float, prior_entropy: float, lambda_cat: float,
             lambda_cont: float, minimax: bool, real_label: float,
             sum_reduction: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(grad_real, grad_fake, grad_q)`` in the inputs' dtypes, in one launch. An absent
    upstream grad counts as zero, and a loss with no upstream grad is left out of every
    gradient; the grad of an absent input, or of an input that no loss with an upstream
    grad uses, is an empty [0] tensor (autograd's None)."""
    # int(): under torch.compile with dynamic shapes this specializes on the batch sizes,
    # which the layout (block sizes, grid) depends on
    n_rows, n_real = int(q.shape[0]), 0 if real is None else int(real.shape[0])
    plan = _plan(n_rows, n_real, q, fake, (cat_sizes, n_bernoulli, n_continuous, learned_std, fixed_logvar,
                                 prior_entropy, lambda_cat, lambda_cont, minimax, real_label, sum_reduction))
    flags = (grad_discriminator is not None, grad_generator is not None, grad_info is not None)
    real_used, fake_used = real is not None and flags[0], fake is not None and (flags[0] or flags[1])
    grad_real = new_output(torch.empty_like(real)) if real_used else q.new_empty((0,))
    grad_fake = new_output(torch.empty_like(fake)) if fake_used else q.new_empty((0,))
    grad_q = new_output(torch.empty_like(q))
    traced = tracing(q)
    args = (grad_discriminator if flags[0] else q, grad_generator if flags[1] else q, grad_info if flags[2] else q,
            q if real is None else real, q if fake is None else fake, q,
            q if categorical is None else categorical, q if bernoulli is None else bernoulli,
            q if continuous is None else continuous,
            grad_real if real_used else grad_q, grad_fake if fake_used else grad_q, grad_q,
            n_real, n_rows, *plan.backward_scalars)
    with DeviceGuard(q):
        launch_kernel(infogan_backward_kernel, plan.backward_grid, args, plan.backward_constexprs[flags],
                      num_warps=plan.layout.num_warps, runners=plan.runners, traced=traced)
    return grad_real, grad_fake, grad_q


ops = define_fused_ops("triton", forward, backward, register=register_triton)


def loss(inputs, problem):
    return ops.loss(inputs, problem)
