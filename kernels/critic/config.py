"""Tunables of critic_bound's Triton kernels and the host-side choice of their launch layout.

Every block size, warp count, stage count and program count of kernels/critic/ lives
here, so that a GPU session tunes them in one place. The layouts depend only on the
shapes, the dtype and the problem (never on data or on the GPU), so one call always gets
one layout: the summation order, hence the result, is bit-identical from run to run, and
a CUDA graph or a compiled graph sees fixed launches.

Forward (forward.py), for x [B, d] and y [N, d], rows in blocks of ``bm``, columns in
blocks of ``bn``, d in chunks of ``bk`` (the reduction dimension of each ``tl.dot``):

- a grid of ``row_groups`` x ``col_groups`` programs. Program (r, c) takes the row blocks
  r, r + row_groups, ... and, for each, the column blocks of its group c (a contiguous run
  of ``col_blocks_per_group``). Columns are split only when the row blocks alone cannot
  fill ``TARGET_PROGRAMS`` programs (small B). With column LSEs (symmetric InfoNCE) the
  row groups are capped at ``SYM_ROW_GROUPS``: each keeps a [N] slice of per-column
  statistics, so the workspace is row_groups x N, O(N), not (B / bm) x N.
- a merge launch: ``row_chunks`` programs over ``BLOCK_REDUCE`` rows (and ``col_chunks``
  over columns) combine the groups' per-row (per-column) statistics into float64 sums;
- a one-program finalize that adds those in program order.

Backward (backward.py), once with x's rows as the "own" side (dx) and once with y's
(dy): ``programs`` programs stride over the own blocks of ``bo`` rows, each against
``other_groups`` contiguous runs of other-side blocks of ``bt`` rows (split only when the
own blocks cannot fill TARGET_PROGRAMS); the gradient of an own block is accumulated in
float32, ``bd`` columns of d at a time, in the program's own slot of a workspace of
programs x other_groups x bo x d floats (bounded by TARGET_PROGRAMS x bo x d, whatever B).

The kernels' integer arguments (sizes, offset, trip counts) are not specialized
(``do_not_specialize``): they only bound loops and masks, so a compiled kernel depends on
the constexprs and the pointers' dtypes alone, one compile serves every batch size of a
layout, and tests/test_critic_triton_aot.py can name each specialization the tests use.

Tuning: change the constants below (fastmi/critic/triton.py caches plans per shape, so set
them before the first call, or clear ``fastmi.critic.triton._plans``).
tests/test_critic_triton_aot.py compiles every specialization the tests use, plus the
benchmark shapes, for sm_90 and fails on a register spill: run it after a change.
"""

from __future__ import annotations

from typing import NamedTuple

# ---- tunables -------------------------------------------------------------------------
# (rows per block, columns per block, d per dot, warps, pipeline stages) by input kind
FORWARD_TILES = {
    "16bit": (128, 64, 64, 8, 3),   # bf16 / fp16: tensor cores, fp32 accumulation
    "fp32": (64, 64, 32, 8, 3),      # fp32 through FP32_PRECISION's three tf32 products
    "fp64": (32, 32, 16, 4, 2),      # fp64 mma (DMMA on sm_80+)
}
# (own rows per block, other rows per block, d per dot of the recompute, d per gradient
# chunk, warps, stages) by input kind
BACKWARD_TILES = {
    "16bit": (64, 128, 64, 64, 8, 2),
    "fp32": (64, 32, 32, 32, 4, 2),      # three tf32 products need room: 64 x 64 tiles, 8 warps or
                                         # 64-wide gradient chunks spilled 4 to 16 B (255 registers)
    "fp64": (32, 32, 16, 32, 4, 1),
}
TARGET_PROGRAMS = 528    # programs to aim for (4 per SM on an H100 / H200)
SYM_ROW_GROUPS = 32      # the most row groups when per-column LSEs are kept (workspace x N)
BLOCK_REDUCE = 512       # rows (columns) per program of the forward's statistics merge (1024
                         # spilled 8 B with argmax, neg_lse and neg_softplus on 4 warps)
BLOCK_PARTIALS = 64      # partial-sum rows the finalize programs add per step
SPLIT_ROWS = 32          # rows x SPLIT_COLS elements per program of the backward's split sum
SPLIT_COLS = 128
MIN_BLOCK = 16           # tl.dot's smallest M, N and K
FP32_PRECISION = "tf32x3"  # float32 inputs: three tf32 products, about float32's accuracy
                           # ("tf32" is one product, 2^-11 relative: a score of 100 off by 0.05)
REDUCE_WARPS = 4

# ---- where each value lives --------------------------------------------------------------
# fastmi/critic/bounds.py PARTIALS order (tests/test_critic_triton_aot.py checks it)
POS_SUM, ROW_LSE_SUM, COL_LSE_SUM, NEG_LSE, POS_SOFTPLUS, NEG_SOFTPLUS, NEG_LSE_CLIP, CORRECT = range(8)
N_PARTIALS = 8
# the forward's per-row statistics: slots of its [ROW_STATS, col_groups, B] workspace
ROW_MAX_AT, ROW_SUM_AT, NEG_MAX_AT, NEG_SUM_AT, NEG_SP_AT, CLIP_MAX_AT, CLIP_SUM_AT = range(7)
ROW_STATS = 7
# a merge program's float64 sums [MERGE_SUMS]: the partials' slots, then two (max, sum) pairs
MERGE_NEG_MAX, MERGE_NEG_SUM, MERGE_CLIP_MAX, MERGE_CLIP_SUM = range(N_PARTIALS, N_PARTIALS + 4)
MERGE_SUMS = 16
# the dx pass's per-row sums (float32 [2, other_groups, B]): sum_j G * (x y^T), sum_j G
GRAD_SCALE_SUM, GRAD_BIAS_SUM = range(2)
GRAD_SUMS = 2


def next_pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def kind(dtype_name: str) -> str:
    """"16bit", "fp32" or "fp64" for a torch dtype's name ("bfloat16", "float32", ...)."""
    return {"float64": "fp64", "float32": "fp32"}.get(dtype_name, "16bit")


def block(default: int, size: int) -> int:
    """``default`` shrunk to the next power of two >= size, never below MIN_BLOCK."""
    return max(MIN_BLOCK, min(default, next_pow2(size)))


class ForwardLayout(NamedTuple):
    bm: int
    bn: int
    bk: int
    row_blocks: int
    col_blocks: int
    row_groups: int                # grid axis 0
    col_groups: int                # grid axis 1
    row_blocks_per_program: int    # strided: r, r + row_groups, ...
    col_blocks_per_group: int      # contiguous
    row_chunks: int                # merge programs over rows
    col_chunks: int                # merge programs over columns (0 without column LSEs)
    num_warps: int
    num_stages: int


def forward_layout(n_rows: int, n_cols: int, dim: int, dtype_name: str, col_lse: bool) -> ForwardLayout:
    """The forward's layout for x [n_rows, dim] against y [n_cols, dim] (module docstring)."""
    bm, bn, bk, warps, stages = FORWARD_TILES[kind(dtype_name)]
    bm, bn, bk = block(bm, n_rows), block(bn, n_cols), block(bk, dim)
    row_blocks, col_blocks = cdiv(n_rows, bm), cdiv(n_cols, bn)
    row_groups = min(row_blocks, SYM_ROW_GROUPS) if col_lse else row_blocks
    col_groups = min(col_blocks, max(1, cdiv(TARGET_PROGRAMS, row_groups)))
    per_group = cdiv(col_blocks, col_groups)
    col_groups = cdiv(col_blocks, per_group)  # no empty group
    return ForwardLayout(bm, bn, bk, row_blocks, col_blocks, row_groups, col_groups, cdiv(row_blocks, row_groups),
                         per_group, cdiv(n_rows, BLOCK_REDUCE), cdiv(n_cols, BLOCK_REDUCE) if col_lse else 0,
                         warps, stages)


class BackwardLayout(NamedTuple):
    bo: int
    bt: int
    bk: int
    bd: int
    own_blocks: int
    other_blocks: int
    programs: int                  # grid axis 0: strided over the own blocks
    other_groups: int              # grid axis 1: contiguous runs of other blocks
    own_blocks_per_program: int
    other_blocks_per_group: int
    num_warps: int
    num_stages: int

    @property
    def split(self) -> bool:
        """Whether an own block's gradient is a sum over several programs (a split-sum launch follows)."""
        return self.other_groups > 1

    def workspace_rows(self) -> int:
        """Rows of the float32 accumulation workspace [other_groups, programs x bo, d]."""
        return self.programs * self.bo


def backward_layout(n_own: int, n_other: int, dim: int, dtype_name: str) -> BackwardLayout:
    """The layout of one backward pass: own rows (x for dx, y for dy) against other rows."""
    bo, bt, bk, bd, warps, stages = BACKWARD_TILES[kind(dtype_name)]
    bo, bt, bk, bd = block(bo, n_own), block(bt, n_other), block(bk, dim), block(bd, dim)
    own_blocks, other_blocks = cdiv(n_own, bo), cdiv(n_other, bt)
    programs = min(own_blocks, TARGET_PROGRAMS)
    # split the other side only when every own block has its own program (then program
    # index == own block, and the workspace is other_groups x B x d, bounded as well)
    groups = 1 if programs < own_blocks else min(other_blocks, max(1, cdiv(TARGET_PROGRAMS, own_blocks)))
    per_group = cdiv(other_blocks, groups)
    groups = cdiv(other_blocks, per_group)
    return BackwardLayout(bo, bt, bk, bd, own_blocks, other_blocks, programs, groups, cdiv(own_blocks, programs),
                          per_group, warps, stages)
