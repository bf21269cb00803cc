"""critic_bound's forward: the partials of fastmi/critic/bounds.py from tiles of
S = scale * x y^T + bias that are never stored, in three launches.

1. ``critic_tiles_kernel`` (grid row_groups x col_groups, kernels/critic/config.py):
   program (r, c) computes each of its tiles by ``tl.dot`` and folds it into

   - per row of the tile, over the columns of its group: the running max and, for the
     row LSE, sum exp(S - max) (online log-sum-exp); the first column of the max
     (argmax); over the row's negatives (its positive masked to -inf before any exp) the
     online LSE for neg_lse, sum softplus(S) for neg_softplus, the online LSE of
     clamp(S, -tau, tau) for neg_lse_clip; stored per group in a [ROW_STATS, col_groups,
     B] workspace at the end of each row block; and the positive S[i, i + o] when it
     lies in the group, in a [B] workspace;
   - per column (symmetric InfoNCE), over the rows of its row group: the same (max, sum),
     in the group's own [N] slice of a [2, row_groups, N] workspace, read, merged and
     written back tile after tile by this program alone. So both directions of CLIP's
     loss come from one set of tiles.

2. ``critic_merge_kernel`` (row_chunks + col_chunks programs): merges the groups'
   statistics of each row in group order: LSE_j S[i, :] = m + log s (stored as ``row_lse``
   when the backward needs it), the argmax (the first group holding the maximum: the
   first maximal column), and sums row_lse_sum, pos_sum, pos_softplus, correct,
   neg_softplus and the (max, sum) of the negatives' LSEs over its rows; likewise each
   column's LSE and col_lse_sum; float64 sums, one [MERGE_SUMS] row per program.

3. ``critic_finalize_kernel`` (one program): adds the merge programs' sums and merges their
   (max, sum) pairs, in program order, in float64, and writes the partials vector (0 for
   a partial outside ``compute``).

Every workspace element has one writer, each sum a fixed order that depends on the shapes
alone: the result is bit-identical from run to run, and no state is shared between calls
(the workspaces are the call's own). The GEMM kernel carries no float64 state (float64
scalars carried through its loops made ptxas spill); the float64 sums start in the
merge. Memory: O(B + N) statistics, never a tile of S.
"""

import triton
import triton.language as tl

from ..common.numerics import add_at, lse_merge, online_lse_step, scalar_arg, softplus_pair, sub_max, tile_lse, to_acc
from . import config
from .terms import (COL_LSE_SUM, CORRECT, N_PARTIALS, NEG_LSE, NEG_LSE_CLIP, NEG_SOFTPLUS, POS_SOFTPLUS, POS_SUM,
                    ROW_LSE_SUM, dot_tile, load_scale_bias)

# per-row statistics: slots of the [ROW_STATS, col_groups, B] workspace
ROW_MAX_AT = tl.constexpr(config.ROW_MAX_AT)
ROW_SUM_AT = tl.constexpr(config.ROW_SUM_AT)
NEG_MAX_AT = tl.constexpr(config.NEG_MAX_AT)
NEG_SUM_AT = tl.constexpr(config.NEG_SUM_AT)
NEG_SP_AT = tl.constexpr(config.NEG_SP_AT)
CLIP_MAX_AT = tl.constexpr(config.CLIP_MAX_AT)
CLIP_SUM_AT = tl.constexpr(config.CLIP_SUM_AT)
# a merge program's float64 sums: the partials' slots, then two (max, sum) pairs
MERGE_SUMS = tl.constexpr(config.MERGE_SUMS)
MERGE_NEG_MAX = tl.constexpr(config.MERGE_NEG_MAX)
MERGE_NEG_SUM = tl.constexpr(config.MERGE_NEG_SUM)
MERGE_CLIP_MAX = tl.constexpr(config.MERGE_CLIP_MAX)
MERGE_CLIP_SUM = tl.constexpr(config.MERGE_CLIP_SUM)


@triton.jit
def _chunk_lse(m, s, ok):
    """The float64 (max, sum) of a chunk's per-row (max, sum) pairs."""
    m = tl.where(ok, m, float("-inf"))
    chunk_max = tl.max(m, axis=0)
    return chunk_max.to(tl.float64), tl.sum(tl.where(ok, s * tl.exp(sub_max(m, chunk_max)), 0.0), axis=0).to(tl.float64)


@triton.jit
def _merge_pair(stats, at, slot_max, slot_sum, stride, ok, m, total):
    """(m, total) merged with a group's per-row (max, sum) at slots slot_max / slot_sum."""
    g_max = tl.load(stats + slot_max * stride + at, mask=ok, other=float("-inf"))
    return lse_merge(m, total, g_max, tl.load(stats + slot_sum * stride + at, mask=ok, other=0.0))


@triton.jit(do_not_specialize=['n_rows', 'n_cols', 'offset', 'has_bias', 'row_blocks_per_program',
                               'col_blocks_per_group'])
def critic_tiles_kernel(
    x_ptr, y_ptr, scale_ptr, bias_ptr,                    # inputs (bias_ptr: the scale's when has_bias = 0)
    row_stats_ptr, row_arg_ptr,                           # [ROW_STATS, col_groups, B], [col_groups, B] int32
    col_stats_ptr,                                        # [2, row_groups, N]: column (max, sum)
    pos_ptr,                                              # [B] positives
    n_rows, n_cols, offset, clip, clip_lo, has_bias, row_blocks_per_program, col_blocks_per_group,
    DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    FP64: tl.constexpr, PRECISION: tl.constexpr,
    ROW_MAX: tl.constexpr, ROW_LSE: tl.constexpr, COL_LSE: tl.constexpr, ARGMAX: tl.constexpr, POS: tl.constexpr,
    NEG_LSE_ON: tl.constexpr, NEG_SP_ON: tl.constexpr, CLIP_ON: tl.constexpr,
):
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    row_groups = tl.num_programs(0)
    scale, bias = load_scale_bias(scale_ptr, bias_ptr, has_bias, FP64)
    tau = scalar_arg(clip, clip_lo, FP64)
    inf: tl.constexpr = float("inf")
    n_col_blocks = tl.cdiv(n_cols, BLOCK_N)
    c_lo = pid_c * col_blocks_per_group
    c_hi = tl.minimum(c_lo + col_blocks_per_group, n_col_blocks)
    first_col = c_lo * BLOCK_N
    last_col = tl.minimum(c_hi * BLOCK_N, n_cols)
    row_stride = tl.num_programs(1).to(tl.int64) * n_rows   # one slot of the row statistics
    col_stride = row_groups.to(tl.int64) * n_cols
    zero_row = to_acc(tl.zeros([BLOCK_M], tl.float32), FP64)

    # while, not range(): the interpreter (with numpy >= 2.4) cannot take a runtime
    # scalar as a range() bound; a row block past the end is fully masked
    it = 0
    while it < row_blocks_per_program:
        rows = (pid_r + it * row_groups) * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < n_rows
        r_max = zero_row - inf
        r_sum = zero_row
        r_arg = tl.zeros([BLOCK_M], tl.int32)
        r_pos = zero_row
        n_max = zero_row - inf
        n_sum = zero_row
        n_sp = zero_row
        k_max = zero_row - inf
        k_sum = zero_row
        cb = c_lo
        while cb < c_hi:
            cols = cb * BLOCK_N + tl.arange(0, BLOCK_N)
            col_ok = cols < n_cols
            valid = row_ok[:, None] & col_ok[None, :]
            dots = dot_tile(x_ptr, y_ptr, rows, cols, row_ok, col_ok, DIM, BLOCK_M, BLOCK_N, BLOCK_K, FP64, PRECISION)
            s = tl.where(valid, dots * scale + bias, -inf)
            is_pos = cols[None, :] == rows[:, None] + offset
            if ROW_MAX:
                tile_max = tl.max(s, axis=1)
                new_max = tl.maximum(r_max, tile_max)
                if ARGMAX:  # the first maximal column; a later tile only wins with a larger max
                    tile_arg = tl.min(tl.where(s == tile_max[:, None], cols[None, :], 2147483647), axis=1)
                    r_arg = tl.where(tile_max > r_max, tile_arg, r_arg)
                if ROW_LSE:
                    r_sum = r_sum * tl.exp(sub_max(r_max, new_max)) + tl.sum(tl.exp(sub_max(s, new_max[:, None])),
                                                                             axis=1)
                r_max = new_max
            if POS:
                r_pos += tl.sum(tl.where(is_pos, s, 0.0), axis=1)
            if COL_LSE:
                t_max, t_sum = tile_lse(s, 0)
                col_at = col_stats_ptr + pid_r.to(tl.int64) * n_cols + cols
                first = col_ok & (it > 0)  # the first row block starts the column's statistics
                prev_max = tl.load(col_at, mask=first, other=-inf)
                prev_sum = tl.load(col_at + col_stride, mask=first, other=0.0)
                m, total = lse_merge(prev_max, prev_sum, t_max, t_sum)
                tl.store(col_at, m, mask=col_ok)
                tl.store(col_at + col_stride, total, mask=col_ok)
                tl.debug_barrier()  # the next row block's load sees every thread's store
            if NEG_LSE_ON or NEG_SP_ON or CLIP_ON:
                negative = valid & (cols[None, :] != rows[:, None] + offset)
                if NEG_LSE_ON:
                    n_max, n_sum = online_lse_step(n_max, n_sum, tl.where(negative, s, -inf))
                if NEG_SP_ON:
                    n_sp += tl.sum(tl.where(negative, softplus_pair(s)[0], 0.0), axis=1)
                if CLIP_ON:
                    clipped = tl.minimum(tl.maximum(s, -tau), tau)
                    k_max, k_sum = online_lse_step(k_max, k_sum, tl.where(negative, clipped, -inf))
            cb += 1
        at = row_stats_ptr + pid_c.to(tl.int64) * n_rows + rows
        if ROW_MAX:
            tl.store(at + ROW_MAX_AT * row_stride, r_max, mask=row_ok)
        if ROW_LSE:
            tl.store(at + ROW_SUM_AT * row_stride, r_sum, mask=row_ok)
        if ARGMAX:
            tl.store(row_arg_ptr + pid_c.to(tl.int64) * n_rows + rows, r_arg, mask=row_ok)
        if NEG_LSE_ON:
            tl.store(at + NEG_MAX_AT * row_stride, n_max, mask=row_ok)
            tl.store(at + NEG_SUM_AT * row_stride, n_sum, mask=row_ok)
        if NEG_SP_ON:
            tl.store(at + NEG_SP_AT * row_stride, n_sp, mask=row_ok)
        if CLIP_ON:
            tl.store(at + CLIP_MAX_AT * row_stride, k_max, mask=row_ok)
            tl.store(at + CLIP_SUM_AT * row_stride, k_sum, mask=row_ok)
        if POS:  # each positive is in exactly one column group: one writer per row
            target = rows + offset
            tl.store(pos_ptr + rows, r_pos, mask=row_ok & (target >= first_col) & (target < last_col))
        it += 1


@triton.jit(do_not_specialize=['n_rows', 'n_cols', 'offset', 'col_groups', 'row_groups', 'row_chunks'])
def critic_merge_kernel(
    row_stats_ptr, row_arg_ptr, col_stats_ptr, pos_ptr,   # workspaces of the tiles
    row_lse_ptr, col_lse_ptr,                             # outputs (KEEP_*)
    sums_ptr,                                             # [programs, MERGE_SUMS] float64
    n_rows, n_cols, offset, col_groups, row_groups, row_chunks,
    BLOCK: tl.constexpr, FP64: tl.constexpr,
    ROW_MAX: tl.constexpr, ROW_LSE: tl.constexpr, KEEP_ROW: tl.constexpr, ARGMAX: tl.constexpr,
    POS_SUM_ON: tl.constexpr, POS_SP_ON: tl.constexpr, NEG_LSE_ON: tl.constexpr, NEG_SP_ON: tl.constexpr,
    CLIP_ON: tl.constexpr, COL_LSE: tl.constexpr, KEEP_COL: tl.constexpr,
):
    """Program p < row_chunks merges rows [p BLOCK, (p + 1) BLOCK) over the column groups;
    a later program merges a chunk of columns over the row groups (module docstring)."""
    pid = tl.program_id(0)
    inf: tl.constexpr = float("inf")
    slots = tl.arange(0, MERGE_SUMS)
    sums = tl.zeros([MERGE_SUMS], tl.float64)
    zero = to_acc(tl.zeros([BLOCK], tl.float32), FP64)
    if pid < row_chunks:
        rows = pid * BLOCK + tl.arange(0, BLOCK)
        ok = rows < n_rows
        row_stride = tl.cast(col_groups, tl.int64) * n_rows
        m, total, arg = zero - inf, zero, tl.zeros([BLOCK], tl.int32)
        n_max, n_sum, n_sp, k_max, k_sum = zero - inf, zero, zero, zero - inf, zero
        g = 0
        while g < col_groups:  # group order: column order, so the first maximum wins ties
            at = g * tl.cast(n_rows, tl.int64) + rows
            if ROW_MAX:
                g_max = tl.load(row_stats_ptr + ROW_MAX_AT * row_stride + at, mask=ok, other=-inf)
                if ARGMAX:
                    arg = tl.where(g_max > m, tl.load(row_arg_ptr + at, mask=ok, other=0), arg)
                if ROW_LSE:
                    m, total = lse_merge(m, total, g_max,
                                         tl.load(row_stats_ptr + ROW_SUM_AT * row_stride + at, mask=ok, other=0.0))
                else:
                    m = tl.maximum(m, g_max)
            if NEG_LSE_ON:
                n_max, n_sum = _merge_pair(row_stats_ptr, at, NEG_MAX_AT, NEG_SUM_AT, row_stride, ok, n_max, n_sum)
            if NEG_SP_ON:
                n_sp += tl.load(row_stats_ptr + NEG_SP_AT * row_stride + at, mask=ok, other=0.0)
            if CLIP_ON:
                k_max, k_sum = _merge_pair(row_stats_ptr, at, CLIP_MAX_AT, CLIP_SUM_AT, row_stride, ok, k_max, k_sum)
            g += 1
        if ROW_LSE:
            lse = m + tl.log(total)
            if KEEP_ROW:
                tl.store(row_lse_ptr + rows, lse, mask=ok)
            sums = add_at(sums, slots, ROW_LSE_SUM, tl.sum(tl.where(ok, lse, 0.0), axis=0).to(tl.float64))
        if ARGMAX:
            hit = ok & (arg == rows + offset)
            sums = add_at(sums, slots, CORRECT, tl.sum(hit.to(tl.int32), axis=0).to(tl.float64))
        if POS_SUM_ON or POS_SP_ON:
            pos = tl.load(pos_ptr + rows, mask=ok, other=0.0)
            if POS_SUM_ON:
                sums = add_at(sums, slots, POS_SUM, tl.sum(tl.where(ok, pos, 0.0), axis=0).to(tl.float64))
            if POS_SP_ON:
                sums = add_at(sums, slots, POS_SOFTPLUS,
                              tl.sum(tl.where(ok, softplus_pair(pos)[1], 0.0), axis=0).to(tl.float64))
        if NEG_LSE_ON:
            c_max, c_sum = _chunk_lse(n_max, n_sum, ok)
            sums = add_at(add_at(sums, slots, MERGE_NEG_MAX, c_max), slots, MERGE_NEG_SUM, c_sum)
        if NEG_SP_ON:
            sums = add_at(sums, slots, NEG_SOFTPLUS, tl.sum(tl.where(ok, n_sp, 0.0), axis=0).to(tl.float64))
        if CLIP_ON:
            c_max, c_sum = _chunk_lse(k_max, k_sum, ok)
            sums = add_at(add_at(sums, slots, MERGE_CLIP_MAX, c_max), slots, MERGE_CLIP_SUM, c_sum)
    else:
        if COL_LSE:
            cols = (pid - row_chunks) * BLOCK + tl.arange(0, BLOCK)
            ok = cols < n_cols
            col_stride = tl.cast(row_groups, tl.int64) * n_cols
            m = zero - inf
            total = zero
            g = 0
            while g < row_groups:
                m, total = _merge_pair(col_stats_ptr, g * tl.cast(n_cols, tl.int64) + cols, 0, 1, col_stride, ok, m,
                                       total)
                g += 1
            lse = m + tl.log(total)
            if KEEP_COL:
                tl.store(col_lse_ptr + cols, lse, mask=ok)
            sums = add_at(sums, slots, COL_LSE_SUM, tl.sum(tl.where(ok, lse, 0.0), axis=0).to(tl.float64))
    tl.store(sums_ptr + pid * MERGE_SUMS + slots, sums)


@triton.jit(do_not_specialize=['n_merges', 'merge_blocks'])
def critic_finalize_kernel(
    sums_ptr, partials_ptr,                     # [merges, MERGE_SUMS] float64 in; [N_PARTIALS] out
    n_merges, merge_blocks,
    BLOCK_PARTIALS: tl.constexpr, NEG_LSE_ON: tl.constexpr, CLIP_ON: tl.constexpr,
):
    """One program: the merge programs' sums added, and their (max, sum) pairs merged, in
    program order in float64; partials = their values in the output's dtype, 0 for a
    partial that was not computed (the merges leave those slots 0)."""
    inf: tl.constexpr = float("inf")
    slots = tl.arange(0, MERGE_SUMS)
    total = tl.zeros([MERGE_SUMS], tl.float64)
    zero64 = tl.zeros([], tl.float64)
    neg_max, neg_sum, clip_max, clip_sum = zero64 - inf, zero64, zero64 - inf, zero64
    blk = 0
    while blk < merge_blocks:
        prog = blk * BLOCK_PARTIALS + tl.arange(0, BLOCK_PARTIALS)
        ok = prog < n_merges
        part = tl.load(sums_ptr + prog[:, None] * MERGE_SUMS + slots[None, :], mask=ok[:, None], other=0.0)
        total += tl.sum(tl.where(slots[None, :] < N_PARTIALS, part, 0.0), axis=0)
        if NEG_LSE_ON:
            m = tl.load(sums_ptr + prog * MERGE_SUMS + MERGE_NEG_MAX, mask=ok, other=-inf)
            s = tl.load(sums_ptr + prog * MERGE_SUMS + MERGE_NEG_SUM, mask=ok, other=0.0)
            b_max = tl.max(m, axis=0)
            neg_max, neg_sum = lse_merge(neg_max, neg_sum, b_max, tl.sum(s * tl.exp(sub_max(m, b_max)), axis=0))
        if CLIP_ON:
            m = tl.load(sums_ptr + prog * MERGE_SUMS + MERGE_CLIP_MAX, mask=ok, other=-inf)
            s = tl.load(sums_ptr + prog * MERGE_SUMS + MERGE_CLIP_SUM, mask=ok, other=0.0)
            b_max = tl.max(m, axis=0)
            clip_max, clip_sum = lse_merge(clip_max, clip_sum, b_max, tl.sum(s * tl.exp(sub_max(m, b_max)), axis=0))
        blk += 1
    if NEG_LSE_ON:
        total = add_at(total, slots, NEG_LSE, neg_max + tl.log(neg_sum))
    if CLIP_ON:
        total = add_at(total, slots, NEG_LSE_CLIP, clip_max + tl.log(clip_sum))
    out = tl.arange(0, N_PARTIALS)
    tl.store(partials_ptr + out, tl.sum(tl.where(slots[None, :] == out[:, None], total[None, :], 0.0), axis=1)
             .to(partials_ptr.dtype.element_ty))
