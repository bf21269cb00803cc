"""The ``"tiled"`` backend: the fused ops of fastmi/critic/ops.py in pure PyTorch, one
block of rows at a time, on any device.

Memory: O(B d + N d) for the inputs and gradients, plus a few [t, N] tiles of scores at
once, where t = max(1, TILE_SCORES // N) rows (2^21 scores, 8 MiB of float32, per tile);
the B x N score matrix is never stored. Time: the same GEMMs as the reference, one per
tile each way, and elementwise passes over each tile. It is the executable specification
that the fused C++ and Triton kernels are checked against, and the backend to use where
the reference's B x N matrix (and its autograd copies) does not fit.

Forward, for each row tile [r0, r1) with scores S_t = s (x_t y^T) + b:

    pos_sum      += sum diag S_t[:, r0 + o : r1 + o]         (the positives of the tile)
    row_lse[r0:r1] = logsumexp_j S_t                          row_lse_sum += its sum
    col_lse       = logaddexp(col_lse, logsumexp_i S_t)       (merged across tiles)
    correct      += #{argmax_j S_t[i, :] = i + o}
    pos_softplus += sum softplus(-positives)
    then the positives are set to -inf, and over the negatives that remain:
    neg_lse       = logaddexp(neg_lse, logsumexp S_t)         neg_softplus += sum softplus(S_t)
    neg_lse_clip: the same LSE merge of clamp(S_t, -tau, tau)  (softplus(-inf) = 0)

Backward, for each row tile, recomputing S_t (the same expression, so the same values):
G_t = the sum of ops.py's terms; dx[r0:r1] = s G_t y; dy += s G_t^T x_t;
ds += sum G_t * (x_t y^T); db += sum G_t. Tiles run in order, so the result is
deterministic (no atomics, no thread-dependent order).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .bounds import INDEX, PARTIALS
from .inputs import compute_dtype
from .ops import define_critic_ops, lse_shapes
from .reference import softplus

TILE_SCORES = 1 << 21
NEGATIVE_PARTIALS = ("neg_lse", "neg_softplus", "neg_lse_clip")


def devices() -> tuple:
    return ("cpu", "cuda")


def is_available():
    return None


def tile_rows(n_rows: int, n_cols: int, tile_scores=None) -> int:
    """Rows per tile: as many as keep a tile within ``tile_scores`` scores (TILE_SCORES)."""
    return max(1, min(n_rows, (tile_scores or TILE_SCORES) // n_cols))


def _bits(mask: int):
    return lambda name: bool(mask >> INDEX[name] & 1)


def _tile_scores(x_tile: Tensor, y: Tensor, scale: Tensor, bias):
    dots = x_tile @ y.T
    scores = dots * scale
    return dots, (scores if bias is None else scores + bias)


def forward(x: Tensor, y: Tensor, scale: Tensor, bias, offset: int, compute: int, differentiate: int,
            clip: float, *, tile_scores=None):
    """``(partials [8], row_lse, col_lse)`` of ops.py, tile by tile (module docstring)."""
    acc = compute_dtype(x.dtype)
    n_rows, n_cols = x.shape[0], y.shape[0]
    want, keep = _bits(compute), _bits(differentiate)
    row_shape, col_shape = lse_shapes(n_rows, n_cols, differentiate)
    any_negative = any(want(name) for name in NEGATIVE_PARTIALS)
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        xa, ya = x.to(acc), y.to(acc)
        zero = scale.new_zeros(())
        sums = dict.fromkeys(("pos_sum", "row_lse_sum", "pos_softplus", "neg_softplus", "correct"), zero)
        neg_lse = neg_lse_clip = scale.new_full((), -math.inf)
        row_lse = scale.new_empty(row_shape)
        col_lse = scale.new_full((n_cols,) if want("col_lse_sum") else (0,), -math.inf)
        step = tile_rows(n_rows, n_cols, tile_scores)
        for r0 in range(0, n_rows, step):
            r1 = min(n_rows, r0 + step)
            s = _tile_scores(xa[r0:r1], ya, scale, bias)[1]
            positives = s[:, r0 + offset:r1 + offset].diagonal()   # a view into s
            if want("pos_sum"):
                sums["pos_sum"] = sums["pos_sum"] + positives.sum()
            if want("pos_softplus"):
                sums["pos_softplus"] = sums["pos_softplus"] + softplus(-positives).sum()
            if want("correct"):
                target = torch.arange(r0 + offset, r1 + offset, device=s.device)
                sums["correct"] = sums["correct"] + (s.argmax(dim=1) == target).sum()
            if want("row_lse_sum"):
                lse = torch.logsumexp(s, dim=1)
                sums["row_lse_sum"] = sums["row_lse_sum"] + lse.sum()
                if keep("row_lse_sum"):
                    row_lse[r0:r1] = lse
            if want("col_lse_sum"):
                col_lse = torch.logaddexp(col_lse, torch.logsumexp(s, dim=0))
            if not any_negative:
                continue
            if want("neg_lse_clip"):
                clipped = s.clamp(-clip, clip)
                clipped[:, r0 + offset:r1 + offset].diagonal().fill_(-math.inf)
                neg_lse_clip = torch.logaddexp(neg_lse_clip, torch.logsumexp(clipped.flatten(), dim=0))
            positives.fill_(-math.inf)  # s now holds the negatives only
            if want("neg_lse"):
                neg_lse = torch.logaddexp(neg_lse, torch.logsumexp(s.flatten(), dim=0))
            if want("neg_softplus"):
                sums["neg_softplus"] = sums["neg_softplus"] + softplus(s).sum()
        values = dict(sums, neg_lse=neg_lse, neg_lse_clip=neg_lse_clip,
                      col_lse_sum=col_lse.sum() if want("col_lse_sum") else zero)
        partials = torch.stack([values[name].to(acc) if want(name) else zero for name in PARTIALS])
        if not keep("col_lse_sum"):
            col_lse = scale.new_empty(col_shape)
    return partials, row_lse, col_lse


def backward(grad_partials: Tensor, x: Tensor, y: Tensor, scale: Tensor, bias, partials: Tensor,
             row_lse: Tensor, col_lse: Tensor, offset: int, compute: int, differentiate: int, clip: float,
             *, tile_scores=None):
    """``(grad_x, grad_y, grad_scale, grad_bias)`` of ops.py, tile by tile (module docstring)."""
    acc = compute_dtype(x.dtype)
    n_rows, n_cols = x.shape[0], y.shape[0]
    keep = _bits(differentiate)
    g = dict(zip(PARTIALS, grad_partials.to(acc).unbind()))
    saved = dict(zip(PARTIALS, partials.unbind()))
    any_negative = any(keep(name) for name in NEGATIVE_PARTIALS)
    any_positive = keep("pos_sum") or keep("pos_softplus")
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        xa, ya = x.to(acc), y.to(acc)
        grad_x = torch.empty_like(xa)
        grad_y = torch.zeros_like(ya)
        grad_scale = scale.new_zeros(())
        grad_bias = scale.new_zeros(())
        step = tile_rows(n_rows, n_cols, tile_scores)
        for r0 in range(0, n_rows, step):
            r1 = min(n_rows, r0 + step)
            x_tile = xa[r0:r1]
            dots, s = _tile_scores(x_tile, ya, scale, bias)
            grad = torch.zeros_like(s)
            if keep("row_lse_sum"):
                grad += torch.exp(s - row_lse[r0:r1, None]) * g["row_lse_sum"]
            if keep("col_lse_sum"):
                grad += torch.exp(s - col_lse[None, :]) * g["col_lse_sum"]
            diagonal = slice(r0 + offset, r1 + offset)
            if any_negative:
                negative = torch.zeros_like(s)
                if keep("neg_lse"):
                    negative += torch.exp(s - saved["neg_lse"]) * g["neg_lse"]
                if keep("neg_softplus"):
                    negative += torch.sigmoid(s) * g["neg_softplus"]
                if keep("neg_lse_clip"):
                    inside = (s >= -clip) & (s <= clip)  # where clamp passes the gradient, as torch's does
                    weight = torch.exp(s.clamp(-clip, clip) - saved["neg_lse_clip"])
                    negative += torch.where(inside, weight, 0.0) * g["neg_lse_clip"]
                negative[:, diagonal].diagonal().fill_(0.0)  # overwrite, not multiply: an inf there stays out
                grad += negative
            if any_positive:
                positives = s[:, diagonal].diagonal()
                on_pair = torch.zeros_like(positives)
                if keep("pos_sum"):
                    on_pair += g["pos_sum"]
                if keep("pos_softplus"):
                    on_pair -= torch.sigmoid(-positives) * g["pos_softplus"]
                grad[:, diagonal].diagonal().add_(on_pair)
            torch.mm(grad, ya, out=grad_x[r0:r1])
            grad_y.addmm_(grad.T, x_tile)
            grad_scale += (grad * dots).sum()
            grad_bias += grad.sum()
        grad_x *= scale
        grad_y *= scale
    return (grad_x.to(x.dtype), grad_y.to(y.dtype), grad_scale,
            grad_bias if bias is not None else scale.new_empty((0,)))


ops = define_critic_ops("tiled", forward, backward)
partials = ops.partials
