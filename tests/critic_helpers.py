"""Shared helpers of the critic_bound tests (tests/test_critic_*.py): the cases, and the
processes of the distributed tests. Random inputs, the float64 oracle and the tolerances
relative to each tensor's own magnitude live in fastmi/critic/testing.py (the GPU checks
of ``python -m fastmi.validate`` use them too) and are re-exported here.

Every backend is compared with the reference backend evaluated in float64 on the same
(already rounded) inputs: the loss, mi, accuracy, jsd_bound and the gradients of x, y,
scale and bias.
"""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastmi.critic.testing import (TOLERANCES, Pair, Result, assert_close, assert_results_close,  # noqa: F401
                                   evaluate, oracle, random_pair, score_magnitude)

ESTIMATORS = ("infonce", "nwj", "dv", "js", "smile", "siglip")
# Options that cover every estimator and every path of the partials: N > B with an
# offset, a bias, normalize, symmetric, smile's clip active.
CASES = [
    dict(estimator="infonce", scale=2.0),
    dict(estimator="infonce", scale=3.0, rows=6, cols=11, offset=4, bias=0.3),
    dict(estimator="infonce", scale=10.0, symmetric=True, normalize=True),
    dict(estimator="nwj", scale=0.8, rows=5, cols=9, offset=2, bias=-0.4),
    dict(estimator="dv", scale=1.5, rows=6, cols=10, offset=3),
    dict(estimator="js", scale=2.0, bias=0.5),
    dict(estimator="js", scale=4.0, rows=4, cols=7, offset=1, normalize=True),
    dict(estimator="smile", scale=3.0, rows=5, cols=8, offset=3, clip=1.0),
    dict(estimator="smile", scale=2.0, clip=5.0, bias=0.2),
    dict(estimator="siglip", scale=10.0, bias=-10.0, normalize=True, rows=6, cols=12, offset=6),
    dict(estimator="siglip", scale=3.0, bias=1.0),
]


def case_id(case: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in case.items())


def split_case(case: dict) -> tuple:
    """(rows, cols, options for critic_bound) of a CASES entry."""
    options = dict(case)
    rows = options.pop("rows", 6)
    cols = options.pop("cols", rows)
    return rows, cols, options


# ---- several processes ---------------------------------------------------------------------

WORLD = 2


def join_group(rank: int, folder: str) -> None:
    """A worker's first step: join the gloo group of WORLD processes (a FileStore in ``folder``)."""
    torch.set_num_threads(1)  # two processes on a shared machine
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD)


def _rank_main(rank: int, folder: str, worker) -> None:
    join_group(rank, folder)
    torch.save(worker(rank), os.path.join(folder, f"rank{rank}.pt"))
    dist.destroy_process_group()


def run_workers(worker, folder, timeout_s: float = 240) -> list:
    """Runs ``worker(rank)`` (a module-level function) in WORLD spawned processes that have
    joined the gloo group (:func:`join_group`) and returns what each returned, by rank;
    fails the test if one fails or they outlast ``timeout_s`` (a collective that never
    completes)."""
    context = mp.spawn(_rank_main, args=(str(folder), worker), nprocs=WORLD, join=False)
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            pytest.fail(f"the {WORLD} gloo processes did not finish in {timeout_s} s")
    return [torch.load(os.path.join(str(folder), f"rank{rank}.pt"), weights_only=False) for rank in range(WORLD)]
