"""The trainer's pictures: sample grids in the layout of the InfoGAN paper's figure 2,
and the MI bounds and losses over the steps.

Sample grid: one panel per continuous code; in each, row k holds categorical value
c1 = k and the columns sweep that continuous code from -2 to 2 (beyond the prior's
[-1, 1], as the paper does, to show extrapolation), with the noise and the other codes
fixed (noise: one draw for the whole grid; other continuous codes: 0). So a row
change is a change of c1 alone and a column change one of the swept code alone.
"""

from __future__ import annotations

import math
import os
from typing import List

import torch
from einops import rearrange

from ..infogan.spec import Codes, LatentSpec


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def sweep_latents(spec: LatentSpec, noise: torch.Tensor, code: int, columns: int = 10) -> torch.Tensor:
    """Generator inputs [K * columns, noise_dim + code_width] for the panel that sweeps
    continuous code ``code``: row k is c1 = k, columns span ``linspace(-2, 2)``."""
    k = spec.categorical[0]
    values = torch.linspace(-2.0, 2.0, columns)
    categorical = torch.arange(k).repeat_interleave(columns).unsqueeze(1)
    continuous = torch.zeros(k * columns, spec.continuous)
    continuous[:, code] = values.repeat(k)
    codes = Codes(categorical, torch.zeros(k * columns, spec.bernoulli), continuous, spec=spec)
    return torch.cat([noise.expand(k * columns, -1), codes.to_generator_input()], dim=1)


def tile_images(images: torch.Tensor, rows: int) -> torch.Tensor:
    """[rows * columns, 1, h, w] images, row-major, as one [rows * h, columns * w] picture:
    image r * columns + c in block (r, c)."""
    return rearrange(images, "(r c) 1 h w -> (r h) (c w)", r=rows)


@torch.no_grad()
def sample_grid(generator: torch.nn.Module, spec: LatentSpec, noise: torch.Tensor, path: str,
                title: str = "", columns: int = 10) -> None:
    """Writes the figure-2 grid of ``generator`` (run in eval mode) to ``path`` (PNG).
    ``noise`` [1, noise_dim] is the fixed noise draw."""
    plt = _pyplot()
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    panels = [generator(sweep_latents(spec, noise.cpu(), d, columns).to(device)).cpu()
              for d in range(spec.continuous)]
    generator.train(was_training)
    k = spec.categorical[0]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.6), squeeze=False)
    first = len(spec.categorical) + 1
    for d, (ax, images) in enumerate(zip(axes[0], panels)):
        grid = tile_images(images, k)  # rows: c1's values; columns: the sweep
        ax.imshow(grid.numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(f"c{first + d}: -2 \u2192 2 (columns)", fontsize=9)
        ax.set_ylabel("c1 = 0 \u2026 9 (rows)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path, dpi=100)
    plt.close(fig)


def plot_metrics(records: List[dict], spec: LatentSpec, path: str, fixed_sigma_ceiling=None) -> None:
    """Writes the MI bounds (with the entropy H(c) = log K each categorical bound
    approaches, and the fixed-sigma ceiling of the continuous ones), the losses, and
    the clustering accuracy where the records hold it, over the steps, to ``path`` (PNG)."""
    if not records:
        return
    plt = _pyplot()
    steps = [r["step"] for r in records]
    scored = [r for r in records if r.get("accuracy") is not None]
    fig, axes = plt.subplots(1, 3 if scored else 2, figsize=(13.5 if scored else 10, 3.8))
    ax_mi, ax_loss = axes[0], axes[1]
    for k, classes in enumerate(spec.categorical):
        ax_mi.plot(steps, [r["mi_categorical"][k] for r in records], label=f"I(c{k + 1}; x) bound (Cat({classes}))")
        ax_mi.axhline(math.log(classes), color="black", linestyle="--", linewidth=1,
                      label=f"H(c{k + 1}) = ln {classes} = {math.log(classes):.3f}")
    first = len(spec.categorical) + 1
    for d in range(spec.continuous):
        ax_mi.plot(steps, [r["mi_continuous"][d] for r in records], label=f"I(c{first + d}; x) bound (continuous)")
    if fixed_sigma_ceiling is not None and spec.continuous:
        ax_mi.axhline(fixed_sigma_ceiling, color="gray", linestyle=":", linewidth=1,
                      label=f"continuous ceiling at fixed \u03c3 ({fixed_sigma_ceiling:.3f})")
    ax_mi.set_xlabel("step")
    ax_mi.set_ylabel("nats")
    ax_mi.set_title("mutual-information lower bounds")
    ax_mi.legend(fontsize=7, loc="center right")
    for key, label in (("loss_d", "D/Q loss (discriminator)"), ("loss_g", "G loss (generator)"),
                       ("loss_info", "L_info"), ("jsd_bound", "JSD bound")):
        ax_loss.plot(steps, [r[key] if r[key] is not None else float("nan") for r in records], label=label)
    ax_loss.set_xlabel("step")
    ax_loss.set_title("losses and the JSD bound (nats)")
    ax_loss.legend(fontsize=7)
    if scored:
        ax_acc = axes[2]
        ax_acc.plot([r["step"] for r in scored], [r["accuracy"] for r in scored], marker="o", markersize=3)
        ax_acc.set_ylim(0.0, 1.0)
        ax_acc.set_xlabel("step")
        ax_acc.set_title("clustering accuracy of argmax Q(c1|x)")
        ax_acc.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path, dpi=90)
    plt.close(fig)


def _save(fig, path: str, dpi: int) -> None:
    """``fig.savefig`` through a temporary file, so a reader never sees half a PNG."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, ".tmp-" + os.path.basename(path))
    fig.savefig(tmp, dpi=dpi, format="png")
    os.replace(tmp, path)
