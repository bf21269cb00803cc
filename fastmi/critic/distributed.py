"""``critic_bound(..., group=pg)``: OpenCLIP's ``local_loss + gather_with_grad`` mode.

On each of W ranks with local x, y [B, d] (the same B on every rank):

1. gather y (symmetric: and x) from every rank, with autograd: all N = W B columns;
2. solve the local row problem, x rows against all y at offset = rank * B (symmetric:
   also y rows against all x, whose row LSEs are the column LSEs of the local columns);
3. combine: every partial but the negatives' log-sum-exps is a sum over this rank's rows
   or pairs, and the means of bounds.py divide it by this rank's B and B N - B, so the
   local losses average to the global one; ``neg_lse`` and ``neg_lse_clip`` (the
   log-mean-exps of nwj, dv, smile, and js's and siglip's mi) are gathered, with autograd,
   and log-sum-exp'd over the W ranks, and divide by the W (B N - B) negatives of all
   ranks. (For nwj's mean of exp(S - 1) this is not needed, the means of the ranks'
   means would do; one rule keeps the formulas of bounds.py the same for every term.)

The gather's backward sums each rank's gradients over the ranks, so a rank's gradient of
its local x is W times the single-process gradient of those rows (DDP's averaging of
parameter gradients then gives the single-process gradient), and the mean over ranks of
the scale and bias gradients is the single-process one. torch.distributed does the
communication: the functional all_gather with autograd where this torch has it, else
torch.distributed.nn.functional.all_gather (deprecated by torch 2.13 in its favour).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from .bounds import Counts, Partials
from .inputs import CriticInputs
from .problem import CriticProblem

try:
    from torch.distributed._functional_collectives import all_gather_single_autograd, wait_tensor
except ImportError:  # older torch: the autograd all_gather of torch.distributed.nn
    all_gather_single_autograd = wait_tensor = None


def gather_rows(t: Tensor, group) -> Tensor:
    """Every rank's ``t`` concatenated along dim 0, in rank order, with autograd."""
    if all_gather_single_autograd is not None:
        return wait_tensor(all_gather_single_autograd(t.contiguous(), 0, group))
    import torch.distributed.nn.functional as dist_nn

    return torch.cat(dist_nn.all_gather(t, group=group))


def _global_lse(value: Tensor, group) -> Tensor:
    return torch.logsumexp(gather_rows(value.reshape(1), group), dim=0)


def group_partials(partials_fn, inputs: CriticInputs, problem: CriticProblem, group) -> tuple:
    """``(partials, counts)`` of this rank for bounds.finish (module docstring)."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    x, y, scale, bias = inputs
    n_rows = x.shape[0]
    offset = rank * n_rows
    all_y = gather_rows(y, group)
    partials: Partials = partials_fn(x, all_y, scale, bias, problem.group_rows._replace(offset=offset))
    if problem.group_columns is not None:
        all_x = gather_rows(x, group)
        columns = partials_fn(y, all_x, scale, bias, problem.group_columns._replace(offset=offset))
        partials = partials._replace(col_lse_sum=columns.row_lse_sum)
    if partials.neg_lse is not None:
        partials = partials._replace(neg_lse=_global_lse(partials.neg_lse, group))
    if partials.neg_lse_clip is not None:
        partials = partials._replace(neg_lse_clip=_global_lse(partials.neg_lse_clip, group))
    n_cols = world * n_rows
    neg_pairs = n_rows * n_cols - n_rows
    return partials, Counts(n_rows, n_cols, neg_pairs, world * neg_pairs)
