"""critic_bound's backward: grad_x = s G y, grad_y = s G^T x, grad_scale = sum G * (x y^T)
and grad_bias = sum G, with the tiles of S recomputed from the inputs and the forward's
saved statistics (row_lse, col_lse, the partials), never stored.

``critic_grad_kernel`` runs twice: with ``OWN_IS_X`` (programs own blocks of x's rows:
grad_x, and the per-program sums for grad_scale and grad_bias) and without (programs own
blocks of y's rows and work on S^T: grad_y). A program strides over its own blocks
(kernels/critic/config.py); for each, it walks the other side's blocks of its group in
order, recomputes the tile by ``tl.dot``, forms G (terms.score_grad) and adds
G @ other, ``BLOCK_D`` columns of d at a time, into the own block's float32 (float64)
accumulator in the program's own slot of the workspace; after the group's last block it
writes s * accumulator in the gradient's dtype (or, when the other side is split over
several programs, leaves it there for ``critic_split_sum_kernel``, which adds the groups
in order). No float atomics: every element has one writer and each sum a fixed order,
so the gradients are bit-identical from run to run.

The product G @ other runs on tensor cores in the inputs' dtype: for 16-bit inputs G is
rounded once to that dtype (as FlashAttention rounds dS), a relative error of 2^-9
(bfloat16) or 2^-11 (float16) per element; for float16, whose range ends at 6e-5 (a G of
1 / (B N) would vanish), each own row of G is first divided by a power of two near its
largest |G| and the product multiplied back, both exact. float32 inputs use
FP32_PRECISION's products and float64 the float64 ones.

``critic_scalar_grads_kernel`` adds the OWN_IS_X pass's per-row sums in row order, in float64.
"""

import triton
import triton.language as tl

from ..common.numerics import scalar_arg, to_acc
from . import config
from .terms import (COL_LSE_SUM, NEG_LSE, NEG_LSE_CLIP, NEG_SOFTPLUS, POS_SOFTPLUS, POS_SUM, ROW_LSE_SUM, dot_tile,
                    load_scale_bias, score_grad)

GRAD_SUMS = tl.constexpr(config.GRAD_SUMS)
GRAD_SCALE_SUM = tl.constexpr(config.GRAD_SCALE_SUM)
GRAD_BIAS_SUM = tl.constexpr(config.GRAD_BIAS_SUM)


@triton.jit
def _read(ptr, INDEX: tl.constexpr, ON: tl.constexpr, FP64: tl.constexpr):
    """ptr[INDEX] in the accumulation type when ON, else 0 (the pointer is not read)."""
    if ON:
        return to_acc(tl.load(ptr + INDEX), FP64)
    else:
        return to_acc(tl.zeros([], tl.float32), FP64)


@triton.jit
def _lse_at(ptr, idx, ok, ON: tl.constexpr, FP64: tl.constexpr):
    """The saved LSEs at idx when ON, else 0 (not read)."""
    if ON:
        return to_acc(tl.load(ptr + idx, mask=ok, other=0.0), FP64)
    else:
        return to_acc(tl.zeros(idx.shape, tl.float32), FP64)


@triton.jit(do_not_specialize=['n_own', 'n_other', 'offset', 'has_bias', 'own_blocks_per_program',
                               'other_blocks_per_group'])
def critic_grad_kernel(
    own_ptr, other_ptr, scale_ptr, bias_ptr,            # inputs: own rows (x or y), the other side
    upstream_ptr, partials_ptr, row_lse_ptr, col_lse_ptr,  # grad of the partials [8]; saved by the forward
    work_ptr,                                            # float32 / float64 [groups, programs x BLOCK_O, DIM]
    grad_ptr,                                            # grad of own (written unless split)
    sums_ptr,                                            # float32 [GRAD_SUMS, groups, n_own] (OWN_IS_X)
    n_own, n_other, offset, clip, clip_lo, has_bias, own_blocks_per_program, other_blocks_per_group,
    DIM: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr, FP64: tl.constexpr, HALF: tl.constexpr, RESCALE: tl.constexpr,
    PRECISION: tl.constexpr, OWN_IS_X: tl.constexpr,
    G_POS_SUM: tl.constexpr, G_ROW: tl.constexpr, G_COL: tl.constexpr, G_NEG_LSE: tl.constexpr,
    G_POS_SP: tl.constexpr, G_NEG_SP: tl.constexpr, G_CLIP: tl.constexpr,
):
    pid = tl.program_id(0)
    group = tl.program_id(1)
    programs = tl.num_programs(0)
    scale, bias = load_scale_bias(scale_ptr, bias_ptr, has_bias, FP64)
    tau = scalar_arg(clip, clip_lo, FP64)
    g_pos_sum = _read(upstream_ptr, POS_SUM, G_POS_SUM, FP64)
    g_row = _read(upstream_ptr, ROW_LSE_SUM, G_ROW, FP64)
    g_col = _read(upstream_ptr, COL_LSE_SUM, G_COL, FP64)
    g_neg_lse = _read(upstream_ptr, NEG_LSE, G_NEG_LSE, FP64)
    g_pos_sp = _read(upstream_ptr, POS_SOFTPLUS, G_POS_SP, FP64)
    g_neg_sp = _read(upstream_ptr, NEG_SOFTPLUS, G_NEG_SP, FP64)
    g_clip = _read(upstream_ptr, NEG_LSE_CLIP, G_CLIP, FP64)
    neg_lse = _read(partials_ptr, NEG_LSE, G_NEG_LSE, FP64)
    neg_lse_clip = _read(partials_ptr, NEG_LSE_CLIP, G_CLIP, FP64)

    n_other_blocks = tl.cdiv(n_other, BLOCK_T)
    t_lo = group * other_blocks_per_group
    t_hi = tl.minimum(t_lo + other_blocks_per_group, n_other_blocks)
    local = tl.arange(0, BLOCK_O)
    slot = work_ptr + ((group * programs + pid) * BLOCK_O + local).to(tl.int64)[:, None] * DIM
    # several groups: critic_split_sum_kernel adds them; one: the last other block of the
    # loop writes s * accumulator as the gradient itself
    split = tl.num_programs(1) > 1
    unsplit = tl.num_programs(1) == 1

    # while, not range(): see forward.py
    it = 0
    while it < own_blocks_per_program:
        own = (pid + it * programs) * BLOCK_O + local
        own_ok = own < n_own
        own_rows = grad_ptr + own.to(tl.int64)[:, None] * DIM
        if OWN_IS_X:
            row_lse = _lse_at(row_lse_ptr, own, own_ok, G_ROW, FP64)[:, None]
        else:
            col_lse = _lse_at(col_lse_ptr, own, own_ok, G_COL, FP64)[:, None]
        block_gd = to_acc(tl.zeros([BLOCK_O], tl.float32), FP64)
        block_g = to_acc(tl.zeros([BLOCK_O], tl.float32), FP64)
        tb = t_lo
        while tb < t_hi:
            oth = tb * BLOCK_T + tl.arange(0, BLOCK_T)
            oth_ok = oth < n_other
            valid = own_ok[:, None] & oth_ok[None, :]
            dots = dot_tile(own_ptr, other_ptr, own, oth, own_ok, oth_ok, DIM, BLOCK_O, BLOCK_T, BLOCK_K, FP64,
                            PRECISION)
            s = dots * scale + bias
            if OWN_IS_X:  # the tile is S[own, oth]
                is_pos = oth[None, :] == own[:, None] + offset
                col_lse = _lse_at(col_lse_ptr, oth, oth_ok, G_COL, FP64)[None, :]
            else:         # the tile is S^T[own, oth] = S[oth, own]
                is_pos = own[:, None] == oth[None, :] + offset
                row_lse = _lse_at(row_lse_ptr, oth, oth_ok, G_ROW, FP64)[None, :]
            grad = score_grad(s, is_pos, valid, row_lse, col_lse, g_pos_sum, g_row, g_col, g_neg_lse, neg_lse,
                              g_pos_sp, g_neg_sp, g_clip, neg_lse_clip, tau, G_POS_SUM, G_ROW, G_COL, G_NEG_LSE,
                              G_POS_SP, G_NEG_SP, G_CLIP)
            if OWN_IS_X:
                block_gd += tl.sum(grad * dots, axis=1)
                block_g += tl.sum(grad, axis=1)
            if RESCALE:  # float16: each row of G over a power of two near its largest |G|
                bits = tl.max(tl.abs(grad), axis=1).to(tl.int32, bitcast=True) & 0x7F800000
                row_scale = bits.to(tl.float32, bitcast=True)                 # 2^e <= max |G| (0 if none)
                inverse = (0x7F000000 - bits).to(tl.float32, bitcast=True)    # 2^-e, exactly
                operand = (grad * inverse[:, None]).to(other_ptr.dtype.element_ty)
            elif HALF:
                operand = grad.to(other_ptr.dtype.element_ty)
            else:
                operand = grad
            oth_rows = other_ptr + oth.to(tl.int64)[:, None] * DIM
            for dc in range(0, DIM, BLOCK_D):
                d_idx = dc + tl.arange(0, BLOCK_D)
                d_ok = d_idx < DIM
                chunk = tl.load(oth_rows + d_idx[None, :], mask=oth_ok[:, None] & d_ok[None, :], other=0.0)
                if FP64:
                    part = tl.dot(operand, chunk, input_precision=PRECISION, out_dtype=tl.float64)
                else:
                    part = tl.dot(operand, chunk, input_precision=PRECISION)
                if RESCALE:
                    part = part * row_scale[:, None]
                here = own_ok[:, None] & d_ok[None, :]
                acc = part + tl.load(slot + d_idx[None, :], mask=here & (tb > t_lo), other=0.0)
                tl.store(slot + d_idx[None, :], acc, mask=here & (split | (tb < t_hi - 1)))
                tl.store(own_rows + d_idx[None, :], (acc * scale).to(grad_ptr.dtype.element_ty),
                         mask=here & unsplit & (tb == t_hi - 1))
            tl.debug_barrier()  # the next block's loads of the slot see every thread's stores
            tb += 1
        if OWN_IS_X:  # per row, added in float64 by critic_scalar_grads_kernel (a float64
            # scalar carried through these loops made ptxas spill)
            at = sums_ptr + group.to(tl.int64) * n_own + own
            stride = tl.num_programs(1).to(tl.int64) * n_own
            tl.store(at + GRAD_SCALE_SUM * stride, block_gd, mask=own_ok)
            tl.store(at + GRAD_BIAS_SUM * stride, block_g, mask=own_ok)
        it += 1


@triton.jit(do_not_specialize=['n_own', 'groups', 'group_rows'])
def critic_split_sum_kernel(
    work_ptr, scale_ptr, grad_ptr,              # [groups, group_rows, DIM] accumulators in; the gradient out
    n_own, groups, group_rows,
    DIM: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, FP64: tl.constexpr,
):
    """grad[i, :] = scale * sum over groups g, in order, of work[g, i, :]."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    here = (rows < n_own)[:, None] & (cols < DIM)[None, :]
    acc = to_acc(tl.zeros([BLOCK_R, BLOCK_C], tl.float32), FP64)
    at = rows.to(tl.int64)[:, None] * DIM + cols[None, :]
    stride = tl.cast(group_rows, tl.int64) * DIM
    g = 0
    while g < groups:
        acc += tl.load(work_ptr + g * stride + at, mask=here, other=0.0)
        g += 1
    scale = to_acc(tl.load(scale_ptr), FP64)
    tl.store(grad_ptr + at, (acc * scale).to(grad_ptr.dtype.element_ty), mask=here)


@triton.jit(do_not_specialize=['n_sums', 'blocks', 'has_bias'])
def critic_scalar_grads_kernel(
    sums_ptr, grad_scale_ptr, grad_bias_ptr,    # [GRAD_SUMS, n_sums] per-row sums in; 0-d outputs
    n_sums, blocks, has_bias,                   # grad_bias is written when has_bias != 0
    BLOCK: tl.constexpr,
):
    """One program: grad_scale = the sum of the dx pass's per-row sum_j G * dots, grad_bias
    = that of its sum_j G, each added in row order in float64."""
    gd = tl.zeros([], tl.float64)
    g = tl.zeros([], tl.float64)
    blk = 0
    while blk < blocks:
        at = blk * BLOCK + tl.arange(0, BLOCK)
        ok = at < n_sums
        gd += tl.sum(tl.load(sums_ptr + GRAD_SCALE_SUM * n_sums + at, mask=ok, other=0.0).to(tl.float64), axis=0)
        g += tl.sum(tl.load(sums_ptr + GRAD_BIAS_SUM * n_sums + at, mask=ok, other=0.0).to(tl.float64), axis=0)
        blk += 1
    tl.store(grad_scale_ptr, gd.to(grad_scale_ptr.dtype.element_ty))
    tl.store(grad_bias_ptr, g.to(grad_bias_ptr.dtype.element_ty), mask=has_bias != 0)
