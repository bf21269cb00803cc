"""Latent-code specifications and code batches.

A :class:`LatentSpec` describes the codes ``c`` an InfoGAN generator is fed and the
layout of the recognition head ``Q(c|x)`` that must recover them:

    q = [ cat logits code 1 (K1) | ... | code m (Km) | bernoulli logits (nb) | mu (n) | logvar (n) ]

where the ``logvar`` block exists only when the continuous std is learned. Its
entropies are the ``H(c)`` of the bound ``I(c; x) >= H(c) + E log Q(c|x)``:

    H(Cat(K))          = log K
    H(Bernoulli(1/2))  = log 2
    H(uniform(-1, 1))  = log 2
    H(normal(0, 1))    = 0.5 log(2 pi e)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Union

import torch

PRIOR_ENTROPY = {"uniform": math.log(2.0), "normal": 0.5 * math.log(2.0 * math.pi * math.e)}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class LatentSpec:
    """The latent codes of an InfoGAN generator and the matching Q-head layout.

    Args:
        categorical: the number of classes K of each categorical code (each K >= 2).
        bernoulli: the number nb of Bernoulli(1/2) codes.
        continuous: the number n of continuous codes.
        continuous_prior: ``"uniform"`` (uniform(-1, 1)) or ``"normal"`` (normal(0, 1)).
        std: ``"learned"`` (Q predicts a log-variance per continuous code) or a fixed
            sigma > 0 given as a float.
    """

    categorical: tuple = (10,)
    bernoulli: int = 0
    continuous: int = 2
    continuous_prior: str = "uniform"
    std: Union[str, float] = "learned"

    def __post_init__(self):
        categorical = self.categorical
        if _is_int(categorical):
            categorical = (categorical,)
        try:
            categorical = tuple(categorical)
        except TypeError:
            raise TypeError(
                f"LatentSpec: categorical must be a sequence of class counts, got {self.categorical!r}"
            ) from None
        for k in categorical:
            if not _is_int(k) or k < 2:
                raise ValueError(
                    f"LatentSpec: every categorical class count must be an int >= 2, got {categorical!r}"
                )
        object.__setattr__(self, "categorical", categorical)
        for name in ("bernoulli", "continuous"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"LatentSpec: {name} must be an int >= 0, got {value!r}")
        if self.continuous_prior not in PRIOR_ENTROPY:
            raise ValueError(
                f"LatentSpec: continuous_prior must be 'uniform' or 'normal', got {self.continuous_prior!r}"
            )
        std = self.std
        if isinstance(std, str):
            if std != "learned":
                raise ValueError(f"LatentSpec: std must be 'learned' or a float sigma > 0, got {std!r}")
        elif isinstance(std, (int, float)) and not isinstance(std, bool):
            if not (math.isfinite(std) and std > 0):
                raise ValueError(f"LatentSpec: a fixed std must be a finite float > 0, got {std!r}")
            object.__setattr__(self, "std", float(std))
        else:
            raise TypeError(f"LatentSpec: std must be 'learned' or a float sigma > 0, got {std!r}")
        if not categorical and self.bernoulli == 0 and self.continuous == 0:
            raise ValueError("LatentSpec: the spec holds no codes; give at least one categorical, "
                             "bernoulli or continuous code")

    # ---- layout -------------------------------------------------------------------------
    @property
    def learned_std(self) -> bool:
        return self.std == "learned"

    @property
    def fixed_logvar(self) -> float:
        """``s = 2 log sigma`` for a fixed std (0.0 when the std is learned)."""
        return 0.0 if self.learned_std else 2.0 * math.log(self.std)

    @property
    def q_width(self) -> int:
        """W: the width of Q's output row."""
        return sum(self.categorical) + self.bernoulli + self.continuous * (2 if self.learned_std else 1)

    @property
    def code_width(self) -> int:
        """The width of the generator's code input: one-hot categoricals, bernoulli, continuous."""
        return sum(self.categorical) + self.bernoulli + self.continuous

    # ---- entropies H(c), in nats --------------------------------------------------------
    @property
    def categorical_entropy(self) -> tuple:
        """``log K`` of each categorical code."""
        return tuple(math.log(k) for k in self.categorical)

    @property
    def bernoulli_entropy(self) -> float:
        """``nb log 2``."""
        return self.bernoulli * math.log(2.0)

    @property
    def prior_entropy(self) -> float:
        """The entropy of one continuous code's prior."""
        return PRIOR_ENTROPY[self.continuous_prior]

    @property
    def continuous_entropy(self) -> float:
        """``n H(prior)``: the differential entropy of the continuous codes."""
        return self.continuous * self.prior_entropy

    @property
    def entropy(self) -> float:
        """``H(c)`` of all codes together (they are independent)."""
        return sum(self.categorical_entropy) + self.bernoulli_entropy + self.continuous_entropy

    # ---- sampling -----------------------------------------------------------------------
    def sample(self, batch: int, device=None, generator: Optional[torch.Generator] = None) -> "Codes":
        """Draws ``batch`` codes from the prior: uniform categorical indices (int64),
        Bernoulli(1/2) values and continuous values (float32)."""
        if not _is_int(batch) or batch < 1:
            raise ValueError(f"LatentSpec.sample: batch must be an int >= 1, got {batch!r}")
        if generator is not None and device is None:
            device = generator.device
        kw = dict(device=device, generator=generator)
        categorical = torch.stack(
            [torch.randint(0, k, (batch,), **kw) for k in self.categorical], dim=1
        ) if self.categorical else torch.empty(batch, 0, dtype=torch.int64, device=device)
        bernoulli = torch.randint(0, 2, (batch, self.bernoulli), **kw).to(torch.float32)
        if self.continuous_prior == "uniform":
            continuous = torch.rand(batch, self.continuous, **kw) * 2.0 - 1.0
        else:
            continuous = torch.randn(batch, self.continuous, **kw)
        return Codes(categorical, bernoulli, continuous, spec=self)


class Codes(NamedTuple):
    """A batch of latent codes: categorical indices [B, m] (int32 or int64), bernoulli
    values [B, nb] in {0, 1} and continuous values [B, n]. A kind the spec lacks may be
    None. ``spec`` (optional) lets :meth:`to_generator_input` one-hot the indices."""

    categorical: Optional[torch.Tensor] = None
    bernoulli: Optional[torch.Tensor] = None
    continuous: Optional[torch.Tensor] = None
    spec: Optional[LatentSpec] = None

    def to_generator_input(self, spec: Optional[LatentSpec] = None) -> torch.Tensor:
        """``[one_hot(c_1, K1) | ... | one_hot(c_m, Km) | bernoulli | continuous]``, [B, code_width]."""
        spec = spec if spec is not None else self.spec
        if spec is None:
            raise ValueError("Codes.to_generator_input: the class counts are unknown; "
                             "pass spec= or build the codes with LatentSpec.sample")
        parts = []
        dtype = self.continuous.dtype if self.continuous is not None and self.continuous.is_floating_point() \
            else torch.float32
        if spec.categorical:
            if self.categorical is None:
                raise ValueError("Codes.to_generator_input: the spec has categorical codes but "
                                 "codes.categorical is None")
            for k, classes in enumerate(spec.categorical):
                parts.append(torch.nn.functional.one_hot(self.categorical[:, k].long(), classes).to(dtype))
        for name, width in (("bernoulli", spec.bernoulli), ("continuous", spec.continuous)):
            if width:
                value = getattr(self, name)
                if value is None:
                    raise ValueError(f"Codes.to_generator_input: the spec has {name} codes but "
                                     f"codes.{name} is None")
                parts.append(value.to(dtype))
        return torch.cat(parts, dim=1)
