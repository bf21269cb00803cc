"""The fused backward: every gradient of section 5 in one launch, recomputed from the inputs.

With upstream grads gD, gG, gI read from device memory (an absent one is 0: its
``HAS_*`` flag is off and its pointer is never read), G = gD + gG + gI, and
R = 1 / B (mean) or 1 (sum):

    d/dr_i   = gD R_r (sigmoid(r_i) - t)
    d/df_j   = gD R sigmoid(f_j) + gG R (sigmoid(f_j) - 1)       (non-saturating)
             | gD R sigmoid(f_j) - gG R sigmoid(f_j)             (minimax)
    d/dl_jk  = G lambda_cat R (softmax(l_jk) - onehot(c_jk))
    d/dv_jb  = G lambda_cat R (sigmoid(v_jb) - c_jb)
    d/dmu_jd = G lambda_cont R (mu_jd - c_jd) exp(-s_jd)
    d/ds_jd  = G lambda_cont R 0.5 (1 - (c_jd - mu_jd)^2 exp(-s_jd))   (learned std only)

Each "- 1" / "- onehot" is applied in the accumulation type before the one rounding to
the gradient's dtype. Program p handles Q row tile p and real-logit block p (the layout
of kernels/infogan/config.py); a categorical code wider than its block is walked twice (online
log-sum-exp, then the gradient). Nothing is saved from the forward, and the gradients
go to fresh tensors, never into an input.
"""

import triton
import triton.language as tl

from ..common.numerics import online_lse_step, scalar_arg, sub_max, to_acc
from .terms import bernoulli_grad, fake_grad, gaussian_grads, load_logits, real_grad, softmax_grad


@triton.jit
def _upstream(ptr, HAS: tl.constexpr, FP64: tl.constexpr):
    if HAS:
        return to_acc(tl.load(ptr), FP64)
    else:
        return to_acc(tl.zeros([], tl.float32), FP64)


@triton.jit
def _categorical_grad(q_rows, g_rows, codes, row_ok, scale, OFFSET: tl.constexpr, K: tl.constexpr,
                      BLOCK: tl.constexpr, FP64: tl.constexpr):
    """scale (softmax(l_j) - onehot(c_j)) for one code over a tile of rows; NaN where c_j
    is outside [0, K)."""
    c = tl.load(codes, mask=row_ok, other=0)
    valid = (c >= 0) & (c < K)
    cols = tl.arange(0, BLOCK)
    if BLOCK >= K:  # logits stay in registers: one read, one write
        mask = row_ok[:, None] & (cols[None, :] < K)
        x = load_logits(q_rows[:, None] + (OFFSET + cols)[None, :], mask, cols[None, :] < K, FP64)
        m = tl.max(x, axis=1)
        p = tl.exp(sub_max(x, m[:, None]))
        soft = p * (1.0 / tl.sum(p, axis=1))[:, None]
        g = softmax_grad(soft, cols[None, :] == c[:, None]) * scale
        g = tl.where(valid[:, None], g, float("nan"))
        tl.store(g_rows[:, None] + (OFFSET + cols)[None, :], g.to(g_rows.dtype.element_ty), mask=mask)
    else:  # pass 1: log-sum-exp; pass 2: gradient
        s = to_acc(tl.zeros(row_ok.shape, tl.float32), FP64)
        m = s + float("-inf")
        for start in range(0, K, BLOCK):
            cc = start + cols
            mask = row_ok[:, None] & (cc[None, :] < K)
            x = load_logits(q_rows[:, None] + (OFFSET + cc)[None, :], mask, cc[None, :] < K, FP64)
            m, s = online_lse_step(m, s, x)
        # softmax = exp(x - lse); at +inf logits (m = +inf) the limit, 1 / count for each
        # of them and 0 elsewhere, as exp(min(x, big) - big) / s with big the largest
        # finite value (one min per logit: a sub_max here made ptxas spill)
        if FP64:
            big = tl.full([], 1.7976931348623157e308, tl.float64)
        else:
            big = tl.full([], 3.4028234663852886e38, tl.float32)
        at_inf = m == float("inf")
        log_s = tl.log(s)
        base = tl.where(at_inf, big, m + log_s)
        limit_scale = tl.where(at_inf, tl.exp(-log_s), 1.0)  # 1 / s without a division's slow-path call
        for start in range(0, K, BLOCK):
            cc = start + cols
            mask = row_ok[:, None] & (cc[None, :] < K)
            x = load_logits(q_rows[:, None] + (OFFSET + cc)[None, :], mask, cc[None, :] < K, FP64)
            soft = tl.exp(tl.minimum(x, big) - base[:, None]) * limit_scale[:, None]
            g = softmax_grad(soft, cc[None, :] == c[:, None]) * scale
            g = tl.where(valid[:, None], g, float("nan"))
            tl.store(g_rows[:, None] + (OFFSET + cc)[None, :], g.to(g_rows.dtype.element_ty), mask=mask)


@triton.jit
def infogan_backward_kernel(
    grad_disc_ptr, grad_gen_ptr, grad_info_ptr,                   # upstream grads (0-dim), read when HAS_*
    real_ptr, fake_ptr, q_ptr, cat_ptr, bern_ptr, cont_ptr,      # inputs (an absent one: any pointer)
    grad_real_ptr, grad_fake_ptr, grad_q_ptr,                     # outputs
    n_real, n_rows,
    fixed_logvar, fixed_logvar_lo, lambda_cat, lambda_cat_lo, lambda_cont, lambda_cont_lo,
    real_label, real_label_lo,
    W: tl.constexpr, CAT_SIZES: tl.constexpr, CAT_OFFSETS: tl.constexpr, CAT_BLOCKS: tl.constexpr,
    N_BERN: tl.constexpr, BERN_OFFSET: tl.constexpr, BLOCK_BERN: tl.constexpr,
    N_CONT: tl.constexpr, MU_OFFSET: tl.constexpr, BLOCK_CONT: tl.constexpr,
    LEARNED_STD: tl.constexpr, HAS_REAL: tl.constexpr, HAS_FAKE: tl.constexpr, MINIMAX: tl.constexpr,
    SUM_REDUCTION: tl.constexpr, FP64: tl.constexpr, ROWS: tl.constexpr, BLOCK_REAL: tl.constexpr,
    HAS_GRAD_DISC: tl.constexpr, HAS_GRAD_GEN: tl.constexpr, HAS_GRAD_INFO: tl.constexpr,
):
    pid = tl.program_id(0)
    fixed_logvar = scalar_arg(fixed_logvar, fixed_logvar_lo, FP64)
    lambda_cat = scalar_arg(lambda_cat, lambda_cat_lo, FP64)
    lambda_cont = scalar_arg(lambda_cont, lambda_cont_lo, FP64)
    real_label = scalar_arg(real_label, real_label_lo, FP64)
    g_disc = _upstream(grad_disc_ptr, HAS_GRAD_DISC, FP64)
    g_gen = _upstream(grad_gen_ptr, HAS_GRAD_GEN, FP64)
    g_info = _upstream(grad_info_ptr, HAS_GRAD_INFO, FP64)
    g_all = g_disc + g_gen + g_info
    if SUM_REDUCTION:
        r_q = to_acc(tl.full([], 1.0, tl.float32), FP64)
        r_real = r_q
    else:
        r_q = 1.0 / tl.cast(n_rows, g_all.dtype)
        r_real = 1.0 / tl.maximum(tl.cast(n_real, g_all.dtype), 1.0)

    if HAS_REAL and HAS_GRAD_DISC:  # only the discriminator loss uses the real logits
        first = pid.to(tl.int64) * BLOCK_REAL  # element offsets in int64, inside a block in int32
        if first < n_real:
            offs = tl.arange(0, BLOCK_REAL)
            ok = offs < tl.minimum(n_real - first, BLOCK_REAL).to(tl.int32)
            r = to_acc(tl.load(real_ptr + first + offs, mask=ok, other=0.0), FP64)
            g_real = real_grad(r, g_disc * r_real, real_label)
            tl.store(grad_real_ptr + first + offs, g_real.to(grad_real_ptr.dtype.element_ty), mask=ok)

    first = pid.to(tl.int64) * ROWS  # the tile's first row in int64 (B x W may pass 2^31), rows in it in
    if first < n_rows:               # int32 (config.choose_layout keeps ROWS x W below 2^31)
        local = tl.arange(0, ROWS)
        row_ok = local < tl.minimum(n_rows - first, ROWS).to(tl.int32)
        q_rows = q_ptr + first * W + local * W
        g_rows = grad_q_ptr + first * W + local * W
        if HAS_FAKE and (HAS_GRAD_DISC or HAS_GRAD_GEN):  # the info loss does not use them
            f = to_acc(tl.load(fake_ptr + first + local, mask=row_ok, other=0.0), FP64)
            g_fake = fake_grad(f, g_disc * r_q, g_gen * r_q, MINIMAX, HAS_GRAD_DISC, HAS_GRAD_GEN)
            tl.store(grad_fake_ptr + first + local, g_fake.to(grad_fake_ptr.dtype.element_ty), mask=row_ok)
        scale_cat = g_all * lambda_cat * r_q
        for k in tl.static_range(len(CAT_SIZES)):
            codes = cat_ptr + first * len(CAT_SIZES) + local * len(CAT_SIZES) + k
            _categorical_grad(q_rows, g_rows, codes, row_ok, scale_cat, CAT_OFFSETS[k], CAT_SIZES[k], CAT_BLOCKS[k],
                              FP64)
        if N_BERN > 0:
            for start in range(0, N_BERN, BLOCK_BERN):
                cb = start + tl.arange(0, BLOCK_BERN)
                b_mask = row_ok[:, None] & (cb[None, :] < N_BERN)
                cols = (BERN_OFFSET + cb)[None, :]
                v = to_acc(tl.load(q_rows[:, None] + cols, mask=b_mask, other=0.0), FP64)
                b = to_acc(tl.load(bern_ptr + first * N_BERN + local[:, None] * N_BERN + cb[None, :], mask=b_mask,
                                   other=0.0), FP64)
                g_bern = bernoulli_grad(v, b) * scale_cat
                tl.store(g_rows[:, None] + cols, g_bern.to(grad_q_ptr.dtype.element_ty), mask=b_mask)
        if N_CONT > 0:
            scale_cont = g_all * lambda_cont * r_q
            for start in range(0, N_CONT, BLOCK_CONT):
                cd = start + tl.arange(0, BLOCK_CONT)
                d_mask = row_ok[:, None] & (cd[None, :] < N_CONT)
                mu_cols = (MU_OFFSET + cd)[None, :]
                mu = to_acc(tl.load(q_rows[:, None] + mu_cols, mask=d_mask, other=0.0), FP64)
                code = to_acc(tl.load(cont_ptr + first * N_CONT + local[:, None] * N_CONT + cd[None, :], mask=d_mask,
                                      other=0.0), FP64)
                if LEARNED_STD:
                    logvar = to_acc(tl.load(q_rows[:, None] + mu_cols + N_CONT, mask=d_mask, other=0.0), FP64)
                    inv_var = tl.exp(-logvar)
                else:
                    inv_var = tl.exp(-fixed_logvar)
                g_mu, g_s = gaussian_grads(mu, inv_var, code)
                tl.store(g_rows[:, None] + mu_cols, (g_mu * scale_cont).to(grad_q_ptr.dtype.element_ty),
                         mask=d_mask)
                if LEARNED_STD:
                    tl.store(g_rows[:, None] + mu_cols + N_CONT, (g_s * scale_cont).to(grad_q_ptr.dtype.element_ty),
                             mask=d_mask)
