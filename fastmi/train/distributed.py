"""DistributedDataParallel plumbing: what ``torchrun`` sets up, and the few collective
helpers the trainer needs. A plain ``python -m fastmi.train`` is a world of one and
touches none of it.

``torchrun --nproc_per_node=N -m fastmi.train ...`` sets RANK, WORLD_SIZE and
LOCAL_RANK; each process then joins a process group (nccl on CUDA, gloo on CPU) and
drives one device (``cuda:LOCAL_RANK`` on GPU).
"""

from __future__ import annotations

import contextlib
import os
from typing import NamedTuple, Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


class World(NamedTuple):
    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: Optional[str]) -> torch.device:
    """``name`` ("cpu", "cuda", "cuda:1"), or CUDA when it is available, else CPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device must be cpu or cuda (or cuda:N), got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda (or cuda:N), got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    return device


def resolve_execution(parser, device_name: Optional[str], loss_backend: str) -> torch.device:
    """The device of ``--device`` (see resolve_device), after checking that
    ``--loss-backend`` runs on it; a bad value of either ends in ``parser.error``."""
    from ..infogan.backends import backend_name

    try:
        device = resolve_device(device_name)
    except ValueError as e:
        parser.error(str(e))
    try:
        backend_name(loss_backend, device.type)
    except (ValueError, ImportError) as e:  # ImportError: a backend whose module is not there
        parser.error(f"--loss-backend {loss_backend} cannot run on {device.type} here: {e}")
    return device


def setup(device_name: Optional[str]) -> World:
    """Joins the process group when launched by torchrun (WORLD_SIZE > 1)."""
    device = resolve_device(device_name)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(0, 1, 0, device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(rank, size, local_rank, device)


def teardown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: torch.nn.Module, world: World) -> torch.nn.Module:
    """``module`` in DistributedDataParallel when there are several processes, else as is."""
    if world.size == 1:
        return module
    device_ids = [world.device.index] if world.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def no_gradient_sync(module: torch.nn.Module):
    """DDP's ``no_sync`` for a forward whose parameter gradients are not wanted (D's
    forward in the G step); a no-op for a plain module."""
    return module.no_sync() if isinstance(module, DistributedDataParallel) else contextlib.nullcontext()


def mean_over_ranks(values: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of ``values`` over all processes (``values`` itself in a world of one)."""
    if world.size == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / world.size


def gather_objects(obj, world: World) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if world.size == 1:
        return [obj]
    gathered = [None] * world.size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()
