"""The InfoGAN loss's per-row math (ARCHITECTURE.md sections 3 to 5), once, as Triton jit
helpers, over the shared numerics of kernels/common/numerics.py.

The forward (forward.py) and the backward (backward.py) kernels call these;
csrc/infogan/math.h holds the same formulas for C++ and CUDA.

    softplus(x) = max(x, 0) + log1p(exp(-|x|))
    a_i  = t softplus(-r_i) + (1 - t) softplus(r_i)                 (real rows)
    b_j  = softplus(f_j),  g_j = softplus(-f_j) | -softplus(f_j)     (fake rows)
    e_jk = logsumexp(l_jk) - l_jk[c_jk]
    u_jb = softplus(-v_jb) if c_jb = 1 else softplus(v_jb)
    h_jd = 0.5 log(2 pi) + 0.5 s_jd + 0.5 (c_jd - mu_jd)^2 exp(-s_jd)

Values are computed in the accumulation type: float32 for float32/bfloat16/float16
inputs, float64 for float64 (``FP64``). An invalid code (a categorical index outside
[0, K), a bernoulli value other than 0 or 1) makes its term and its gradient NaN; the
kernels never read memory at the code's value.
"""

import triton
import triton.language as tl

from ..common.numerics import add_at, read_at, sigmoid_pair, softplus_pair, to_acc
from . import config

# jit code may read a global only when it is a constexpr
HALF_LOG_2PI = tl.constexpr(0.9189385332046727)
LOG2 = tl.constexpr(0.6931471805599453)
# where each partial sum lives (config.py defines them once for Python; csrc/infogan/math.h
# for C++, checked equal by tests/test_layout.py)
SUM_REAL_NEG = tl.constexpr(config.SUM_REAL_NEG)
SUM_REAL_POS = tl.constexpr(config.SUM_REAL_POS)
SUM_FAKE_POS = tl.constexpr(config.SUM_FAKE_POS)
SUM_FAKE_NEG = tl.constexpr(config.SUM_FAKE_NEG)
SUM_BERN = tl.constexpr(config.SUM_BERN)
SUM_CONT = tl.constexpr(config.SUM_CONT)
SUM_CAT0 = tl.constexpr(config.SUM_CAT0)
STAT_JSD = tl.constexpr(config.STAT_JSD)
STAT_MI_BERN = tl.constexpr(config.STAT_MI_BERN)
STAT_MI_CONT = tl.constexpr(config.STAT_MI_CONT)
STAT_MI_CAT0 = tl.constexpr(config.STAT_MI_CAT0)


@triton.jit
def bernoulli_code_ok(c):
    return (c == 0.0) | (c == 1.0)


@triton.jit
def bernoulli_nll(v, c):
    """u = -log Bernoulli(c | sigmoid(v)); NaN unless c is 0 or 1."""
    sp_pos, sp_neg = softplus_pair(v)
    u = tl.where(c > 0.5, sp_neg, sp_pos)
    return tl.where(bernoulli_code_ok(c), u, float("nan"))


@triton.jit
def bernoulli_grad(v, c):
    """du/dv = sigmoid(v) - c; NaN unless c is 0 or 1."""
    p, p_m1 = sigmoid_pair(v)
    g = tl.where(c > 0.5, p_m1, p)
    return tl.where(bernoulli_code_ok(c), g, float("nan"))


@triton.jit
def gaussian_nll(mu, s, inv_var, c):
    """h = -log N(c | mu, exp(s)) given inv_var = exp(-s)."""
    d = c - mu
    return HALF_LOG_2PI + 0.5 * s + 0.5 * d * d * inv_var


@triton.jit
def gaussian_grads(mu, inv_var, c):
    """(dh/dmu, dh/ds) = ((mu - c) exp(-s), 0.5 (1 - (c - mu)^2 exp(-s)))."""
    d = c - mu
    return -d * inv_var, 0.5 * (1.0 - d * d * inv_var)


@triton.jit
def softmax_grad(soft, is_code):
    """d e / d l = softmax(l) - onehot(c), the "- 1" taken in the accumulation type."""
    return tl.where(is_code, soft - 1.0, soft)


@triton.jit
def real_grad(r, scale, t):
    """d/dr of a = scale (sigmoid(r) - t), as t (sigmoid(r) - 1) + (1 - t) sigmoid(r)."""
    p, p_m1 = sigmoid_pair(r)
    return scale * (t * p_m1 + (1.0 - t) * p)


@triton.jit
def fake_grad(f, scale_d, scale_g, MINIMAX: tl.constexpr, HAS_D: tl.constexpr, HAS_G: tl.constexpr):
    """d/df = scale_d sigmoid(f) + scale_g (sigmoid(f) - 1)   (non-saturating G)
            | scale_d sigmoid(f) - scale_g sigmoid(f)          (minimax G)
    with a loss whose upstream grad is absent left out (not multiplied by 0: at a NaN
    logit that would make the other loss's gradient NaN)."""
    p, p_m1 = sigmoid_pair(f)
    if MINIMAX:
        g_term = -scale_g * p
    else:
        g_term = scale_g * p_m1
    if HAS_D and HAS_G:
        return scale_d * p + g_term
    elif HAS_D:
        return scale_d * p
    else:
        return g_term


@triton.jit
def load_logits(ptrs, mask, col_ok, FP64: tl.constexpr):
    """A tile of logits in the accumulation type, -inf in the columns past the code (so
    they drop out of max and sum) and 0 in rows past the batch (which keeps their
    discarded log-sum-exp finite)."""
    x = to_acc(tl.load(ptrs, mask=mask, other=0.0), FP64)
    return tl.where(col_ok, x, float("-inf"))


@triton.jit
def finalize(sums, disc_ptr, gen_ptr, info_ptr, stats_ptr, n_real, n_rows,
             prior_entropy, lambda_cat, lambda_cont, real_label,
             CAT_SIZES: tl.constexpr, N_BERN: tl.constexpr, N_CONT: tl.constexpr,
             HAS_REAL: tl.constexpr, HAS_FAKE: tl.constexpr, MINIMAX: tl.constexpr,
             SUM_REDUCTION: tl.constexpr, N_SUMS: tl.constexpr, N_STATS: tl.constexpr):
    """Section 4: the losses and stats from the partial sums, in the sums' dtype (float64,
    with float64 scalars, as the CPU and CUDA kernels finalize), stored in the outputs'.

        sums: REAL_NEG = sum softplus(-r), REAL_POS = sum softplus(r), FAKE_POS = sum
              softplus(f), FAKE_NEG = sum softplus(-f), BERN = sum u, CONT = sum h,
              CAT0 + k = sum_j e_jk
        R(x) = x / B (mean) or x (sum)
        L_D_adv = R(t REAL_NEG + (1 - t) REAL_POS) + R(FAKE_POS)
        L_G_adv = R(FAKE_NEG)  (non-saturating)  |  -R(FAKE_POS)  (minimax)
        L_info  = lambda_cat R(BERN + sum_k CAT_k) + lambda_cont R(CONT)
        jsd = log 2 - (REAL_NEG / Br + FAKE_POS / Bf) / 2,   mi_cat_k = log K_k - CAT_k / Bf
        mi_bern = nb log 2 - BERN / Bf,   mi_cont = n H(prior) - CONT / Bf
    """
    sidx = tl.arange(0, N_SUMS)
    n_q = tl.cast(n_rows, sums.dtype)
    n_r = tl.cast(n_real, sums.dtype)
    if SUM_REDUCTION:
        rq = tl.cast(1.0, sums.dtype)
        rr = tl.cast(1.0, sums.dtype)
    else:
        rq = 1.0 / n_q
        rr = 1.0 / tl.maximum(n_r, 1.0)
    real_neg = read_at(sums, sidx, SUM_REAL_NEG)
    fake_pos = read_at(sums, sidx, SUM_FAKE_POS)
    d_adv = tl.cast(0.0, sums.dtype)
    g_adv = tl.cast(0.0, sums.dtype)
    if HAS_REAL:  # a term of weight 0 is left out: 0 * softplus(+inf) would be NaN
        real_pos = read_at(sums, sidx, SUM_REAL_POS)
        mixed = real_label * real_neg + (1.0 - real_label) * real_pos
        d_adv = tl.where(real_label == 1.0, real_neg, tl.where(real_label == 0.0, real_pos, mixed)) * rr
    if HAS_FAKE:
        d_adv += fake_pos * rq
        if MINIMAX:
            g_adv = -fake_pos * rq
        else:
            g_adv = read_at(sums, sidx, SUM_FAKE_NEG) * rq
    cat_like = tl.sum(tl.where((sidx == SUM_BERN) | ((sidx >= SUM_CAT0) & (sidx < SUM_CAT0 + len(CAT_SIZES))), sums, 0.0), axis=0)
    cont = read_at(sums, sidx, SUM_CONT)
    info = lambda_cat * cat_like * rq + lambda_cont * cont * rq
    tl.store(disc_ptr, (d_adv + info).to(disc_ptr.dtype.element_ty))
    tl.store(gen_ptr, (g_adv + info).to(gen_ptr.dtype.element_ty))
    tl.store(info_ptr, info.to(info_ptr.dtype.element_ty))

    tidx = tl.arange(0, N_STATS)
    nan = tl.cast(float("nan"), sums.dtype)
    stats = tl.zeros([N_STATS], sums.dtype)
    if HAS_REAL and HAS_FAKE:
        stats = add_at(stats, tidx, STAT_JSD, LOG2 - 0.5 * (real_neg / n_r + fake_pos / n_q))
    else:
        stats = add_at(stats, tidx, STAT_JSD, nan)
    if N_BERN > 0:
        stats = add_at(stats, tidx, STAT_MI_BERN, N_BERN * LOG2 - read_at(sums, sidx, SUM_BERN) / n_q)
    else:
        stats = add_at(stats, tidx, STAT_MI_BERN, nan)
    if N_CONT > 0:
        stats = add_at(stats, tidx, STAT_MI_CONT, N_CONT * prior_entropy - cont / n_q)
    else:
        stats = add_at(stats, tidx, STAT_MI_CONT, nan)
    for k in tl.static_range(len(CAT_SIZES)):
        log_k = tl.log(tl.full([], CAT_SIZES[k], sums.dtype))
        stats = add_at(stats, tidx, STAT_MI_CAT0 + k, log_k - read_at(sums, sidx, SUM_CAT0 + k) / n_q)
    tl.store(stats_ptr + tidx, stats.to(stats_ptr.dtype.element_ty), mask=tidx < STAT_MI_CAT0 + len(CAT_SIZES))
