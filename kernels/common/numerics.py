"""Numerics that every op's Triton kernels share, as jit helpers.

    to_acc(x, FP64)           x in the accumulation type (float32, or float64 for FP64)
    scalar_arg(hi, lo, FP64)  a Python float passed as two fp32 halves, restored
    softplus_pair(x)          (softplus(x), softplus(-x)) from one exp and one log
    sigmoid_pair(x)           (sigmoid(x), sigmoid(x) - 1) from one exp
    online_lse_step(m, s, x)  one chunk of an online log-sum-exp over axis 1
    sub_max(x, m)             x - max, at the limit for +inf logits
    add_at / read_at          a scalar added into / read from a register vector's slot
    lse_merge(ma, sa, mb, sb) two partial log-sum-exps (max, sum) merged into one
    tile_lse(x, AXIS)         a tile's partial log-sum-exp along one axis

    softplus(x) = max(x, 0) + log1p(exp(-|x|))

Triton's exp / log are the GPU's (ex2 / lg2-based, under 2 ulp in float32);
csrc/common/fast_math.h holds the C++ twins, with its own exp / log for CPU vectors.
"""

import triton
import triton.language as tl


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
def sub_max(x, m):
    """x - m for a running max m of x, taken at the limit where IEEE gives inf - inf = NaN:
    with m = +inf, 0 for the +inf entries (each weighs exp(0) = 1: the softmax is uniform
    over them) and -inf for the others; with m = -inf (nothing but -inf so far) -inf, so
    they weigh 0. For finite m it is x - m, bit for bit; a NaN stays NaN."""
    inf: tl.constexpr = float("inf")
    return tl.where(m == inf, tl.where(x == m, 0.0, -inf), tl.where(m == -inf, -inf, x - m))


@triton.jit
def online_lse_step(m_run, s_run, x):
    """One chunk of an online log-sum-exp over axis 1: (max, sum exp(x - max)) so far,
    from (m_run, s_run) = (-inf, 0) before the first chunk. LSE = m + log(s); with +inf
    logits, m = +inf and s counts them (see sub_max)."""
    m_new = tl.maximum(m_run, tl.max(x, axis=1))
    s_new = s_run * tl.exp(sub_max(m_run, m_new)) + tl.sum(tl.exp(sub_max(x, m_new[:, None])), axis=1)
    return m_new, s_new


@triton.jit
def add_at(vec, idx, i, value):
    """vec + value at slot i (idx = arange over vec): a scalar added into a register vector
    (a tensor in registers cannot be indexed)."""
    return vec + tl.where(idx == i, value, 0.0)


@triton.jit
def read_at(vec, idx, i):
    """vec[i] of a register vector."""
    return tl.sum(tl.where(idx == i, vec, 0.0), axis=0)


@triton.jit
def lse_merge(m_a, s_a, m_b, s_b):
    """Two partial log-sum-exps (max, sum exp(x - max)) of disjoint sets merged into one:
    (m, s_a exp(m_a - m) + s_b exp(m_b - m)) with m = max(m_a, m_b), each difference
    taken at its limit (sub_max): a (-inf, 0) side adds nothing, and with +inf maxima the
    sum counts the +inf entries, as online_lse_step does."""
    m = tl.maximum(m_a, m_b)
    return m, s_a * tl.exp(sub_max(m_a, m)) + s_b * tl.exp(sub_max(m_b, m))


@triton.jit
def tile_lse(x, AXIS: tl.constexpr):
    """The partial log-sum-exp (max, sum exp(x - max)) of a tile along AXIS (see sub_max
    for the limits): merge it into a running one with lse_merge."""
    m = tl.max(x, axis=AXIS)
    return m, tl.sum(tl.exp(sub_max(x, tl.expand_dims(m, AXIS))), axis=AXIS)
