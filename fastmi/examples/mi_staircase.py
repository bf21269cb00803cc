"""Poole et al. (2019), "On Variational Bounds of Mutual Information", Fig. 2, with
``fastmi.critic_bound``: each estimator trains a critic on correlated Gaussians whose
true mutual information steps through 2, 4, 6, 8 and 10 nats.

Data: x, eps ~ N(0, I_d) with d = 20, y = rho x + sqrt(1 - rho^2) eps, so that
I(X; Y) = -d/2 log(1 - rho^2), i.e. rho = sqrt(1 - exp(-2 I / d)) for a target I.
Critic: separable, f(x, y) = g(x)^T h(y) with g, h MLPs d -> 256 -> 256 -> 32 (ReLU), as
in the paper (siglip adds a learnable bias, as SigLIP does); the scores of a batch of 64
pairs are the matrix critic_bound reduces (backend "auto": the fused "cpu" backend on CPU
tensors).
Training: Adam, learning rate 5e-4, batch 64, one critic per estimator trained through
the five steps in turn (the paper: 4,000 iterations per step; here 1,000 by default, so
that all six estimators run in a few minutes on two CPU cores). The estimate of each
iteration is the bound on its own training batch (``out.mi``), as in the paper's figure.

Prints, per estimator and step, the mean and standard deviation of the estimate over the
second half of the step's iterations (the critic needs the first half to adapt to the
new correlation) against the true MI, and saves the figure.

    python -m fastmi.examples.mi_staircase [--steps-per-level 1000] [--out DIR]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

import fastmi

ESTIMATORS = ("infonce", "nwj", "dv", "js", "smile", "siglip")
LABELS = {"infonce": "InfoNCE (CPC)", "nwj": "NWJ", "dv": "DV (MINE)", "js": "JS (NWJ at f + 1)",
          "smile": "SMILE (tau = 5)", "siglip": "SigLIP (DV value)"}
LEVELS = (2.0, 4.0, 6.0, 8.0, 10.0)


def rho_for(mi: float, dim: int) -> float:
    """The correlation of each coordinate that gives I(X; Y) = ``mi`` nats in ``dim`` dims."""
    return math.sqrt(1.0 - math.exp(-2.0 * mi / dim))


def sample(batch: int, dim: int, rho: float, generator: torch.Generator):
    x = torch.randn(batch, dim, generator=generator)
    eps = torch.randn(batch, dim, generator=generator)
    return x, rho * x + math.sqrt(1.0 - rho * rho) * eps


def mlp(dim: int, hidden: int = 256, embed: int = 32) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                               torch.nn.ReLU(), torch.nn.Linear(hidden, embed))


def train(estimator: str, steps_per_level: int, batch: int, dim: int, seed: int, clip: float) -> torch.Tensor:
    """The estimate (nats) of every iteration, [len(LEVELS) * steps_per_level]."""
    torch.manual_seed(seed)
    g, h = mlp(dim), mlp(dim)
    parameters = list(g.parameters()) + list(h.parameters())
    # SigLIP learns a bias beside the critic (its optimum is log r - log(N - 1)); the
    # paper's estimators use the critic alone
    bias = torch.nn.Parameter(torch.zeros(())) if estimator == "siglip" else None
    optimizer = torch.optim.Adam(parameters + ([bias] if bias is not None else []), lr=5e-4)
    data = torch.Generator().manual_seed(seed + 1)
    estimates = torch.empty(len(LEVELS) * steps_per_level)
    step = 0
    for mi in LEVELS:
        rho = rho_for(mi, dim)
        for _ in range(steps_per_level):
            x, y = sample(batch, dim, rho, data)
            out = fastmi.critic_bound(g(x), h(y), estimator=estimator, bias=bias, clip=clip)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            estimates[step] = out.mi
            step += 1
    return estimates


def summarize(estimates: dict, steps_per_level: int) -> dict:
    """{estimator: [(mean, std) per level]} over the second half of each level."""
    table = {}
    for name, values in estimates.items():
        rows = []
        for k in range(len(LEVELS)):
            tail = values[k * steps_per_level + steps_per_level // 2:(k + 1) * steps_per_level]
            rows.append((float(tail.mean()), float(tail.std())))
        table[name] = rows
    return table


def format_table(table: dict, batch: int) -> str:
    head = "| estimator | " + " | ".join(f"true {mi:g}" for mi in LEVELS) + " |"
    rule = "|---|" + "---:|" * len(LEVELS)
    lines = [head, rule]
    for name, rows in table.items():
        cells = " | ".join(f"{mean:.2f} ± {std:.2f}" for mean, std in rows)
        lines.append(f"| {LABELS[name]} | {cells} |")
    lines.append("")
    lines.append(f"mean ± std of the estimate (nats) over the second half of each step; "
                 f"InfoNCE's ceiling log {batch} = {math.log(batch):.2f} nats")
    return "\n".join(lines)


def plot(estimates: dict, steps_per_level: int, batch: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(estimates)
    columns = 3
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), sharey=True, squeeze=False)
    truth = torch.tensor(LEVELS).repeat_interleave(steps_per_level)
    for ax, name in zip(axes.flat, names):
        values = estimates[name]
        ax.plot(values, color="tab:blue", alpha=0.25, linewidth=0.5)
        window = max(1, steps_per_level // 20)
        kernel = torch.ones(window) / window
        smooth = torch.nn.functional.conv1d(values.view(1, 1, -1), kernel.view(1, 1, -1)).flatten()
        ax.plot(torch.arange(window - 1, len(values)), smooth, color="tab:blue", linewidth=1.2)
        ax.plot(truth, color="black", linewidth=1.0, label="true MI")
        if name == "infonce":
            ax.axhline(math.log(batch), color="tab:red", linestyle="--", linewidth=1.0, label=f"log {batch}")
            ax.legend(loc="upper left", fontsize=8)
        ax.set_title(LABELS[name], fontsize=10)
        ax.set_ylim(-2, 14)
        ax.set_xlabel("iteration")
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("MI estimate (nats)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps-per-level", type=int, default=1000, help="iterations per MI step (paper: 4000)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dim", type=int, default=20)
    parser.add_argument("--clip", type=float, default=5.0, help="SMILE's tau")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=ESTIMATORS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the matrices are 64 x 256)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for mi_staircase.png and .md")
    args = parser.parse_args(argv)
    if args.steps_per_level < 2:
        parser.error("--steps-per-level must be at least 2")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    estimates = {}
    try:
        for name in args.estimators:
            start = time.perf_counter()
            estimates[name] = train(name, args.steps_per_level, args.batch, args.dim, args.seed, args.clip)
            print(f"{LABELS[name]}: {time.perf_counter() - start:.1f} s", flush=True)
    finally:  # main() may run inside another program (the tests)
        torch.set_num_threads(threads)
    table = format_table(summarize(estimates, args.steps_per_level), args.batch)
    print()
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(estimates, args.steps_per_level, args.batch, args.out / "mi_staircase.png")
    command = " ".join(["python -m fastmi.examples.mi_staircase"] + list(sys.argv[1:] if argv is None else argv))
    made = (f"Made by `{command}`: d = {args.dim}, batch {args.batch}, {args.steps_per_level} iterations per "
            f"step, seed {args.seed}; fastmi {fastmi.__version__}, torch {torch.__version__}, "
            f"{args.threads} thread(s).")
    (args.out / "mi_staircase.md").write_text(made + "\n\n" + table + "\n")
    print(f"\nsaved {args.out / 'mi_staircase.png'} and {args.out / 'mi_staircase.md'}")


if __name__ == "__main__":
    main()
