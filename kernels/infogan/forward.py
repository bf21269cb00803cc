"""The fused forward: every per-row term, the partial sums and the final outputs.

For Q rows j < Bf, real rows i < Br (ARCHITECTURE.md sections 3 and 4) it computes

    sums = [sum_i softplus(-r_i), sum_i softplus(r_i), sum_j softplus(f_j), sum_j softplus(-f_j),
            sum_jb u_jb, sum_jd h_jd, sum_j e_j1, ..., sum_j e_jm]

and from them (terms.finalize) the discriminator, generator and info losses and
the stats vector [jsd_bound, mi_bernoulli, mi_continuous, mi_categorical_1..m].

Work split (kernels/infogan/config.py chooses it from the shapes): program p takes Q row tiles
p, p + P, p + 2P, ... (``tiles_per_program`` of them, the last maybe past the end and
masked) and real-logit blocks likewise. Each term is summed over a tile in the
accumulation type (float32 for 16/32-bit inputs), and the tile sums are added into a
float64 register vector, as the CPU and CUDA kernels sum chunks of rows in float32 and
chunks together in float64; so the order of every sum depends only on the shapes.

With P = 1 (one launch) the program finalizes from registers. Otherwise (two launches)
each program stores its float64 partial sums in row p of its call's own ``partials``
workspace, and ``infogan_finalize_kernel``, one program launched after it on the same
stream, adds the P rows in program order and finalizes. No state is shared between
calls, so launches on concurrent streams or CUDA graphs cannot disturb each other, and
the result is bit-identical from run to run. The finalize math runs in float64.
"""

import triton
import triton.language as tl

from ..common.numerics import add_at, online_lse_step, scalar_arg, softplus_pair, sub_max, to_acc
from .terms import (SUM_BERN, SUM_CAT0, SUM_CONT, SUM_FAKE_NEG, SUM_FAKE_POS, SUM_REAL_NEG, SUM_REAL_POS, bernoulli_nll,
                    finalize, gaussian_nll, load_logits)


@triton.jit
def _categorical_nll(q_rows, codes, row_ok, OFFSET: tl.constexpr, K: tl.constexpr, BLOCK: tl.constexpr,
                     FP64: tl.constexpr):
    """e_j = logsumexp(l_j) - l_j[c_j] for one code over a tile of rows: NaN when c_j is
    outside [0, K). The logit at c_j is picked by comparing column indices, so an invalid
    c_j is never used as an address."""
    c = tl.load(codes, mask=row_ok, other=0)
    cols = tl.arange(0, BLOCK)
    s = to_acc(tl.zeros(row_ok.shape, tl.float32), FP64)  # online log-sum-exp: (max, sum exp(x - max))
    m = s + float("-inf")
    if BLOCK >= K:  # the whole code in one [rows, BLOCK] tile
        mask = row_ok[:, None] & (cols[None, :] < K)
        x = load_logits(q_rows[:, None] + (OFFSET + cols)[None, :], mask, cols[None, :] < K, FP64)
        m, s = online_lse_step(m, s, x)
        picked = tl.sum(tl.where(cols[None, :] == c[:, None], x, 0.0), axis=1)
    else:  # chunks of BLOCK columns
        picked = tl.zeros_like(m)
        for start in range(0, K, BLOCK):
            cc = start + cols
            mask = row_ok[:, None] & (cc[None, :] < K)
            x = load_logits(q_rows[:, None] + (OFFSET + cc)[None, :], mask, cc[None, :] < K, FP64)
            m, s = online_lse_step(m, s, x)
            picked += tl.sum(tl.where(cc[None, :] == c[:, None], x, 0.0), axis=1)
    e = tl.log(s) - sub_max(picked, m)  # LSE - picked, = +inf or log(#inf) at +inf logits
    return tl.where((c >= 0) & (c < K), e, float("nan"))


@triton.jit
def infogan_forward_kernel(
    real_ptr, fake_ptr, q_ptr, cat_ptr, bern_ptr, cont_ptr,      # inputs (an absent one: any pointer)
    disc_ptr, gen_ptr, info_ptr, stats_ptr,                       # outputs (SINGLE_PROGRAM)
    partials_ptr,                                                 # [P, N_SUMS] float64 workspace (else)
    n_real, n_rows, real_blocks_per_program, tiles_per_program,
    fixed_logvar, fixed_logvar_lo, prior_entropy, prior_entropy_lo, lambda_cat, lambda_cat_lo,
    lambda_cont, lambda_cont_lo, real_label, real_label_lo,
    W: tl.constexpr, CAT_SIZES: tl.constexpr, CAT_OFFSETS: tl.constexpr, CAT_BLOCKS: tl.constexpr,
    N_BERN: tl.constexpr, BERN_OFFSET: tl.constexpr, BLOCK_BERN: tl.constexpr,
    N_CONT: tl.constexpr, MU_OFFSET: tl.constexpr, BLOCK_CONT: tl.constexpr,
    LEARNED_STD: tl.constexpr, HAS_REAL: tl.constexpr, HAS_FAKE: tl.constexpr, MINIMAX: tl.constexpr,
    SUM_REDUCTION: tl.constexpr, FP64: tl.constexpr, ROWS: tl.constexpr, BLOCK_REAL: tl.constexpr,
    N_SUMS: tl.constexpr, N_STATS: tl.constexpr, SINGLE_PROGRAM: tl.constexpr,
):
    pid = tl.program_id(0)
    n_programs = tl.num_programs(0)
    fixed_logvar = scalar_arg(fixed_logvar, fixed_logvar_lo, FP64)

    sidx = tl.arange(0, N_SUMS)
    sums = tl.zeros([N_SUMS], tl.float64)  # tile sums (in the accumulation type) added in float64

    if HAS_REAL:
        # while, not range(): the interpreter (with numpy >= 2.4) cannot turn a runtime
        # scalar into a range() bound; a block past the end is fully masked
        it = 0
        while it < real_blocks_per_program:
            # element offsets in int64 (they may pass 2^31), offsets inside a block in int32
            first = (pid + it * n_programs).to(tl.int64) * BLOCK_REAL
            ok = tl.arange(0, BLOCK_REAL) < tl.minimum(n_real - first, BLOCK_REAL).to(tl.int32)
            r = to_acc(tl.load(real_ptr + first + tl.arange(0, BLOCK_REAL), mask=ok, other=0.0), FP64)
            r_pos, r_neg = softplus_pair(r)
            sums = add_at(sums, sidx, SUM_REAL_NEG, tl.sum(tl.where(ok, r_neg, 0.0), axis=0).to(tl.float64))
            sums = add_at(sums, sidx, SUM_REAL_POS, tl.sum(tl.where(ok, r_pos, 0.0), axis=0).to(tl.float64))
            it += 1

    it = 0
    while it < tiles_per_program:
        # the tile's first row in int64 (B x W may pass 2^31), rows inside it in int32
        # (config.choose_layout keeps ROWS x W below 2^31)
        first = (pid + it * n_programs).to(tl.int64) * ROWS
        local = tl.arange(0, ROWS)
        row_ok = local < tl.minimum(n_rows - first, ROWS).to(tl.int32)
        q_rows = q_ptr + first * W + local * W
        if HAS_FAKE:
            f = to_acc(tl.load(fake_ptr + first + local, mask=row_ok, other=0.0), FP64)
            f_pos, f_neg = softplus_pair(f)
            sums = add_at(sums, sidx, SUM_FAKE_POS, tl.sum(tl.where(row_ok, f_pos, 0.0), axis=0).to(tl.float64))
            sums = add_at(sums, sidx, SUM_FAKE_NEG, tl.sum(tl.where(row_ok, f_neg, 0.0), axis=0).to(tl.float64))
        for k in tl.static_range(len(CAT_SIZES)):
            codes = cat_ptr + first * len(CAT_SIZES) + local * len(CAT_SIZES) + k
            e = _categorical_nll(q_rows, codes, row_ok, CAT_OFFSETS[k], CAT_SIZES[k], CAT_BLOCKS[k], FP64)
            sums = add_at(sums, sidx, SUM_CAT0 + k, tl.sum(tl.where(row_ok, e, 0.0), axis=0).to(tl.float64))
        if N_BERN > 0:
            for start in range(0, N_BERN, BLOCK_BERN):
                cb = start + tl.arange(0, BLOCK_BERN)
                b_mask = row_ok[:, None] & (cb[None, :] < N_BERN)
                v = to_acc(tl.load(q_rows[:, None] + (BERN_OFFSET + cb)[None, :], mask=b_mask, other=0.0), FP64)
                b = to_acc(tl.load(bern_ptr + first * N_BERN + local[:, None] * N_BERN + cb[None, :], mask=b_mask,
                                   other=0.0), FP64)
                u = bernoulli_nll(v, b)
                sums = add_at(sums, sidx, SUM_BERN, tl.sum(tl.where(b_mask, u, 0.0)).to(tl.float64))
        if N_CONT > 0:
            for start in range(0, N_CONT, BLOCK_CONT):
                cd = start + tl.arange(0, BLOCK_CONT)
                d_mask = row_ok[:, None] & (cd[None, :] < N_CONT)
                mu = to_acc(tl.load(q_rows[:, None] + (MU_OFFSET + cd)[None, :], mask=d_mask, other=0.0), FP64)
                code = to_acc(tl.load(cont_ptr + first * N_CONT + local[:, None] * N_CONT + cd[None, :], mask=d_mask,
                                      other=0.0), FP64)
                if LEARNED_STD:
                    logvar = to_acc(tl.load(q_rows[:, None] + (MU_OFFSET + N_CONT + cd)[None, :], mask=d_mask,
                                            other=0.0), FP64)
                    h = gaussian_nll(mu, logvar, tl.exp(-logvar), code)
                else:
                    h = gaussian_nll(mu, fixed_logvar, tl.exp(-fixed_logvar), code)
                sums = add_at(sums, sidx, SUM_CONT, tl.sum(tl.where(d_mask, h, 0.0)).to(tl.float64))
        it += 1

    if SINGLE_PROGRAM:
        finalize(sums, disc_ptr, gen_ptr, info_ptr, stats_ptr, n_real, n_rows,
                 scalar_arg(prior_entropy, prior_entropy_lo, True), scalar_arg(lambda_cat, lambda_cat_lo, True),
                 scalar_arg(lambda_cont, lambda_cont_lo, True), scalar_arg(real_label, real_label_lo, True),
                 CAT_SIZES, N_BERN, N_CONT, HAS_REAL, HAS_FAKE, MINIMAX, SUM_REDUCTION, N_SUMS, N_STATS)
    else:
        tl.store(partials_ptr + pid * N_SUMS + sidx, sums)


@triton.jit
def infogan_finalize_kernel(
    partials_ptr, disc_ptr, gen_ptr, info_ptr, stats_ptr,         # [P, N_SUMS] float64 in; outputs
    n_partials, n_real, n_rows, partial_blocks,
    prior_entropy, prior_entropy_lo, lambda_cat, lambda_cat_lo, lambda_cont, lambda_cont_lo, real_label,
    real_label_lo,
    CAT_SIZES: tl.constexpr, N_BERN: tl.constexpr, N_CONT: tl.constexpr, HAS_REAL: tl.constexpr,
    HAS_FAKE: tl.constexpr, MINIMAX: tl.constexpr, SUM_REDUCTION: tl.constexpr, N_SUMS: tl.constexpr,
    N_STATS: tl.constexpr, BLOCK_PARTIALS: tl.constexpr,
):
    """One program: the forward programs' partial sums added in program order (float64),
    then the losses and stats."""
    sidx = tl.arange(0, N_SUMS)
    total = tl.zeros([N_SUMS], tl.float64)
    # while, not range(): see the forward kernel
    blk = 0
    while blk < partial_blocks:
        prog = blk * BLOCK_PARTIALS + tl.arange(0, BLOCK_PARTIALS)
        block = tl.load(partials_ptr + prog[:, None] * N_SUMS + sidx[None, :], mask=(prog < n_partials)[:, None],
                        other=0.0)
        total += tl.sum(block, axis=0)
        blk += 1
    finalize(total, disc_ptr, gen_ptr, info_ptr, stats_ptr, n_real, n_rows,
             scalar_arg(prior_entropy, prior_entropy_lo, True), scalar_arg(lambda_cat, lambda_cat_lo, True),
             scalar_arg(lambda_cont, lambda_cont_lo, True), scalar_arg(real_label, real_label_lo, True),
             CAT_SIZES, N_BERN, N_CONT, HAS_REAL, HAS_FAKE, MINIMAX, SUM_REDUCTION, N_SUMS, N_STATS)
