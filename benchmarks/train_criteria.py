"""Which unsupervised score, read early in a run, points to the runs that end well?

    python benchmarks/train_criteria.py runs/seeds/CONFIG [--k 3]

For the runs of one configuration (``runs/seeds/CONFIG/seed-*``, trained by
``train_seeds.py run --keep-at S1 S2 ...``), this scores each kept early checkpoint
``checkpoint-S.pt`` by criteria the trainer itself could compute (no labels), reads the
run's final clustering accuracy from its ``evaluation.json``, and asks how well each
criterion at step S picks the best run:

- its Spearman correlation with the final accuracy over the runs;
- restarts simulated: for every set of K runs, the run the criterion would keep (the
  highest score), and so the final accuracy a trainer with K restarts of S steps,
  kept by that criterion, would have ended with. A restart is a run from its own seed,
  and the kept one goes on exactly as that run went on, so the simulation is exact for
  this pool of runs. Against it: a random pick (the pool's mean) and an oracle.

The criteria (each "higher is better"):

- ``mi_c1``: the categorical MI bound on G's images, the trainer's own log at step S;
- ``-loss_d``, ``jsd``: the D/Q loss (negated) and the JSD bound at step S;
- ``mi_real``: Q's categorical code on the real digits, H(mean_x Q(c|x)) - mean_x H(Q(c|x)),
  the information Q's clusters carry about the real images (all used, each sure);
- ``-h_real_cond``: minus the mean entropy of Q(c|x) on the real digits (Q is sure);
- ``h_real_marg``: the entropy of the mean Q(c|x) on the real digits (the clusters used evenly);
- ``mi_cont``: the continuous codes' MI bounds, summed (how much of G's variation the
  continuous codes carry);
- ``stable_rot``: the fraction of real digits whose cluster argmax Q(c|x) survives a
  rotation by +-10 degrees (a digit keeps its identity; its slant does not);
- ``consensus``: the mean NMI between this run's clusters of the real digits and those of
  the other K - 1 runs of the set (the run most in agreement with the others: the idea of
  ModelCentrality, Lin et al. 2020); it depends on the set, so it is scored per set.

The labels enter only as the outcome (the accuracy) to score the criteria against.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import re
import statistics
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def spearman(x, y) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    if np.std(rx) == 0 or np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def score_checkpoint(path: str, images: torch.Tensor, labels: np.ndarray, records: list) -> dict:
    from fastmi.train import evaluate as ev
    from fastmi.train.checkpoint import load_models

    config, generator, discriminator, step = load_models(path)
    probs = ev.cluster_probabilities(discriminator, images, config.spec).numpy()
    stable = []
    for degrees in (-10.0, 10.0):
        angle = torch.tensor(degrees * np.pi / 180.0)
        theta = torch.tensor([[torch.cos(angle), -torch.sin(angle), 0.0], [torch.sin(angle), torch.cos(angle), 0.0]])
        grid = torch.nn.functional.affine_grid(theta.expand(len(images), 2, 3), list(images.shape), align_corners=False)
        rotated = torch.nn.functional.grid_sample(images, grid, align_corners=False)
        moved = ev.cluster_probabilities(discriminator, rotated, config.spec).numpy().argmax(1)
        stable.append(float((moved == probs.argmax(1)).mean()))
    usage = ev.code_usage(probs)
    record = next(r for r in records if r["step"] == step)
    clusters = probs.argmax(1)
    return {"step": step, "clusters": clusters, "accuracy": ev.cluster_accuracy(clusters, labels)[0],
            "mi_c1": record["mi_categorical"][0], "-loss_d": -record["loss_d"], "jsd": record["jsd_bound"],
            "mi_cont": record["mi_continuous_total"], "stable_rot": float(np.mean(stable)),
            "mi_real": usage["mi"], "-h_real_cond": -usage["h_conditional"], "h_real_marg": usage["h_marginal"]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config_dir", help="runs/seeds/CONFIG")
    p.add_argument("--k", type=int, nargs="+", default=[2, 3, 4], help="restarts to simulate")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from fastmi.train import evaluate as ev
    from fastmi.train.datasets import load_dataset
    from fastmi.train.metrics import read

    data = load_dataset("mnist5k")
    labels = data.labels.numpy()
    runs = {}
    for folder in sorted(glob.glob(os.path.join(args.config_dir, "seed-*"))):
        evaluation = os.path.join(folder, "evaluation.json")
        kept = glob.glob(os.path.join(folder, "checkpoint-*.pt"))
        if not os.path.exists(evaluation) or not kept:
            continue
        seed = int(folder.rsplit("-", 1)[1])
        records = read(os.path.join(folder, "metrics.jsonl"))
        final = json.load(open(evaluation))["accuracy"]
        scores = {}
        for path in kept:
            step = int(re.search(r"checkpoint-(\d+)\.pt$", path).group(1))
            scores[step] = score_checkpoint(path, data.images, labels, records)
        runs[seed] = {"final": final, "scores": scores}
    if len(runs) < 3:
        raise SystemExit(f"{args.config_dir}: need 3 or more finished runs with kept checkpoints, found {len(runs)}")
    seeds = sorted(runs)
    finals = np.array([runs[s]["final"] for s in seeds])
    print(f"{args.config_dir}: {len(seeds)} runs, final accuracy mean {finals.mean():.3f}, "
          f"min {finals.min():.3f}, max {finals.max():.3f}")
    steps = sorted(set.intersection(*(set(runs[s]["scores"]) for s in seeds)))
    names = ["accuracy", "mi_c1", "-loss_d", "jsd", "mi_cont", "mi_real", "-h_real_cond", "h_real_marg",
             "stable_rot"]
    for step in steps:
        print(f"\n## step {step}")
        print("seed  final  " + "  ".join(f"{n:>12}" for n in names))
        for s in seeds:
            sc = runs[s]["scores"][step]
            print(f"{s:4d}  {runs[s]['final']:.3f}  " + "  ".join(f"{sc[n]:12.4f}" for n in names))
        print("spearman with the final accuracy: " + ", ".join(
            f"{n} {spearman([runs[s]['scores'][step][n] for s in seeds], finals):+.2f}" for n in names))
        for k in args.k:
            if k > len(seeds):
                continue
            picks = {n: [] for n in names[1:] + ["consensus"]}
            oracle, pool = [], []
            for subset in itertools.combinations(seeds, k):
                outcome = {s: runs[s]["final"] for s in subset}
                oracle.append(max(outcome.values()))
                pool.append(statistics.mean(outcome.values()))
                for n in names[1:]:
                    best = max(subset, key=lambda s: runs[s]["scores"][step][n])
                    picks[n].append(outcome[best])
                clusters = {s: runs[s]["scores"][step]["clusters"] for s in subset}
                agreement = {s: statistics.mean(ev.normalized_mutual_information(clusters[s], clusters[t])
                                                for t in subset if t != s) for s in subset}
                picks["consensus"].append(outcome[max(subset, key=agreement.get)])
            print(f"K={k} restarts of {step} steps, over the {len(pool)} sets: mean final accuracy (worst set) "
                  f"random {statistics.mean(pool):.3f}, oracle {statistics.mean(oracle):.3f} "
                  f"({min(oracle):.3f}); " + ", ".join(
                      f"{n} {statistics.mean(v):.3f} ({min(v):.3f})" for n, v in picks.items()))


if __name__ == "__main__":
    main()
