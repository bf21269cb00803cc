"""The composite-PyTorch reference: the oracle of the tests and the eager baseline.

It stores the whole score matrix of the row problem (B x N, in the compute dtype) and
reduces it to the partials of fastmi/critic/bounds.py with stock PyTorch ops, so that
autograd derives every gradient, to any order (create_graph=True works):

    S = s (x y^T) + b,   P = the diagonal S[i, i + o],   Neg = S with P masked out
    pos_sum = sum P           row_lse_sum = sum_i logsumexp_j S     col_lse_sum = sum_j logsumexp_i S
    neg_lse = logsumexp(Neg)
    pos_softplus = sum softplus(-P)       neg_softplus = sum softplus(Neg)
    neg_lse_clip = logsumexp(clamp(S, -tau, tau) with P masked out)
    correct = #{i : argmax_j S[i, j] = i + o}

with softplus(z) = max(z, 0) + log1p(exp(-|z|)), exact for every z. Masked entries are
-inf before an exp or a logsumexp (not zeroed after it), so that an overflowing positive
cannot turn a gradient into inf * 0 = NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .bounds import INDEX, Partials
from .inputs import compute_dtype
from .problem import RowProblem


def devices() -> tuple:
    return ("cpu", "cuda")


def is_available():
    return None


def softplus(z: Tensor) -> Tensor:
    """log(1 + e^z) without torch's threshold (F.softplus returns z above 20)."""
    return torch.relu(z) + torch.log1p(torch.exp(-z.abs()))


def scores(x: Tensor, y: Tensor, scale: Tensor, bias) -> Tensor:
    """S = scale * x y^T + bias in the compute dtype (autocast off: the scores are float32)."""
    acc = compute_dtype(x.dtype)
    with torch.autocast(x.device.type, enabled=False):
        s = scale * (x.to(acc) @ y.to(acc).T)
        return s if bias is None else s + bias


def partials(x: Tensor, y: Tensor, scale: Tensor, bias, rows: RowProblem) -> Partials:
    """The partials in ``rows.compute`` of x [B, d] against y [N, d] (module docstring)."""
    want = rows.compute
    s = scores(x, y, scale, bias)
    n_rows, n_cols = s.shape
    offset = rows.offset
    pos = s.diagonal(offset)                                 # S[i, i + o]
    is_pos = torch.zeros(n_rows, n_cols, dtype=torch.bool, device=s.device)
    is_pos.diagonal(offset).fill_(True)
    out = dict.fromkeys(Partials._fields)

    def wanted(name):
        return bool(want >> INDEX[name] & 1)

    with torch.autocast(s.device.type, enabled=False):
        if wanted("pos_sum"):
            out["pos_sum"] = pos.sum()
        if wanted("row_lse_sum"):
            out["row_lse_sum"] = torch.logsumexp(s, dim=1).sum()
        if wanted("col_lse_sum"):
            out["col_lse_sum"] = torch.logsumexp(s, dim=0).sum()
        neg = s.masked_fill(is_pos, -torch.inf)
        if wanted("neg_lse"):
            out["neg_lse"] = torch.logsumexp(neg.flatten(), dim=0)
        if wanted("pos_softplus"):
            out["pos_softplus"] = softplus(-pos).sum()
        if wanted("neg_softplus"):
            out["neg_softplus"] = torch.where(is_pos, 0.0, softplus(s)).sum()
        if wanted("neg_lse_clip"):
            clipped = s.clamp(-rows.clip, rows.clip).masked_fill(is_pos, -torch.inf)
            out["neg_lse_clip"] = torch.logsumexp(clipped.flatten(), dim=0)
        if wanted("correct"):
            with torch.no_grad():
                target = torch.arange(offset, offset + n_rows, device=s.device)
                out["correct"] = (s.argmax(dim=1) == target).sum().to(s.dtype)
    return Partials(**out)
