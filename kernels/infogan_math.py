"""The per-row math of ARCHITECTURE.md sections 3 to 5, once, as Triton jit helpers.

The forward (infogan_forward.py) and the backward (infogan_backward.py) kernels call
these; csrc/common/infogan_math.h holds the same formulas for C++ and CUDA.

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

# jit code may read a global only when it is a constexpr
HALF_LOG_2PI = tl.constexpr(0.9189385332046727)
LOG2 = tl.constexpr(0.6931471805599453)


@triton.jit
def to_acc(x, FP64: tl.constexpr):
    """x in the accumulation type."""
    if FP64:
        return x.to(tl.float64)
    else:
        return x.to(tl.float32)


@triton.jit
def scalar_arg(hi, lo, FP64: tl.constexpr):
    """A Python float passed as the pair (hi, lo) = (fp32(x), fp32(x - hi)).

    Triton passes a Python float as fp32 (torch.compile as fp64): the pair restores
    ~48 mantissa bits for the float64 path; float32 math uses hi alone."""
    if FP64:
        return tl.cast(hi, tl.float64) + tl.cast(lo, tl.float64)
    else:
        return tl.cast(hi, tl.float32)


@triton.jit
def log1p_unit(y):
    """log(1 + y) for y in [0, 1], corrected for the rounding of 1 + y (a tiny y gives y)."""
    u = 1.0 + y
    return tl.log(u) - ((u - 1.0) - y) / u


@triton.jit
def softplus_pair(x):
    """(softplus(x), softplus(-x)) from one exp and one log."""
    tail = log1p_unit(tl.exp(-tl.abs(x)))
    return tl.maximum(x, 0.0) + tail, tl.maximum(-x, 0.0) + tail


@triton.jit
def sigmoid_pair(x):
    """(sigmoid(x), sigmoid(x) - 1) from one exp: the "- 1" is exact, not 1 - rounded p."""
    e = tl.exp(-tl.abs(x))
    inv = 1.0 / (1.0 + e)
    small = e * inv  # sigmoid(-|x|)
    nonneg = x >= 0.0
    return tl.where(nonneg, inv, small), tl.where(nonneg, -small, -inv)


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
def fake_grad(f, scale_d, scale_g, MINIMAX: tl.constexpr):
    """d/df = scale_d sigmoid(f) + scale_g (sigmoid(f) - 1)   (non-saturating G)
            | scale_d sigmoid(f) - scale_g sigmoid(f)          (minimax G)"""
    p, p_m1 = sigmoid_pair(f)
    if MINIMAX:
        return scale_d * p - scale_g * p
    else:
        return scale_d * p + scale_g * p_m1


@triton.jit
def load_logits(ptrs, mask, col_ok, FP64: tl.constexpr):
    """A tile of logits in the accumulation type, -inf in the columns past the code (so
    they drop out of max and sum) and 0 in rows past the batch (which keeps their
    discarded log-sum-exp finite)."""
    x = to_acc(tl.load(ptrs, mask=mask, other=0.0), FP64)
    return tl.where(col_ok, x, float("-inf"))


@triton.jit
def online_lse_step(m_run, s_run, x):
    """One chunk of an online log-sum-exp over axis 1: (max, sum exp(x - max)) so far."""
    m_new = tl.maximum(m_run, tl.max(x, axis=1))
    s_new = s_run * tl.exp(m_run - m_new) + tl.sum(tl.exp(x - m_new[:, None]), axis=1)
    return m_new, s_new


@triton.jit
def put(vec, idx, i, value):
    """vec + value at slot i (idx = arange over vec): a scalar added into a register vector."""
    return vec + tl.where(idx == i, value, 0.0)


@triton.jit
def get(vec, idx, i):
    """vec[i] of a register vector."""
    return tl.sum(tl.where(idx == i, vec, 0.0), axis=0)


@triton.jit
def finalize(sums, disc_ptr, gen_ptr, info_ptr, stats_ptr, n_real, n_rows,
             prior_entropy, lambda_cat, lambda_cont, real_label,
             CAT_SIZES: tl.constexpr, N_BERN: tl.constexpr, N_CONT: tl.constexpr,
             HAS_REAL: tl.constexpr, HAS_FAKE: tl.constexpr, MINIMAX: tl.constexpr,
             SUM_REDUCTION: tl.constexpr, N_SUMS: tl.constexpr, N_STATS: tl.constexpr, FP64: tl.constexpr):
    """Section 4: the losses and stats from the partial sums.

        sums = [sum softplus(-r), sum softplus(r), sum softplus(f), sum softplus(-f),
                sum u, sum h, sum_j e_j1, ..., sum_j e_jm]
        R(x) = x / B (mean) or x (sum)
        L_D_adv = R(t sums[0] + (1 - t) sums[1]) + R(sums[2])
        L_G_adv = R(sums[3])  (non-saturating)  |  -R(sums[2])  (minimax)
        L_info  = lambda_cat R(sums[4] + sum_k sums[6 + k]) + lambda_cont R(sums[5])
        jsd = log 2 - (sums[0] / Br + sums[2] / Bf) / 2,   mi_cat_k = log K_k - sums[6 + k] / Bf
        mi_bern = nb log 2 - sums[4] / Bf,   mi_cont = n H(prior) - sums[5] / Bf
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
    real_neg = get(sums, sidx, 0)
    fake_pos = get(sums, sidx, 2)
    d_adv = tl.cast(0.0, sums.dtype)
    g_adv = tl.cast(0.0, sums.dtype)
    if HAS_REAL:
        d_adv = (real_label * real_neg + (1.0 - real_label) * get(sums, sidx, 1)) * rr
    if HAS_FAKE:
        d_adv += fake_pos * rq
        if MINIMAX:
            g_adv = -fake_pos * rq
        else:
            g_adv = get(sums, sidx, 3) * rq
    cat_like = tl.sum(tl.where((sidx == 4) | ((sidx >= 6) & (sidx < 6 + len(CAT_SIZES))), sums, 0.0), axis=0)
    cont = get(sums, sidx, 5)
    info = lambda_cat * cat_like * rq + lambda_cont * cont * rq
    tl.store(disc_ptr, (d_adv + info).to(disc_ptr.dtype.element_ty))
    tl.store(gen_ptr, (g_adv + info).to(gen_ptr.dtype.element_ty))
    tl.store(info_ptr, info.to(info_ptr.dtype.element_ty))

    tidx = tl.arange(0, N_STATS)
    nan = tl.cast(float("nan"), sums.dtype)
    stats = tl.zeros([N_STATS], sums.dtype)
    if HAS_REAL and HAS_FAKE:
        stats = put(stats, tidx, 0, LOG2 - 0.5 * (real_neg / n_r + fake_pos / n_q))
    else:
        stats = put(stats, tidx, 0, nan)
    if N_BERN > 0:
        stats = put(stats, tidx, 1, N_BERN * LOG2 - get(sums, sidx, 4) / n_q)
    else:
        stats = put(stats, tidx, 1, nan)
    if N_CONT > 0:
        stats = put(stats, tidx, 2, N_CONT * prior_entropy - cont / n_q)
    else:
        stats = put(stats, tidx, 2, nan)
    for k in tl.static_range(len(CAT_SIZES)):
        log_k = tl.log(to_acc(tl.full([], CAT_SIZES[k], tl.float64), FP64))
        stats = put(stats, tidx, 3 + k, log_k - get(sums, sidx, 6 + k) / n_q)
    tl.store(stats_ptr + tidx, stats.to(stats_ptr.dtype.element_ty), mask=tidx < 3 + len(CAT_SIZES))
