"""critic_bound(..., group=pg) on two gloo processes (CPU) against one process on the
concatenated batch, every estimator, symmetric, bias and normalize, on the reference,
tiled and fused cpu backends (float64):

- the mean of the local losses (and mi, accuracy) is the single-process value;
- each rank's gradient of its local x and y is W times the single-process gradient of
  those rows (the gather's backward sums over ranks);
- the mean over ranks of the scale and bias gradients is the single-process gradient.

One spawn of two processes runs every case (the start of a process dominates), and the
parent compares what they returned."""


import pytest
import torch
import torch.distributed as dist

from critic_helpers import ESTIMATORS, WORLD, assert_close, evaluate, random_pair, run_workers

ROWS = 5          # per rank
DIM = 4
F64 = torch.float64
CASES = [dict(estimator=e) for e in ESTIMATORS] + [
    dict(estimator=e, bias=-0.7, normalize=True, scale=4.0) for e in ESTIMATORS] + [
    dict(estimator="infonce", symmetric=True),
    dict(estimator="infonce", symmetric=True, normalize=True, bias=0.3, scale=10.0),
    dict(estimator="smile", clip=0.5, scale=3.0),
]
BACKENDS = ("reference", "tiled", "cpu")


def case_id(index):
    case = CASES[index]
    return f"{index}-" + "-".join(f"{k}={v}" for k, v in case.items())


def full_batch(index):
    """The concatenated batch of case ``index`` (every process draws the same)."""
    return random_pair(WORLD * ROWS, WORLD * ROWS, DIM, dtype=F64, seed=100 + index)


def _worker(rank):
    results = {}
    rows = slice(rank * ROWS, (rank + 1) * ROWS)
    for backend in BACKENDS:
        for index, case in enumerate(CASES):
            x, y = full_batch(index)
            got = evaluate(x[rows], y[rows], backend=backend, group=dist.group.WORLD, **case)
            results[backend, index] = got._replace(out=tuple(t.detach() for t in got.out))
    return results


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gloo")
    return run_workers(_worker, folder)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("index", range(len(CASES)), ids=case_id)
def test_two_processes_match_one(ranks, backend, index):
    case = CASES[index]
    x, y = full_batch(index)
    single = evaluate(x, y, backend="reference", **case)
    local = [r[backend, index] for r in ranks]
    for k, name in enumerate(("loss", "mi", "accuracy", "jsd_bound")):
        mean = torch.stack([r.out[k] for r in local]).mean()
        assert_close(mean, getattr(single.out, name), name)
    for rank, r in enumerate(local):
        rows = slice(rank * ROWS, (rank + 1) * ROWS)
        assert_close(r.grad_x, WORLD * single.grad_x[rows], f"rank {rank} grad_x")
        assert_close(r.grad_y, WORLD * single.grad_y[rows], f"rank {rank} grad_y")
    assert_close(torch.stack([r.grad_scale for r in local]).mean(), single.grad_scale, "grad_scale", floor=1.0)
    if single.grad_bias is not None:
        assert_close(torch.stack([r.grad_bias for r in local]).mean(), single.grad_bias, "grad_bias", floor=1.0)


def test_local_losses_differ(ranks):
    """The check above is not vacuous: each rank's loss is its own rows' loss."""
    losses = [r["reference", 0].out[0] for r in ranks]
    assert abs(float(losses[0] - losses[1])) > 1e-3
