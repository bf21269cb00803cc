"""critic_bound's per-tile math, once, as Triton jit helpers for forward.py and backward.py.

A tile of scores is S = scale * A B^T + bias for a block of rows of A against a block of
rows of B (A = x, B = y in the forward and in the dx pass; A = y, B = x in the dy pass,
which works on S^T), with the dot products accumulated in float32 (float64 for float64
inputs) over d in ``BLOCK_K`` chunks. The gradient G = dL/dS of a tile
(fastmi/critic/ops.py), with g_k the upstream grad of partial k:

    pos_sum       g on P                               row_lse_sum   g exp(S - row_lse[i])
    col_lse_sum   g exp(S - col_lse[j])                neg_lse       g exp(S - neg_lse) on Neg
    pos_softplus  g (sigmoid(S) - 1) on P              neg_softplus  g sigmoid(S) on Neg
    neg_lse_clip  g exp(clamp(S, -tau, tau) - neg_lse_clip) on Neg where -tau <= S <= tau

(-sigmoid(-S) = sigmoid(S) - 1 exactly, from sigmoid_pair). A negative's terms are
selected with where(), never multiplied by a 0/1 mask, so that an overflowing positive
cannot turn a negative's gradient into inf * 0 = NaN (as fastmi/critic/tiled.py).
"""

import triton
import triton.language as tl

from ..common.numerics import sigmoid_pair, to_acc
from . import config

# where each partial lives in the partials vector (bounds.PARTIALS order; jit code may read
# a global only when it is a constexpr)
POS_SUM = tl.constexpr(config.POS_SUM)
ROW_LSE_SUM = tl.constexpr(config.ROW_LSE_SUM)
COL_LSE_SUM = tl.constexpr(config.COL_LSE_SUM)
NEG_LSE = tl.constexpr(config.NEG_LSE)
POS_SOFTPLUS = tl.constexpr(config.POS_SOFTPLUS)
NEG_SOFTPLUS = tl.constexpr(config.NEG_SOFTPLUS)
NEG_LSE_CLIP = tl.constexpr(config.NEG_LSE_CLIP)
CORRECT = tl.constexpr(config.CORRECT)
N_PARTIALS = tl.constexpr(config.N_PARTIALS)


@triton.jit
def dot_tile(a_ptr, b_ptr, a_idx, b_idx, a_ok, b_ok, DIM: tl.constexpr, BLOCK_A: tl.constexpr,
             BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, FP64: tl.constexpr, PRECISION: tl.constexpr):
    """A[a_idx] B[b_idx]^T, [BLOCK_A, BLOCK_B], accumulated over d in BLOCK_K chunks (rows
    outside a_ok / b_ok and d past DIM read as 0). DIM is a constexpr: the loop has a
    fixed trip count, which triton software-pipelines, and masks vanish when BLOCK_K
    divides d."""
    if FP64:
        acc = tl.zeros([BLOCK_A, BLOCK_B], tl.float64)
    else:
        acc = tl.zeros([BLOCK_A, BLOCK_B], tl.float32)
    a_rows = a_ptr + a_idx.to(tl.int64)[:, None] * DIM   # B x d may pass 2^31
    b_rows = b_ptr + b_idx.to(tl.int64)[:, None] * DIM
    for k in range(0, DIM, BLOCK_K):
        kk = k + tl.arange(0, BLOCK_K)
        k_ok = kk < DIM
        a = tl.load(a_rows + kk[None, :], mask=a_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_rows + kk[None, :], mask=b_ok[:, None] & k_ok[None, :], other=0.0)
        if FP64:
            acc = tl.dot(a, tl.trans(b), acc, input_precision=PRECISION, out_dtype=tl.float64)
        else:
            acc = tl.dot(a, tl.trans(b), acc, input_precision=PRECISION)
    return acc


@triton.jit
def load_scale_bias(scale_ptr, bias_ptr, has_bias, FP64: tl.constexpr):
    """(scale, bias) from their 0-d device tensors (no host read); bias is 0 when
    ``has_bias`` is 0, and bias_ptr then points at the scale (selected away, never used).
    A runtime flag, not a constexpr: a bias costs one scalar load, not a second compile."""
    scale = to_acc(tl.load(scale_ptr), FP64)
    bias = tl.where(has_bias != 0, to_acc(tl.load(bias_ptr), FP64), 0.0)
    return scale, bias


@triton.jit
def score_grad(s, is_pos, valid, row_lse, col_lse, g_pos_sum, g_row, g_col, g_neg_lse, neg_lse, g_pos_sp,
               g_neg_sp, g_clip, neg_lse_clip, clip,
               G_POS_SUM: tl.constexpr, G_ROW: tl.constexpr, G_COL: tl.constexpr, G_NEG_LSE: tl.constexpr,
               G_POS_SP: tl.constexpr, G_NEG_SP: tl.constexpr, G_CLIP: tl.constexpr):
    """G = dL/dS of a tile (module docstring), 0 outside ``valid``. ``row_lse`` and
    ``col_lse`` come broadcast to the tile; the g_* are the upstream grads (used only
    where their G_* flag is set)."""
    grad = tl.zeros_like(s)
    if G_ROW:
        grad += tl.exp(s - row_lse) * g_row
    if G_COL:
        grad += tl.exp(s - col_lse) * g_col
    if G_NEG_SP or G_POS_SP:
        sig, sig_minus_1 = sigmoid_pair(s)
    if G_NEG_LSE or G_NEG_SP or G_CLIP:
        negative = tl.zeros_like(s)
        if G_NEG_LSE:
            negative += tl.exp(s - neg_lse) * g_neg_lse
        if G_NEG_SP:
            negative += sig * g_neg_sp
        if G_CLIP:
            inside = (s >= -clip) & (s <= clip)  # where clamp passes the gradient, as torch's does
            clipped = tl.minimum(tl.maximum(s, -clip), clip)
            negative += tl.where(inside, tl.exp(clipped - neg_lse_clip), 0.0) * g_clip
        grad += tl.where(is_pos, 0.0, negative)
    if G_POS_SUM or G_POS_SP:
        on_pair = tl.zeros_like(s)
        if G_POS_SUM:
            on_pair += g_pos_sum
        if G_POS_SP:
            on_pair += sig_minus_1 * g_pos_sp
        grad += tl.where(is_pos, on_pair, 0.0)
    return tl.where(valid, grad, 0.0)
