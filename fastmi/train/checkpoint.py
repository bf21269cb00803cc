"""Checkpoints: written atomically, complete enough to resume a run bit for bit.

A checkpoint holds the config, the step, G's and D/Q's weights and batch-norm buffers,
both Adam states, the data order, and every random state the run draws from: the
latent-code generator of each rank and the global torch (CPU and CUDA), numpy and
python states. It is written to a temporary file in the same folder and moved over
the old one with ``os.replace``, so a crash mid-write leaves the previous checkpoint
whole (and a stray ``.tmp-*.pt``, which the next run in the folder removes:
:func:`remove_stale_temporaries`).

On disk the state is wrapped with its SHA-256: the file is ``torch.save`` of
``{"container": CONTAINER, "sha256": hex digest, "payload": the bytes of torch.save(state)
as a uint8 tensor}``. torch's zip reader checks no CRC, so without it a flipped byte in a
weight loads silently as a wrong weight; :func:`load` recomputes the digest and refuses
a file whose payload does not match. Checkpoints of format 1 (written before the
checksum, the same state unwrapped) still load, unverified.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import random
import tempfile

import numpy as np
import torch

from .config import TrainConfig
from .models import build_models

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 2  # the state's own layout; format 1 is the same state, stored without a checksum
LEGACY_FORMAT = 1
CONTAINER = "fastmi.train checkpoint + sha256"
TEMPORARY_PATTERN = ".tmp-*.pt"  # what save_atomic's temporary files are named


def save_atomic(obj, path: str) -> None:
    """``obj`` wrapped with its SHA-256 (see the module doc), written to ``path``
    through a temporary file and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # fails here, before any file exists, on an object that cannot be saved
    payload = buffer.getbuffer()
    container = {"container": CONTAINER, "sha256": hashlib.sha256(payload).hexdigest(),
                 "payload": torch.frombuffer(payload, dtype=torch.uint8)}
    fd, tmp = tempfile.mkstemp(prefix=TEMPORARY_PATTERN.split("*")[0], suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(container, f)
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


def remove_stale_temporaries(folder: str) -> list:
    """Deletes the ``.tmp-*.pt`` files in ``folder``: what a checkpoint write killed
    between its temporary file and ``os.replace`` (SIGKILL, power loss) leaves behind.
    Call it only from the one process that owns the folder's run. Returns their paths."""
    stale = sorted(glob.glob(os.path.join(glob.escape(folder), TEMPORARY_PATTERN)))
    for path in stale:
        os.unlink(path)
    return stale


def _torch_load(source, path: str, *, weights_only: bool):
    try:
        return torch.load(source, map_location="cpu", weights_only=weights_only)
    except Exception as e:  # torch raises several types for a damaged file
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None


def load(path: str) -> dict:
    """The checkpoint at ``path``, on the CPU; a clear ValueError when it is not one,
    or when its contents do not match the checksum stored with them."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        # the wrapper holds a string and a uint8 tensor: the safe loader reads it
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        outer = None  # damaged, or a format-1 checkpoint (numpy states need the full unpickler)
    if isinstance(outer, dict) and outer.get("container") == CONTAINER:
        payload, stored = outer.get("payload"), outer.get("sha256")
        if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8 or payload.dim() != 1:
            raise ValueError(f"{path}: corrupted checkpoint (its payload is not a byte string)")
        data = payload.numpy().tobytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != stored:
            raise ValueError(f"{path}: corrupted checkpoint: its contents do not match the SHA-256 checksum "
                             f"stored with them (stored {str(stored)[:16]}..., computed {actual[:16]}...); "
                             f"refusing to load it")
        # weights_only=False: the state holds numpy and python RNG states
        checkpoint = _torch_load(io.BytesIO(data), path, weights_only=False)
        expected = FORMAT
    else:
        checkpoint = outer if outer is not None else _torch_load(path, path, weights_only=False)
        expected = LEGACY_FORMAT
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != expected:
        raise ValueError(f"{path}: not a fastmi.train checkpoint (format {FORMAT}, or {LEGACY_FORMAT} "
                         f"without a checksum)")
    return checkpoint


def load_models(path: str, device="cpu"):
    """``(config, generator, discriminator_q, step)`` from a checkpoint, in eval mode."""
    checkpoint = load(path)
    config = TrainConfig.from_dict(checkpoint["config"])
    generator, discriminator = build_models(config.widths, config.spec, config.noise_dim)
    generator.load_state_dict(checkpoint["generator"])
    discriminator.load_state_dict(checkpoint["discriminator"])
    return config, generator.to(device).eval(), discriminator.to(device).eval(), checkpoint["step"]
