"""The order in which the trainer visits the data, reproducible and resumable.

Each epoch is a fresh permutation of the N images drawn from ``seed`` and the epoch
number alone, so the order is a pure function of (seed, epoch, position): a resumed
run restores (epoch, position) and sees the very batches an uninterrupted run sees.
Under DistributedDataParallel every rank draws the same permutation and takes every
``world``-th index from ``rank`` on, so the ranks read disjoint shards. The last
incomplete batch of an epoch is dropped (batch norm wants full batches).
"""

from __future__ import annotations

import torch


class BatchOrder:
    """Yields index batches [batch] of an endless sequence of shuffled epochs."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1):
        shard = len(range(rank, n, world))
        if batch < 1 or shard < batch:
            raise ValueError(f"batch size {batch * world} needs at least that many images, "
                             f"the dataset holds {n}")
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self.batches_per_epoch = shard // batch
        self.epoch = 0
        self.position = 0  # batches already taken from this epoch
        self._order = None

    def _epoch_order(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=generator)[self.rank::self.world]

    def next(self) -> torch.Tensor:
        """The indices of the next batch."""
        if self.position == self.batches_per_epoch:
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        if self._order is None:
            self._order = self._epoch_order()
        start = self.position * self.batch
        self.position += 1
        return self._order[start:start + self.batch]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "n": self.n, "batch": self.batch,
                "seed": self.seed, "world": self.world}

    def load_state_dict(self, state: dict) -> None:
        mine = {"n": self.n, "batch": self.batch, "seed": self.seed, "world": self.world}
        saved = {k: state[k] for k in mine}
        if saved != mine:
            raise ValueError(f"the checkpoint's data order {saved} does not match this run's {mine}")
        self.epoch, self.position, self._order = state["epoch"], state["position"], None
