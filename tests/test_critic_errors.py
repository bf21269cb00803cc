"""Bad input to critic_bound gets a clear error naming the argument, what was expected
and what was given."""

import re

import pytest
import torch
import torch.distributed as dist

import fastmi
from critic_helpers import evaluate, random_pair

BACKENDS = ["reference", "tiled"]


def call(x, y, backend="reference", **kw):
    return fastmi.critic_bound(x, y, backend=backend, **kw)


@pytest.fixture
def pair():
    return random_pair(8, 8, 4, seed=1)


def raises(error, message):
    return pytest.raises(error, match=re.escape(f"critic_bound: {message}"))


def test_the_issue_example():
    x, y = random_pair(64, 64, 128, seed=2)
    with raises(ValueError, "y must have shape [N, 128] with N >= B = 64, got (32, 128)"):
        call(x, y[:32])


@pytest.mark.parametrize("backend", BACKENDS)
def test_shapes(pair, backend):
    x, y = pair
    with raises(ValueError, "x must have shape [B, d] with d >= 1, got (8,)"):
        call(x[:, 0], y, backend)
    with raises(ValueError, "x must have shape [B, d] with d >= 1, got (8, 0)"):
        call(x[:, :0], y, backend)
    with raises(ValueError, "x is an empty batch, shape (0, 4); expected B >= 1"):
        call(x[:0], y, backend)
    with raises(ValueError, "y must have shape [N, 4] with N >= B = 8, got (8, 3)"):
        call(x, y[:, :3], backend)
    with raises(ValueError, "y must have shape [N, 4] with N >= B = 8, got (7, 4)"):
        call(x, y[:7], backend)
    with raises(ValueError, "y must have shape [N, 4] with N >= B = 8, got (32,)"):
        call(x, y.flatten(), backend)
    with raises(ValueError, "y must have shape [N, 4] with N >= 2 (every estimator needs a negative pair), "
                            "got (1, 4)"):
        call(x[:1], y[:1], backend)


def test_types_and_dtypes(pair):
    x, y = pair
    with raises(TypeError, "x must be a tensor, got list"):
        call(x.tolist(), y)
    with raises(TypeError, "y must be float32, bfloat16, float16 or float64, got torch.int64"):
        call(x, y.long())
    with raises(TypeError, "x must be float32, bfloat16, float16 or float64, got torch.complex64"):
        call(x.to(torch.complex64), y)


def test_offset(pair):
    x, y = pair
    wide = random_pair(8, 10, 4, seed=3).y
    with raises(ValueError, "offset must lie in [0, N - B] = [0, 2] (row i's positive is y[i + offset]), got 3"):
        call(x, wide, offset=3)
    with raises(ValueError, "offset must be >= 0 (row i's positive is y[i + offset]), got -1"):
        call(x, wide, offset=-1)
    with raises(TypeError, "offset must be an int, got float 1.0"):
        call(x, wide, offset=1.0)
    call(x, wide, offset=2)  # the last valid one


def test_symmetric(pair):
    x, y = pair
    wide = random_pair(8, 10, 4, seed=3).y
    with raises(ValueError, "symmetric=True needs N = B (one square batch), got x (8, 4) and y (10, 4)"):
        call(x, wide, symmetric=True)
    with raises(ValueError, "symmetric=True is defined for estimator='infonce' (CLIP's loss) only, "
                            "got estimator='siglip'"):
        call(x, y, symmetric=True, estimator="siglip")
    with raises(TypeError, "symmetric must be a bool, got int 1"):
        call(x, y, symmetric=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_rows_with_normalize(pair, backend):
    x, y = (t.clone() for t in pair)
    x[3] = 0.0
    with raises(ValueError, "normalize=True needs rows of nonzero norm, but x[3] has norm 0"):
        call(x, y, backend, normalize=True)
    call(x, y, backend)  # without normalize a zero row is a fine input
    y[5] = 0.0
    with raises(ValueError, "normalize=True needs rows of nonzero norm, but y[5] has norm 0"):
        call(pair.x, y, backend, normalize=True)


def test_estimator_and_clip(pair):
    x, y = pair
    with raises(ValueError, "estimator must be one of ('infonce', 'nwj', 'dv', 'js', 'smile', 'siglip'), "
                            "got 'mine'"):
        call(x, y, estimator="mine")
    with raises(ValueError, "clip must be a finite positive float (smile's tau), got 0.0"):
        call(x, y, estimator="smile", clip=0.0)
    with raises(ValueError, "clip must be a finite positive float (smile's tau), got nan"):
        call(x, y, estimator="smile", clip=float("nan"))


@pytest.mark.parametrize("value", [0.0, -2.0, float("nan"), float("inf")], ids=str)
def test_scale_values(pair, value):
    x, y = pair
    with raises(ValueError, f"scale must be finite and > 0, got {value!r}"):
        call(x, y, scale=value)
    with raises(ValueError, f"scale must be finite and > 0, got {value!r}"):
        call(x, y, scale=torch.tensor(value, requires_grad=True))


def test_scale_and_bias_types(pair):
    x, y = pair
    with raises(ValueError, "scale must be a float or a 0-d tensor, got a tensor of shape (1,)"):
        call(x, y, scale=torch.ones(1))
    with raises(TypeError, "scale must be a float or a 0-d tensor, got str"):
        call(x, y, scale="10")
    with raises(TypeError, "scale must be a floating tensor, got torch.int64"):
        call(x, y, scale=torch.tensor(3))
    with raises(ValueError, "bias must be finite, got inf"):
        call(x, y, bias=float("inf"))
    with raises(ValueError, "bias must be a float or a 0-d tensor, got a tensor of shape (8,)"):
        call(x, y, bias=torch.zeros(8))


def test_mixed_devices(pair):
    """A second device is 'meta' here: the checks run before any computation."""
    x, y = pair
    with raises(ValueError, "y is on meta but x is on cpu; expected every tensor on one device"):
        call(x, y.to("meta"))
    with raises(ValueError, "scale is on meta but x is on cpu; expected every tensor on one device"):
        call(x, y, scale=torch.tensor(2.0, device="meta"))
    with raises(ValueError, "bias is on meta but x is on cpu; expected every tensor on one device"):
        call(x, y, bias=torch.tensor(2.0, device="meta"))


def test_backend(pair):
    x, y = pair
    with raises(ValueError, "backend must be one of ('auto', 'reference', 'tiled', 'cpu', 'triton'), got 'fast'"):
        call(x, y, backend="fast")
    if "cpu" not in fastmi.critic.available_backends("cpu"):
        with raises(ValueError, "backend 'cpu' cannot serve cpu tensors here: "):
            call(x, y, backend="cpu")


def test_group_needs_torch_distributed(pair):
    x, y = pair
    assert not dist.is_initialized()
    with raises(ValueError, "group= needs an initialized torch.distributed (call "
                            "torch.distributed.init_process_group first)"):
        call(x, y, group=object())


@pytest.fixture
def world_of_one(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield dist.group.WORLD
    dist.destroy_process_group()


def test_group_arguments(pair, world_of_one):
    x, y = pair
    with raises(TypeError, "group must be a torch.distributed ProcessGroup or None, got str"):
        call(x, y, group="world")
    with raises(ValueError, "with group=, y must have the shape of x, [B, d] = [8, 4] (each rank's own pairs), "
                            "got (10, 4)"):
        call(x, random_pair(8, 10, 4).y, group=world_of_one)
    with raises(ValueError, "with group=, the offset is rank * B (set by the group); pass offset=0, got 1"):
        call(x, y, group=world_of_one, offset=1)


@pytest.mark.parametrize("estimator", ["infonce", "dv", "smile"])
def test_a_world_of_one_is_one_process(pair, world_of_one, estimator):
    options = dict(estimator=estimator, symmetric=estimator == "infonce", scale=3.0, bias=0.2)
    alone = evaluate(*pair, **options)
    grouped = evaluate(*pair, group=world_of_one, **options)
    torch.testing.assert_close(grouped.out.loss, alone.out.loss)
    torch.testing.assert_close(grouped.grad_x, alone.grad_x)
    torch.testing.assert_close(grouped.grad_scale, alone.grad_scale)


def test_module_arguments():
    with pytest.raises(ValueError, match=re.escape("CriticBound: init_scale must be finite and > 0, got -1.0")):
        fastmi.CriticBound("infonce", init_scale=-1.0)
    with pytest.raises(ValueError, match=re.escape("critic_bound: estimator must be one of")):
        fastmi.CriticBound("mine")
