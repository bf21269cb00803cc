"""Checkpoints: written atomically, complete enough to resume a run bit for bit.

A checkpoint holds the config, the step, G's and D/Q's weights and batch-norm buffers,
both Adam states, the data order, and every random state the run draws from: the
latent-code generator of each rank and the global torch (CPU and CUDA), numpy and
python states. It is written to a temporary file in the same folder and moved over
the old one with ``os.replace``, so a crash mid-write leaves the previous checkpoint
whole.
"""

from __future__ import annotations

import os
import random
import tempfile

import numpy as np
import torch

from .config import TrainConfig
from .models import build_models

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 1


def save_atomic(obj, path: str) -> None:
    """``torch.save(obj, path)`` through a temporary file and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def rng_state(code_generator: torch.Generator) -> dict:
    """Every random state this process draws from."""
    return {
        "codes": code_generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def restore_rng_state(state: dict, code_generator: torch.Generator) -> None:
    code_generator.set_state(state["codes"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def load(path: str) -> dict:
    """The checkpoint at ``path``, on the CPU; a clear error when it is not one."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        # weights_only=False: the checkpoint holds numpy and python RNG states
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for a damaged file
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fastmi.train checkpoint (format {FORMAT})")
    return checkpoint


def load_models(path: str, device="cpu"):
    """``(config, generator, discriminator_q, step)`` from a checkpoint, in eval mode."""
    checkpoint = load(path)
    config = TrainConfig.from_dict(checkpoint["config"])
    generator, discriminator = build_models(config.widths, config.spec, config.noise_dim)
    generator.load_state_dict(checkpoint["generator"])
    discriminator.load_state_dict(checkpoint["discriminator"])
    return config, generator.to(device).eval(), discriminator.to(device).eval(), checkpoint["step"]
