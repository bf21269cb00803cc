"""critic_bound's Triton backend (kernels/critic/, shipped as ``fastmi.kernels.critic``):
the fused ops of fastmi/critic/ops.py as flash-style kernels on CUDA tensors.

Forward, three launches (kernels/critic/forward.py): tiles of S = scale * x y^T + bias by
``tl.dot`` folded into per-row and per-column statistics (online log-sum-exps, argmax,
positives, softplus sums, the negatives' LSEs), never storing a tile; a merge of the
groups' statistics into float64 sums; a one-program float64 finalize. Both directions of
symmetric InfoNCE come from the one set of tiles.

Backward (kernels/critic/backward.py): the tiles recomputed from the inputs and the saved
statistics; grad_x by programs that own blocks of x's rows, grad_y by programs that own
blocks of y's rows (on S^T), grad_scale and grad_bias from the dx pass's per-row sums
added in row order, in float64, by one last program; when a side's blocks are too few to fill the GPU,
its other side is split over several programs and a split-sum launch adds them in order.
No float atomics and no state shared between calls (every workspace is the call's own):
results are bit-identical from run to run, concurrent streams and CUDA graphs cannot
disturb each other. Nothing is read back to the host (scale, bias and the upstream grads
are read on the device) and nothing is allocated by data, so a call is CUDA-graph
capturable. kernels/critic/config.py holds the tunables and the layouts.

Memory beyond the inputs and gradients: O(B + N) statistics in the forward (plus a
[row groups, N] column workspace for symmetric InfoNCE, row groups <= SYM_ROW_GROUPS),
and a float32 accumulation workspace of at most TARGET_PROGRAMS x block x d in the
backward, whatever B.

``normalize=True`` stays in composite PyTorch before the op (fastmi/critic/inputs.py), so
these kernels then see float32 unit rows (docs/critic.md says what that costs).

Devices: CUDA tensors; also CPU tensors when ``TRITON_INTERPRET=1`` is set before triton
is imported (the interpreter runs the same kernels in numpy, for tests). Registration:
``torch.library.triton_op`` on GPUs (torch.compile traces into the kernels), opaque custom
ops under the interpreter (fastmi/runtime/library.py).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton  # noqa: F401  (an ImportError here tells the registry that triton is missing)
from torch import Tensor

from ..kernels.critic import config
from ..kernels.critic.backward import critic_grad_kernel, critic_scalar_grads_kernel, critic_split_sum_kernel
from ..kernels.critic.forward import critic_finalize_kernel, critic_merge_kernel, critic_tiles_kernel
from ..runtime.library import register_triton
from ..runtime.triton_launch import (DeviceGuard, interpreting, new_output, split_float, tracing, triton_devices,
                                     triton_unavailable_reason)
from ..runtime.triton_launch import launch as launch_kernel
from .bounds import INDEX, PARTIALS
from .ops import define_critic_ops, lse_shapes


def _widen_interpreted_bf16_dots() -> None:
    """triton 3.6's interpreter multiplies bfloat16 tiles as the raw uint16 arrays that hold
    them (its dot converts fp8 only), so an interpreted bfloat16 ``tl.dot`` returns
    garbage; its dot is given exact float32 copies of bfloat16 operands instead (the
    products of bfloat16 values are exact in float32, as on tensor cores)."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    original = builder.create_dot
    if getattr(original, "widens_bf16", False):
        return

    def widen(handle):
        if handle.dtype.scalar != tl.bfloat16:
            return handle
        bits = handle.data.astype(np.uint32) << 16
        return interpreter.TensorHandle(bits.view(np.float32), tl.float32)

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        return original(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    create_dot.widens_bf16 = True
    builder.create_dot = create_dot


if interpreting():
    _widen_interpreted_bf16_dots()


def devices() -> tuple:
    return triton_devices()


def is_available():
    return triton_unavailable_reason()


def _bits(mask: int) -> dict:
    return {name: bool(mask >> INDEX[name] & 1) for name in PARTIALS}


def _precision(kind: str) -> str:
    # tl.dot's input_precision: float32 inputs take FP32_PRECISION; 16-bit and float64
    # products are exact in the float32 / float64 accumulator ("ieee" names that)
    return config.FP32_PRECISION if kind == "fp32" else "ieee"


# ---- launch preparation, cached per shape and problem ------------------------------------

class _Plan:
    """Every launch's grid and constexprs for one (shapes, dtype, problem)."""

    __slots__ = ("forward", "tiles_grid", "merge_grid", "tiles_constexprs", "merge_constexprs",
                 "finalize_constexprs", "finalize_blocks", "sides", "scalar_constexprs", "runners")

    def __init__(self, n_rows: int, n_cols: int, dim: int, dtype: torch.dtype, compute: int, differentiate: int):
        name = str(dtype).split(".")[1]
        kind = config.kind(name)
        fp64 = kind == "fp64"
        want, keep = _bits(compute), _bits(differentiate)
        precision = _precision(kind)
        layout = config.forward_layout(n_rows, n_cols, dim, name, want["col_lse_sum"])
        self.forward = layout
        self.tiles_grid = (layout.row_groups, layout.col_groups)
        self.merge_grid = (layout.row_chunks + layout.col_chunks,)
        row_max = want["row_lse_sum"] or want["correct"]
        self.tiles_constexprs = dict(
            DIM=dim, BLOCK_M=layout.bm, BLOCK_N=layout.bn, BLOCK_K=layout.bk, FP64=fp64, PRECISION=precision,
            ROW_MAX=row_max, ROW_LSE=want["row_lse_sum"], COL_LSE=want["col_lse_sum"],
            ARGMAX=want["correct"], POS=want["pos_sum"] or want["pos_softplus"], NEG_LSE_ON=want["neg_lse"],
            NEG_SP_ON=want["neg_softplus"], CLIP_ON=want["neg_lse_clip"])
        self.merge_constexprs = dict(
            BLOCK=config.BLOCK_REDUCE, FP64=fp64, ROW_MAX=row_max, ROW_LSE=want["row_lse_sum"],
            KEEP_ROW=keep["row_lse_sum"], ARGMAX=want["correct"], POS_SUM_ON=want["pos_sum"],
            POS_SP_ON=want["pos_softplus"], NEG_LSE_ON=want["neg_lse"], NEG_SP_ON=want["neg_softplus"],
            CLIP_ON=want["neg_lse_clip"], COL_LSE=want["col_lse_sum"], KEEP_COL=keep["col_lse_sum"])
        self.finalize_constexprs = dict(BLOCK_PARTIALS=config.BLOCK_PARTIALS, NEG_LSE_ON=want["neg_lse"],
                                        CLIP_ON=want["neg_lse_clip"])
        self.finalize_blocks = config.cdiv(self.merge_grid[0], config.BLOCK_PARTIALS)
        grads = dict(G_POS_SUM=keep["pos_sum"], G_ROW=keep["row_lse_sum"], G_COL=keep["col_lse_sum"],
                     G_NEG_LSE=keep["neg_lse"], G_POS_SP=keep["pos_softplus"], G_NEG_SP=keep["neg_softplus"],
                     G_CLIP=keep["neg_lse_clip"])
        self.sides = []  # (own is x, layout, grad constexprs, split-sum grid, split-sum constexprs)
        for own_is_x, n_own, n_other in ((True, n_rows, n_cols), (False, n_cols, n_rows)):
            side = config.backward_layout(n_own, n_other, dim, name)
            constexprs = dict(DIM=dim, BLOCK_O=side.bo, BLOCK_T=side.bt, BLOCK_K=side.bk, BLOCK_D=side.bd,
                              FP64=fp64, HALF=kind == "16bit", RESCALE=dtype == torch.float16, PRECISION=precision,
                              OWN_IS_X=own_is_x, **grads)
            split_grid = (config.cdiv(n_own, config.SPLIT_ROWS), config.cdiv(dim, config.SPLIT_COLS))
            split_constexprs = dict(DIM=dim, BLOCK_R=config.SPLIT_ROWS, BLOCK_C=config.SPLIT_COLS, FP64=fp64)
            self.sides.append((own_is_x, side, constexprs, split_grid, split_constexprs))
        self.scalar_constexprs = dict(BLOCK=config.BLOCK_PARTIALS)
        self.runners = {}  # triton_launch.launch's cache of compiled launchers for this plan


_plans: dict = {}
_MAX_PLANS = 4096


def _plan(x: Tensor, y: Tensor, offset: int, compute: int, differentiate: int) -> _Plan:
    # int(): under torch.compile with dynamic shapes this specializes on the sizes, which
    # the layouts (block sizes, grids) and the constexpr d depend on.
    n_rows, n_cols, dim = int(x.shape[0]), int(y.shape[0]), int(x.shape[1])
    key = (n_rows, n_cols, dim, x.dtype, int(offset), int(compute), int(differentiate))
    plan = _plans.get(key)
    if plan is None:
        if len(_plans) >= _MAX_PLANS:  # e.g. a sweep over many batch sizes
            _plans.clear()
        plan = _plans[key] = _Plan(n_rows, n_cols, dim, x.dtype, compute, differentiate)
    return plan


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- the two op implementations (their annotations are the op schemas) ---------------------

def forward(x: Tensor, y: Tensor, scale: Tensor, bias: Optional[Tensor], offset: int, compute: int,
            differentiate: int, clip: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(partials [8], row_lse, col_lse)`` of ops.py in three launches (module docstring)."""
    n_rows, n_cols = int(x.shape[0]), int(y.shape[0])
    plan = _plan(x, y, offset, compute, differentiate)
    layout = plan.forward
    acc = _acc(x.dtype)
    row_shape, col_shape = lse_shapes(n_rows, n_cols, differentiate)
    partials = new_output(x.new_empty((len(PARTIALS),), dtype=acc))
    row_lse = new_output(x.new_empty(row_shape, dtype=acc))
    col_lse = new_output(x.new_empty(col_shape, dtype=acc))
    tiles, merges = plan.tiles_constexprs, plan.merge_constexprs
    # the call's own workspaces (NaN-filled while tests poison outputs, so that an element
    # a program forgets to write fails a comparison)
    row_stats = new_output(x.new_empty((config.ROW_STATS, layout.col_groups, n_rows), dtype=acc))
    row_arg = x.new_empty((layout.col_groups, n_rows) if tiles["ARGMAX"] else (0,), dtype=torch.int32)
    col_stats = new_output(x.new_empty((2, layout.row_groups, n_cols) if tiles["COL_LSE"] else (0,), dtype=acc))
    pos = new_output(x.new_empty((n_rows,) if tiles["POS"] else (0,), dtype=acc))
    merge_sums = new_output(x.new_empty((plan.merge_grid[0], config.MERGE_SUMS), dtype=torch.float64))
    clip_hi, clip_lo = split_float(float(clip))
    bias_arg = scale if bias is None else bias
    traced = tracing(x)
    with DeviceGuard(x):
        launch_kernel(critic_tiles_kernel, plan.tiles_grid,
                      (x, y, scale, bias_arg, row_stats, row_arg, col_stats, pos, n_rows, n_cols, offset, clip_hi,
                       clip_lo, int(bias is not None), layout.row_blocks_per_program, layout.col_blocks_per_group),
                      tiles, num_warps=layout.num_warps, num_stages=layout.num_stages, runners=plan.runners,
                      traced=traced)
        launch_kernel(critic_merge_kernel, plan.merge_grid,
                      (row_stats, row_arg, col_stats, pos, row_lse, col_lse, merge_sums, n_rows, n_cols, offset,
                       layout.col_groups, layout.row_groups, layout.row_chunks),
                      merges, num_warps=config.REDUCE_WARPS, runners=plan.runners, traced=traced)
        launch_kernel(critic_finalize_kernel, (1,), (merge_sums, partials, plan.merge_grid[0], plan.finalize_blocks),
                      plan.finalize_constexprs, num_warps=config.REDUCE_WARPS, runners=plan.runners, traced=traced)
    return partials, row_lse, col_lse


def backward(grad_partials: Tensor, x: Tensor, y: Tensor, scale: Tensor, bias: Optional[Tensor], partials: Tensor,
             row_lse: Tensor, col_lse: Tensor, offset: int, compute: int, differentiate: int,
             clip: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(grad_x, grad_y, grad_scale, grad_bias)`` of ops.py (module docstring)."""
    plan = _plan(x, y, offset, compute, differentiate)
    acc = _acc(x.dtype)
    grad_x = new_output(torch.empty_like(x))
    grad_y = new_output(torch.empty_like(y))
    grad_scale = new_output(scale.new_empty((), dtype=acc))
    grad_bias = new_output(scale.new_empty((), dtype=acc)) if bias is not None else scale.new_empty((0,), dtype=acc)
    upstream = grad_partials.to(acc).contiguous()
    clip_hi, clip_lo = split_float(float(clip))
    bias_arg = scale if bias is None else bias
    traced = tracing(x)
    sums = None
    with DeviceGuard(x):
        for own_is_x, side, constexprs, split_grid, split_constexprs in plan.sides:
            own, other, grad = (x, y, grad_x) if own_is_x else (y, x, grad_y)
            # float32 (float64) accumulators, one slot per program: bounded by
            # TARGET_PROGRAMS x block x d whatever the batch (kernels/critic/config.py)
            work = new_output(x.new_empty((side.other_groups, side.workspace_rows(), own.shape[1]), dtype=acc))
            if own_is_x:  # per-row sums of G * dots and G, added by the scalar kernel
                sums = new_output(x.new_empty((config.GRAD_SUMS, side.other_groups, own.shape[0]), dtype=acc))
            launch_kernel(critic_grad_kernel, (side.programs, side.other_groups),
                          (own, other, scale, bias_arg, upstream, partials, row_lse, col_lse, work, grad,
                           sums if own_is_x else work, own.shape[0], other.shape[0], offset, clip_hi, clip_lo,
                           int(bias is not None), side.own_blocks_per_program, side.other_blocks_per_group),
                          constexprs, num_warps=side.num_warps, num_stages=side.num_stages, runners=plan.runners,
                          traced=traced)
            if side.split:
                launch_kernel(critic_split_sum_kernel, split_grid,
                              (work, scale, grad, own.shape[0], side.other_groups, side.workspace_rows()),
                              split_constexprs, num_warps=config.REDUCE_WARPS, runners=plan.runners, traced=traced)
            del work  # freed (stream-ordered) before the other side's workspace is allocated
        n_sums = plan.sides[0][1].other_groups * x.shape[0]
        launch_kernel(critic_scalar_grads_kernel, (1,),
                      (sums, grad_scale, grad_bias if bias is not None else grad_scale, n_sums,
                       config.cdiv(n_sums, config.BLOCK_PARTIALS), int(bias is not None)),
                      plan.scalar_constexprs, num_warps=config.REDUCE_WARPS, runners=plan.runners, traced=traced)
    return grad_x, grad_y, grad_scale, grad_bias


ops = define_critic_ops("triton", forward, backward, register=register_triton)
partials = ops.partials
