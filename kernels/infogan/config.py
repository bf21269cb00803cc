"""Tunables of the Triton kernels and the host-side choice of their launch layout.

Every block size, warp count and rows-per-program choice of ``fastmi.kernels`` lives
here, so a GPU session tunes them in one place. :func:`choose_layout` depends only on
the shapes and the spec (never on data), so one shape always gets one layout: the
summation order, hence the result, is bit-identical from run to run, and a CUDA graph
or a compiled graph sees a fixed launch.

The layout (shared by the forward and the backward):

- Q rows are processed in tiles of ``rows`` rows. Each segment of a Q row (a
  categorical code, the bernoulli block, the mu block, the logvar block) is read as a
  ``[rows, block]`` tile; a segment wider than its block is walked in chunks of
  ``block`` columns (online log-sum-exp for a categorical code).
- ``rows`` is set by the widest segment: ``TILE_ELEMS // block`` rows, so a small-W
  spec (MNIST: W = 14) puts up to ``MAX_ROWS`` rows in a tile and a K = 65536 code
  puts one row in a tile and walks it in ``TILE_ELEMS``-column chunks.
- The forward runs ``programs = min(#tiles, MAX_PROGRAMS)`` programs, each striding
  over tiles (and over ``BLOCK_REAL``-blocks of real logits); with one program it
  finalizes from registers, else each program writes its partial sums and the last one
  to arrive (an atomic ticket) adds them in program order and finalizes.
- The backward runs one program per tile (no reduction).

Tuning: change the constants below (the plan cache of fastmi/infogan/triton.py
builds on first use of a shape, so set them before the first call, or clear
``fastmi.infogan.triton._plans``). tests/test_triton_aot.py compiles every
specialization the tests use for sm_90 and fails on a register spill, so run it after
a change. Two launcher switches live in fastmi/runtime/:
FASTMI_TRITON_FAST_LAUNCH=0 (triton_launch.py: launch through JITFunction.run every
time) and FASTMI_TRITON_OPAQUE_OPS=1 (library.py: custom ops instead of triton_ops).
"""

from __future__ import annotations

from typing import NamedTuple

# ---- tunables -------------------------------------------------------------------------
TILE_ELEMS = 4096        # elements of one [rows, block] segment tile (fp32/bf16/fp16 inputs)
TILE_ELEMS_FP64 = 2048   # the same for float64 inputs (twice the registers per element)
CHUNK_ELEMS = 2048       # a code wider than a tile is walked in chunks of this many columns (4096
                         # made ptxas 13 spill 16 B in the K = 65536 float32 backward, whose second
                         # pass keeps the +inf limit's base and scale live)
MAX_ROWS = 256           # the most Q rows in one tile (small W)
BLOCK_REAL = 1024        # real logits per block
MAX_PROGRAMS = 1024      # the most forward programs (= rows of the partial-sums workspace)
BLOCK_PARTIALS = 64      # partial-sum rows the last forward program adds per step
NUM_WARPS = 4            # warps per program, forward and backward (2 made ptxas 12.8 spill 8 B
                         # in one [128, 2]-tile backward: tests/test_triton_aot.py)


# Where each partial sum and each stat lives, the one Python definition (the kernels'
# terms.py and the Python side read these; csrc/infogan/math.h holds the C++ one, and
# tests/test_layout.py checks that the two agree).
SUM_REAL_NEG, SUM_REAL_POS, SUM_FAKE_POS, SUM_FAKE_NEG, SUM_BERN, SUM_CONT, SUM_CAT0 = range(7)
FIXED_SUMS = SUM_CAT0    # one more sum per categorical code follows
STAT_JSD, STAT_MI_BERN, STAT_MI_CONT, STAT_MI_CAT0 = range(4)
STATS_FIXED = STAT_MI_CAT0  # stats: [jsd, mi_bernoulli, mi_continuous, mi_categorical...]


def next_pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class Layout(NamedTuple):
    """One launch configuration; the constexprs the kernels specialize on."""

    rows: int               # Q rows per tile
    cat_blocks: tuple       # per categorical code: columns per chunk
    block_bern: int         # bernoulli columns per chunk
    block_cont: int         # continuous columns per chunk (mu; logvar likewise)
    block_real: int         # real logits per block
    n_tiles: int            # Q row tiles
    n_real_blocks: int
    programs: int           # forward programs
    backward_programs: int  # backward programs
    n_sums: int             # a power of two >= 6 + m: width of one partial-sums row
    n_stats: int            # a power of two >= 3 + m
    num_warps: int


def choose_layout(n_rows: int, n_real: int, cat_sizes: tuple, n_bernoulli: int, n_continuous: int,
                  fp64: bool) -> Layout:
    """The layout for ``n_rows`` Q rows, ``n_real`` real logits (0 when absent) and a spec."""
    tile = TILE_ELEMS_FP64 if fp64 else TILE_ELEMS
    if any(next_pow2(k) > tile for k in cat_sizes):
        tile = min(tile, CHUNK_ELEMS)
    widths = [min(next_pow2(w), tile) for w in (*cat_sizes, n_bernoulli, n_continuous) if w > 0]
    rows = max(1, min(MAX_ROWS, tile // max(widths), next_pow2(n_rows)))
    # offsets inside a tile are int32 in the kernels: keep rows x W below 2^31 (W at most
    # sum(K) + nb + 2n, with the log-variances)
    width = sum(cat_sizes) + n_bernoulli + 2 * n_continuous
    while rows > 1 and rows * width >= 2**31:
        rows //= 2
    per_row = tile // rows

    def block(width: int) -> int:
        return max(1, min(next_pow2(width), per_row))

    n_tiles = cdiv(n_rows, rows)
    block_real = min(BLOCK_REAL, next_pow2(max(n_real, 1)))
    n_real_blocks = cdiv(n_real, block_real) if n_real else 0
    work = max(n_tiles, n_real_blocks)
    m = len(cat_sizes)
    return Layout(
        rows=rows,
        cat_blocks=tuple(block(k) for k in cat_sizes),
        block_bern=block(n_bernoulli),
        block_cont=block(n_continuous),
        block_real=block_real,
        n_tiles=n_tiles,
        n_real_blocks=n_real_blocks,
        programs=min(work, MAX_PROGRAMS),
        backward_programs=work,
        n_sums=next_pow2(FIXED_SUMS + m),
        n_stats=next_pow2(STATS_FIXED + m),
        num_warps=NUM_WARPS,
    )


def cat_offsets(cat_sizes: tuple) -> tuple:
    """The Q column of each categorical code's first logit."""
    offsets, col = [], 0
    for k in cat_sizes:
        offsets.append(col)
        col += k
    return tuple(offsets)
