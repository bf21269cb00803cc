"""Evaluates a trained InfoGAN: how well its categorical code clusters real digits, and
its mutual-information bounds.

    python -m fastmi.evaluate --checkpoint runs/infogan-mnist5k/checkpoint.pt \
        --dataset mnist --data-dir DIR --split test

- clustering accuracy: each real image goes to cluster argmax_k Q(c1 = k | x); the
  clusters are matched one-to-one to the digits by the Hungarian algorithm
  (scipy's ``linear_sum_assignment`` on the cluster-by-digit counts), and the accuracy
  is the fraction of images whose matched cluster is their digit. It is the paper's
  "5% error on MNIST" metric.
- NMI: the normalized mutual information between clusters and digits,
  I(cluster; digit) / ((H(cluster) + H(digit)) / 2) (scikit-learn's default, the
  arithmetic mean).
- MI bounds: ``fastmi.infogan_loss``'s stats on fresh generated batches: for each code
  I(c; x) >= H(c) + E log Q(c|x) in nats, and the JSD bound against the real images.

D/Q and G run in eval mode (batch norm on its running statistics). The result is
printed and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

import numpy as np
import torch

from ..infogan.api import infogan_loss
from ..infogan.spec import LatentSpec


def cluster_accuracy(clusters: np.ndarray, labels: np.ndarray):
    """``(accuracy, mapping)``: the best one-to-one matching of clusters to labels
    (Hungarian algorithm on the contingency counts) and the fraction it gets right.
    ``mapping[cluster] = label`` (-1 for a cluster left unmatched)."""
    from scipy.optimize import linear_sum_assignment

    clusters, labels = np.asarray(clusters, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    if clusters.shape != labels.shape or clusters.ndim != 1 or clusters.size == 0:
        raise ValueError(f"cluster_accuracy: expected two equal non-empty 1-d arrays, got "
                         f"{clusters.shape} and {labels.shape}")
    size = int(max(clusters.max(), labels.max())) + 1
    counts = np.zeros((size, size), dtype=np.int64)
    np.add.at(counts, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    mapping = np.full(size, -1, dtype=np.int64)
    mapping[rows] = cols
    return float(counts[rows, cols].sum()) / clusters.size, mapping


def normalized_mutual_information(clusters: np.ndarray, labels: np.ndarray) -> float:
    """I(C; L) / ((H(C) + H(L)) / 2) from the empirical joint distribution; 1.0 when
    both partitions are a single block (as scikit-learn defines it)."""
    clusters, labels = np.asarray(clusters, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    _, c = np.unique(clusters, return_inverse=True)
    _, l = np.unique(labels, return_inverse=True)
    joint = np.zeros((c.max() + 1, l.max() + 1))
    np.add.at(joint, (c, l), 1.0)
    joint /= joint.sum()
    pc, pl = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / np.outer(pc, pl)[nz])).sum())
    hc = float(-(pc * np.log(pc)).sum())
    hl = float(-(pl * np.log(pl)).sum())
    if hc == 0.0 and hl == 0.0:
        return 1.0
    return max(mi, 0.0) / ((hc + hl) / 2.0)


@torch.no_grad()
def cluster_probabilities(discriminator: torch.nn.Module, images: torch.Tensor, spec: LatentSpec,
                          batch_size: int = 500) -> torch.Tensor:
    """Q(c1 = k | x) [N, K] of each image, on the CPU, D/Q in eval mode."""
    device = next(discriminator.parameters()).device
    was_training = discriminator.training
    discriminator.eval()
    k = spec.categorical[0]
    out = []
    for start in range(0, len(images), batch_size):
        _, _, q = discriminator(None, images[start:start + batch_size].to(device))
        out.append(torch.softmax(q[:, :k].float(), dim=1).cpu())
    discriminator.train(was_training)
    return torch.cat(out)


def predict_clusters(discriminator: torch.nn.Module, images: torch.Tensor, spec: LatentSpec,
                     batch_size: int = 500) -> np.ndarray:
    """argmax_k Q(c1 = k | x) of each image, D/Q in eval mode."""
    return cluster_probabilities(discriminator, images, spec, batch_size).argmax(1).numpy()


def code_usage(probs) -> dict:
    """How Q's categorical code uses the images ``probs`` = Q(c|x) [N, K] come from, in
    nats, with no labels: ``h_marginal`` = H(mean_x Q(c|x)) (ln K when the values are used
    evenly), ``h_conditional`` = mean_x H(Q(c|x)) (0 when Q is sure of every image), and
    their difference ``mi``, the mutual information between an image and its code under
    Q on these images."""
    p = np.asarray(probs, dtype=np.float64)
    marginal = p.mean(0)
    h_marginal = float(-(marginal * np.log(np.clip(marginal, 1e-30, None))).sum())
    h_conditional = float(-(p * np.log(np.clip(p, 1e-30, None))).sum(1).mean())
    return {"h_marginal": h_marginal, "h_conditional": h_conditional, "mi": h_marginal - h_conditional}


@torch.no_grad()
def mi_bounds(generator, discriminator, spec: LatentSpec, noise_dim: int, images: torch.Tensor, *,
              samples: int = 10000, batch_size: int = 500, seed: int = 0, backend: str = "auto") -> dict:
    """The loss's bounds, averaged over ``samples`` generated images (drawn from a
    generator seeded with ``seed``, leaving the global RNG alone) and as many real ones."""
    from .metrics import continuous_code_bounds

    device = next(generator.parameters()).device
    states = generator.training, discriminator.training
    generator.eval()
    discriminator.eval()
    rng = torch.Generator(device=device).manual_seed(seed)
    batches = max(1, samples // batch_size)
    real_order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    totals = None
    for b in range(batches):
        codes = spec.sample(batch_size, generator=rng)
        noise = torch.rand(batch_size, noise_dim, generator=rng, device=device) * 2.0 - 1.0
        fake = generator(torch.cat([noise, codes.to_generator_input()], dim=1))
        idx = real_order[(torch.arange(batch_size) + b * batch_size) % len(images)]
        real_logits, fake_logits, q = discriminator(images[idx].to(device), fake)
        stats = infogan_loss(real_logits, fake_logits, q, codes, spec, backend=backend).stats
        row = torch.cat([stats.jsd_bound.reshape(1).float(), stats.mi_categorical.float(),
                         continuous_code_bounds(fake_logits, q, codes, spec, backend).float()])
        totals = row if totals is None else totals + row
    generator.train(states[0])
    discriminator.train(states[1])
    means = (totals / batches).tolist()
    m = len(spec.categorical)
    return {"jsd_bound": means[0], "mi_categorical": means[1:1 + m], "mi_continuous": means[1 + m:],
            "entropy_categorical": list(spec.categorical_entropy), "samples": batches * batch_size}


def evaluate(generator, discriminator, spec: LatentSpec, noise_dim: int, images: torch.Tensor,
             labels: torch.Tensor, *, dataset: str = "", mi_samples: int = 10000, batch_size: int = 500,
             seed: int = 0, backend: str = "auto") -> dict:
    """Clustering accuracy, NMI and MI bounds of a trained G and D/Q (see the module doc)."""
    clusters = predict_clusters(discriminator, images, spec, batch_size)
    y = labels.cpu().numpy()
    accuracy, mapping = cluster_accuracy(clusters, y)
    k = spec.categorical[0]
    return {
        "dataset": dataset,
        "images": int(len(y)),
        "accuracy": accuracy,
        "nmi": normalized_mutual_information(clusters, y),
        "cluster_to_label": mapping[:k].tolist(),
        "cluster_sizes": np.bincount(clusters, minlength=k).tolist(),
        "mi_bounds": mi_bounds(generator, discriminator, spec, noise_dim, images, samples=mi_samples,
                               batch_size=batch_size, seed=seed, backend=backend),
    }


def summary_lines(result: dict) -> list:
    """The printed form of an :func:`evaluate` result."""
    bounds = result["mi_bounds"]
    cat = ", ".join(f"I(c{k + 1};x) >= {v:.3f} of H = {h:.3f}"
                    for k, (v, h) in enumerate(zip(bounds["mi_categorical"], bounds["entropy_categorical"])))
    first = len(bounds["mi_categorical"]) + 1
    cont = ", ".join(f"I(c{first + d};x) >= {v:.3f}" for d, v in enumerate(bounds["mi_continuous"]))
    return [
        f"clustering accuracy {result['accuracy']:.4f} on {result['dataset']} ({result['images']} images; "
        f"argmax Q(c1|x), Hungarian-matched to the digits), NMI {result['nmi']:.4f}",
        f"cluster -> digit {result['cluster_to_label']}, cluster sizes {result['cluster_sizes']}",
        f"MI bounds (nats, {bounds['samples']} samples): {cat}; {cont}; JSD >= {bounds['jsd_bound']:.3f}",
    ]


def write_json(result: dict, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    from .datasets import DATASETS, SPLITS

    p = argparse.ArgumentParser(prog="python -m fastmi.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint.pt written by python -m fastmi.train")
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="labelled real images to cluster (default: the checkpoint's training set)")
    p.add_argument("--data-dir", default=None, help="for --dataset mnist: the folder of the MNIST IDX files")
    p.add_argument("--split", choices=SPLITS, default=None, help="for --dataset mnist: train or test (default train)")
    p.add_argument("--out", default=None, help="the JSON file to write (default: evaluation-<data>.json "
                                               "beside the checkpoint)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--loss-backend", default="auto", choices=("auto", "reference", "cpu", "triton", "cuda"))
    p.add_argument("--mi-samples", type=int, default=10000, help="generated images for the MI bounds")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0, help="seed of the generated samples")
    return p


def main(argv: Optional[list] = None) -> dict:
    from .checkpoint import load_models
    from .datasets import DataError, load_dataset
    from .distributed import resolve_execution

    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("mi_samples", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    device = resolve_execution(parser, args.device, args.loss_backend)
    try:
        config, generator, discriminator, step = load_models(args.checkpoint, device)
    except (FileNotFoundError, ValueError) as e:
        parser.error(f"--checkpoint: {e}")
    if args.dataset is None and (args.data_dir or args.split):
        args.dataset = "mnist"
    if args.dataset is None:
        dataset, data_dir, split = config.dataset, config.data_dir, config.split
    else:
        dataset, data_dir, split = args.dataset, args.data_dir, args.split
    try:
        data = load_dataset(dataset, data_dir, split)
    except DataError as e:
        print(f"fastmi.evaluate: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValueError as e:
        parser.error(str(e))
    result = evaluate(generator, discriminator, config.spec, config.noise_dim, data.images, data.labels,
                      dataset=data.name, mi_samples=args.mi_samples, batch_size=args.batch_size,
                      seed=args.seed, backend=args.loss_backend)
    result["checkpoint"] = os.path.abspath(args.checkpoint)
    result["step"] = step
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)),
                                   f"evaluation-{data.name}.json")
    write_json(result, out)
    for line in summary_lines(result):
        print(line)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
