"""The trainer's settings and its presets.

``fast`` (the default) fits a 2-core CPU in minutes: the paper's architecture at half
width, a shorter schedule and a lighter continuous term. ``paper`` is the InfoGAN
paper's MNIST setup as openai/InfoGAN's launcher runs it: full widths, batch 128, 50
epochs of 100 updates.
``smoke`` checks the pipeline end to end in seconds with tiny nets; it learns little.

The latent codes are the paper's for MNIST: 62 uniform(-1, 1) noise variables, one
Cat(10) code and two uniform(-1, 1) continuous codes. Q models each continuous code as
a Gaussian of fixed sigma = 1 (openai/InfoGAN's ``Uniform(1, fix_std=True)``): the
continuous term is then a plain squared error, which keeps L_info on the scale of the
GAN losses, whereas a learned log-variance can shrink without bound and let that term
dominate. The price is a loose bound: with sigma fixed at 1, H(c) + E log Q(c|x) can
never exceed log 2 - log(2 pi) / 2 = -0.226 nats per code.

The info term weighs the categorical code by lambda_cat = 1 and the continuous codes
by lambda_cont = 0.1: the paper sets lambda = 1 for discrete codes and "a smaller
lambda" for continuous ones (openai's launcher uses 1 for both; pass --lambda-cont 1
for that). Measured here on the default data (fast preset, 2500 steps, seeds 0 and
1): with lambda_cont = 1 the continuous codes also switch the digit (a sweep of c3
turns a 3 into a 0) and the clustering accuracy of c1 was 0.60 and 0.77; with 0.1
they turn into slant and width, as in the paper's figure 2, and c1 reached 0.77 and
0.83. The fast preset lowers lambda_cont further, to 0.02, and trains 4,500 steps:
over seeds 0-4 (benchmarks/results/train/seeds.md) lambda_cont = 0.1 for 2,500 steps
gave a mean accuracy of 0.64, 0.02 for 2,500 steps 0.82, and the accuracy of the
slower seeds still rose after step 2,500. The paper preset keeps 0.1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Optional

from ..infogan.spec import LatentSpec
from .models import Widths

PRESETS = ("fast", "paper", "smoke")
RESTART_CRITERIA = ("consensus", "mi_real", "mi_c1", "jsd", "loss_d")
LOSS_BACKENDS = ("auto", "reference", "cpu", "triton", "cuda")


def fixed_sigma_ceiling(spec: LatentSpec) -> Optional[float]:
    """The most a continuous code's bound H(c) + E log Q(c|x) can reach when Q's sigma
    is fixed: H(prior) - log(2 pi) / 2 - log sigma, at a perfect mean (None when sigma
    is learned). For the uniform(-1, 1) prior and sigma = 1: -0.226 nats."""
    if spec.learned_std:
        return None
    return spec.prior_entropy - 0.5 * math.log(2.0 * math.pi) - math.log(spec.std)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; a checkpoint stores it."""

    preset: str = "fast"
    dataset: str = "mnist5k"
    data_dir: Optional[str] = None
    split: Optional[str] = None
    steps: int = 2500
    batch_size: int = 64
    widths: Widths = field(default_factory=lambda: Widths(conv=(32, 64), hidden=512, q_hidden=128))
    noise_dim: int = 62
    categorical: tuple = (10,)
    continuous: int = 2
    q_std: float = 1.0
    lr_d: float = 2e-4
    lr_g: float = 1e-3
    beta1: float = 0.5
    beta2: float = 0.999
    lambda_cat: float = 1.0
    lambda_cont: float = 0.1
    lr_q: Optional[float] = None  # Q's head in the D/Q optimizer (None: lr_d)
    lr_decay_start: float = 1.0  # from this fraction of the steps on, both lrs fall linearly to 0
    info_trains_body: bool = True  # the D/Q step's info loss reaches the shared body
    restarts: int = 1  # starts on trial; the one a label-free score ranks first is kept
    restart_steps: int = 0  # steps each start trains before the choice
    restart_criterion: str = "consensus"
    seed: int = 0
    loss_backend: str = "auto"
    device: Optional[str] = None
    out: Optional[str] = None
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 500
    evaluate: bool = True
    progress: bool = True
    threads: Optional[int] = None

    @property
    def spec(self) -> LatentSpec:
        return LatentSpec(categorical=self.categorical, continuous=self.continuous,
                          continuous_prior="uniform", std=self.q_std)

    @property
    def out_dir(self) -> str:
        return self.out or f"runs/infogan-{self.dataset}"

    def as_dict(self) -> dict:
        values = asdict(self)
        values["categorical"] = list(self.categorical)
        values["widths"] = self.widths.as_dict()
        values["widths"]["conv"] = list(self.widths.conv)
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        values["widths"] = Widths.from_dict(values["widths"])
        values["categorical"] = tuple(values["categorical"])
        return cls(**values)

    def replace(self, **changes) -> "TrainConfig":
        return replace(self, **changes)


# what a resumed run may change: where and how it runs and reports, and how far it
# goes. Everything else fixes the math, and a resumed run keeps it. (Bit-for-bit
# continuation also needs the same device, loss backend and thread count.)
RESUME_MUTABLE = ("steps", "device", "loss_backend", "out", "log_every", "sample_every", "checkpoint_every",
                  "evaluate", "progress", "threads")


def check_resumable(saved: TrainConfig, config: TrainConfig) -> None:
    """Raises ValueError naming each setting ``config`` changes that a resumed run must keep."""
    changed = [f"{f.name} (checkpoint: {getattr(saved, f.name)!r}, now: {getattr(config, f.name)!r})"
               for f in fields(TrainConfig)
               if f.name not in RESUME_MUTABLE and getattr(saved, f.name) != getattr(config, f.name)]
    if changed:
        raise ValueError("a resumed run keeps the settings of its checkpoint; these differ: " + "; ".join(changed))


def preset(name: str, **overrides) -> TrainConfig:
    """The :class:`TrainConfig` of preset ``name``, with ``overrides`` applied."""
    if name == "fast":
        # measured over seeds 0-4 (benchmarks/results/train/seeds.md): a lighter continuous
        # term and longer training lift every seed; restarts ranked at step 500 did not
        config = TrainConfig(preset="fast", steps=4500, lambda_cont=0.02)
    elif name == "paper":
        # openai/InfoGAN run_mnist_exp.py: batch 128, max_epoch 50 x updates_per_epoch 100
        config = TrainConfig(preset="paper", steps=5000, batch_size=128, widths=Widths.paper(),
                             log_every=100, sample_every=1000, checkpoint_every=1000)
    elif name == "smoke":
        config = TrainConfig(preset="smoke", steps=20, batch_size=16,
                             widths=Widths(conv=(8, 16), hidden=32, q_hidden=16),
                             log_every=5, sample_every=10, checkpoint_every=10)
    else:
        raise ValueError(f"preset must be one of {PRESETS}, got {name!r}")
    return config.replace(**overrides)
