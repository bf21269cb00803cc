"""The CPU backward's gradient pool (csrc/common/cpu/grad_pool.h): a freed gradient buffer is
handed out again, a buffer still in use never is, and the cache keeps its bounds."""

import pytest
import torch

import fastmi
from fastmi.runtime import cpu_extension as cpu
from helpers import evaluate, random_case, random_upstream

SPEC = fastmi.LatentSpec(categorical=(10,), continuous=2)
BATCH = 4096                 # grad_q: 4096 x 14 floats = 224 KiB, pooled; real/fake: 16 KiB, not
Q_BYTES = BATCH * SPEC.q_width * 4
MAX_BLOCKS = 8


@pytest.fixture(autouse=True)
def empty_pool():
    cpu.extension()
    cpu.empty_cache()
    yield
    cpu.extension().set_grad_pool(True)
    cpu.empty_cache()


def _grads(case):
    """(grad real, grad fake, grad q): the backward's own buffers, as the leaves' .grad."""
    return tuple(evaluate(case, SPEC, "cpu", random_upstream(0)).grads.values())


def test_a_freed_gradient_buffer_is_reused_and_fully_rewritten():
    case = random_case(SPEC, BATCH, seed=11)
    first = _grads(random_case(SPEC, BATCH, seed=10))   # other values in the buffer
    address = first[2].data_ptr()
    del first
    assert cpu.cached_bytes() == Q_BYTES
    second = _grads(case)
    assert second[2].data_ptr() == address
    assert cpu.cached_bytes() == 0
    cpu.extension().set_grad_pool(False)
    fresh = _grads(case)
    assert fresh[2].data_ptr() != address
    for got, want in zip(second, fresh):
        assert torch.equal(got, want)


def test_a_buffer_in_use_is_never_handed_out_or_written():
    first = _grads(random_case(SPEC, BATCH, seed=12))
    view = first[2][1:]                     # a view keeps the storage alive
    kept = view.clone()
    del first
    assert cpu.cached_bytes() == 0
    second = _grads(random_case(SPEC, BATCH, seed=13))
    assert second[2].untyped_storage().data_ptr() != view.untyped_storage().data_ptr()
    assert torch.equal(view, kept)


def test_the_cache_keeps_the_newest_blocks_within_its_bound():
    sizes = [BATCH + 8 * i for i in range(MAX_BLOCKS + 4)]   # all distinct, all pooled
    alive = [_grads(random_case(SPEC, rows, seed=rows)) for rows in sizes]
    assert cpu.cached_bytes() == 0
    while alive:
        del alive[0]                                          # free them oldest first
    newest = sizes[-MAX_BLOCKS:]
    assert cpu.cached_bytes() == sum(rows * SPEC.q_width * 4 for rows in newest)
    cpu.empty_cache()
    assert cpu.cached_bytes() == 0


def test_switched_off_the_buffers_come_from_torch():
    cpu.extension().set_grad_pool(False)
    grads = _grads(random_case(SPEC, BATCH, seed=14))
    del grads
    assert cpu.cached_bytes() == 0
