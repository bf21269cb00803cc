"""The MNIST InfoGAN networks: generator G, and discriminator D with recognition head Q.

Architecture of the InfoGAN paper (Chen et al. 2016, appendix C.1, table 1) and of
openai/InfoGAN's ``network_type="mnist"``, for square images of side ``image_size``
(a multiple of 4; 28 for MNIST). With the paper's widths:

    G: z (74) -> FC 1024, BN, ReLU -> FC 7*7*128, BN, ReLU
              -> 4x4 upconv 64 stride 2, BN, ReLU -> 4x4 upconv 1 stride 2 -> sigmoid
    D body: x -> 4x4 conv 64 stride 2, lReLU -> 4x4 conv 128 stride 2, BN, lReLU
              -> FC 1024, BN, lReLU
    D head: body -> FC 1                         (the real/fake logit)
    Q head: body -> FC 128, BN, lReLU -> FC W    (W = spec.q_width)

D and Q share the body, so Q costs one small MLP on top of D. The generator ends in a
sigmoid (openai's MeanBernoulli output): images lie in [0, 1], like the data.
Weights start as in openai/InfoGAN: N(0, 0.02) weights, zero biases, BN scale N(1, 0.02).

:class:`Widths` holds the layer widths, so a smaller net (the ``fast`` preset) is the
same code. A benchmark times one D+G step with::

    from fastmi.train.models import Widths, build_models
    generator, discriminator = build_models(Widths.paper(), spec, noise_dim=62)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from ..infogan.spec import LatentSpec


@dataclass(frozen=True)
class Widths:
    """Layer widths of G, D and Q.

    Args:
        conv: D's two conv widths; G's deconv widths mirror them (G's first deconv
            outputs ``conv[0]`` channels from a ``conv[1]``-channel 7x7 map).
        hidden: the width of D's FC layer and of G's first FC layer.
        q_hidden: the width of Q's hidden FC layer.
        leak: the negative slope of D's leaky ReLUs (0.1 in the paper; openai's code
            uses 0.01).
    """

    conv: Tuple[int, int] = (64, 128)
    hidden: int = 1024
    q_hidden: int = 128
    leak: float = 0.1

    @classmethod
    def paper(cls) -> "Widths":
        return cls()

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Widths":
        values = dict(values)
        values["conv"] = tuple(values["conv"])
        return cls(**values)


class Generator(nn.Module):
    """G(z, c): maps ``[noise | code]`` rows [B, noise_dim + code_width] to images
    [B, 1, image_size, image_size] in [0, 1]."""

    def __init__(self, input_dim: int, widths: Widths = Widths(), image_size: int = 28):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"Generator: image_size must be a multiple of 4, got {image_size}")
        c1, c2 = widths.conv
        self.map_size = image_size // 4
        self.map_channels = c2
        self.fc = nn.Sequential(
            nn.Linear(input_dim, widths.hidden), nn.BatchNorm1d(widths.hidden), nn.ReLU(),
            nn.Linear(widths.hidden, c2 * self.map_size ** 2), nn.BatchNorm1d(c2 * self.map_size ** 2), nn.ReLU(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1), nn.Sigmoid(),
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        h = self.fc(latent).view(-1, self.map_channels, self.map_size, self.map_size)
        return self.deconv(h)


class DiscriminatorQ(nn.Module):
    """D and Q on one shared convolutional body.

    ``forward(real, fake)`` returns ``(real_logits [Br] or None, fake_logits [Bf], q [Bf, W])``.
    The real and the fake batch go through the body separately, so batch norm
    normalizes each with its own statistics, as openai/InfoGAN's two ``discriminate``
    calls do. One call serves both batches so that DistributedDataParallel sees one
    forward per backward. Q reads the fake batch only: the codes of real images are
    unknown.
    """

    def __init__(self, q_width: int, widths: Widths = Widths(), image_size: int = 28):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"DiscriminatorQ: image_size must be a multiple of 4, got {image_size}")
        c1, c2 = widths.conv
        leak = widths.leak
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 4, stride=2, padding=1), nn.LeakyReLU(leak),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.BatchNorm2d(c2), nn.LeakyReLU(leak),
            nn.Flatten(),
            nn.Linear(c2 * (image_size // 4) ** 2, widths.hidden), nn.BatchNorm1d(widths.hidden), nn.LeakyReLU(leak),
        )
        self.d_head = nn.Linear(widths.hidden, 1)
        self.q_head = nn.Sequential(
            nn.Linear(widths.hidden, widths.q_hidden), nn.BatchNorm1d(widths.q_hidden), nn.LeakyReLU(leak),
            nn.Linear(widths.q_hidden, q_width),
        )

    def forward(self, real: Optional[torch.Tensor], fake: torch.Tensor, q_on_detached_body: bool = False):
        """``q_on_detached_body``: Q's head reads the body's features through a detach,
        so that a loss on q trains Q's head and not the body."""
        real_logits = None
        if real is not None:
            real_logits = self.d_head(self.body(real)).squeeze(1)
        features = self.body(fake)
        q = self.q_head(features.detach() if q_on_detached_body else features)
        return real_logits, self.d_head(features).squeeze(1), q


def init_weights(module: nn.Module) -> None:
    """openai/InfoGAN's initialization: N(0, 0.02) weights, zero biases, BN scale N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def build_models(widths: Widths, spec: LatentSpec, noise_dim: int = 62, image_size: int = 28):
    """``(generator, discriminator_q)``, initialized as openai/InfoGAN does, drawing from
    the global torch RNG (seed it first for reproducible weights)."""
    generator = Generator(noise_dim + spec.code_width, widths, image_size)
    discriminator = DiscriminatorQ(spec.q_width, widths, image_size)
    init_weights(generator)
    init_weights(discriminator)
    return generator, discriminator
