"""What the trainer logs: running means of the losses and bounds, and ``metrics.jsonl``.

Each line of ``metrics.jsonl`` is one logging step, the means over the steps since the
previous line (``interval`` of them)::

    {"step": 500, "interval": 50, "loss_d": ..., "loss_g": ..., "loss_info": ...,
     "jsd_bound": ..., "mi_categorical": [I(c1;x)], "mi_continuous": [I(c2;x), I(c3;x)],
     "mi_continuous_total": ..., "steps_per_s": ..., "elapsed_s": ...}

plus, at the sample-grid steps, ``"accuracy"``: the clustering accuracy of argmax
Q(c1|x) on the (labelled) training images, a monitor that trains nothing.

Every value is in nats and comes from :func:`fastmi.infogan_loss` of the D step (its
``stats``): ``jsd_bound = log 2 - (BCE_real + BCE_fake) / 2`` and, per code,
``I(c; x) >= H(c) + E log Q(c|x)`` on the generated batch.
"""

from __future__ import annotations

import json
import math
import os
from typing import List, Optional

import torch

from ..infogan.api import infogan_loss
from ..infogan.spec import Codes, LatentSpec

METRICS_NAME = "metrics.jsonl"


def continuous_code_bounds(fake_logits: torch.Tensor, q: torch.Tensor, codes: Codes, spec: LatentSpec,
                           backend: str) -> torch.Tensor:
    """``[I(c_d; x) bound for each continuous code d]``, detached.

    The loss reports the continuous codes' bound summed over the codes; Q factorizes
    over them, so each code's own bound is the loss's bound on a one-code spec over
    that code's columns of q (mu, and logvar when the std is learned). They add up to
    ``stats.mi_continuous``.
    """
    n = spec.continuous
    one = LatentSpec(categorical=(), continuous=1, continuous_prior=spec.continuous_prior, std=spec.std)
    start = sum(spec.categorical) + spec.bernoulli
    bounds = []
    with torch.no_grad():
        for d in range(n):
            columns = [start + d] + ([start + n + d] if spec.learned_std else [])
            stats = infogan_loss(None, fake_logits.detach(), q.detach()[:, columns],
                                 Codes(None, None, codes.continuous[:, d:d + 1]), one, backend=backend).stats
            bounds.append(stats.mi_continuous)
    return torch.stack(bounds) if bounds else q.new_zeros(0)


class RunningMeans:
    """Sums the per-step values on the device (no host sync per step) and hands out
    their means at each logging step."""

    def __init__(self, n_categorical: int, n_continuous: int):
        self.m, self.n = n_categorical, n_continuous
        self.total: Optional[torch.Tensor] = None
        self.count = 0

    def add(self, loss_d, loss_g, loss_info, stats, continuous_bounds) -> None:
        row = torch.cat([torch.stack([loss_d.detach(), loss_g.detach(), loss_info.detach(),
                                      stats.jsd_bound, stats.mi_continuous]).float(),
                         stats.mi_categorical.float(), continuous_bounds.float()])
        self.total = row if self.total is None else self.total + row
        self.count += 1

    def means(self) -> torch.Tensor:
        """The mean row since the last :meth:`reset`."""
        return self.total / self.count

    def record(self, means: List[float]) -> dict:
        """The ``metrics.jsonl`` fields of a mean row (as a list of floats)."""
        loss_d, loss_g, loss_info, jsd, mi_cont = means[:5]
        return {"loss_d": loss_d, "loss_g": loss_g, "loss_info": loss_info, "jsd_bound": jsd,
                "mi_categorical": means[5:5 + self.m], "mi_continuous": means[5 + self.m:],
                "mi_continuous_total": mi_cont}

    def reset(self) -> None:
        self.total, self.count = None, 0


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def append(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({k: _finite_or_none(v) for k, v in record.items()}) + "\n")
        f.flush()


def read(path: str) -> List[dict]:
    """The records of a ``metrics.jsonl`` (none when it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def truncate(path: str, step: int) -> None:
    """Drops the records after ``step``: what an interrupted run logged past its last
    checkpoint, which the resumed run logs again."""
    records = [r for r in read(path) if r["step"] <= step]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(tmp, path)


def progress_text(record: dict) -> str:
    """The tqdm postfix: the live bounds, e.g. ``I(c1)=2.21 I(c2)=-0.31 I(c3)=-0.40 JSD=0.12``."""
    parts = [f"I(c{k + 1})={v:.2f}" for k, v in enumerate(record["mi_categorical"])]
    first = len(record["mi_categorical"]) + 1
    parts += [f"I(c{first + d})={v:.2f}" for d, v in enumerate(record["mi_continuous"])]
    parts.append(f"JSD={record['jsd_bound']:.2f}")
    return " ".join(parts)
