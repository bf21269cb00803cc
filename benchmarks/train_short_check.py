"""What a short run of the default preset reaches, over seeds: the thresholds of
tests/test_train.py::test_a_short_run_learns_the_categorical_code.

    python benchmarks/train_short_check.py [--steps 120] [--batch-size 32] [--seeds 0 1 2 3 4]

Each seed runs ``python -m fastmi.train`` for the test's short run (the default preset
at batch 32, one start: the check is on the categorical code, not on the choice among
starts) in a process of its own, then reports: the categorical MI bound of the first and
the last logging interval (on G's images), how Q's code uses the 5,000 real digits (the
MI of image and code under Q, H(mean_x Q(c|x)) - mean_x H(Q(c|x)), and the entropy of
the mean, ln 10 = 2.303 when all ten values are used evenly), and, for the record only,
the clustering accuracy of argmax Q(c1|x) on those digits (the test reads no labels).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def short_run_argv(steps: int, batch_size: int, seed: int, out: str) -> list:
    """The short run's command line (the test runs the same)."""
    return ["--steps", str(steps), "--batch-size", str(batch_size), "--restarts", "1", "--seed", str(seed),
            "--log-every", "10", "--sample-every", "1000", "--checkpoint-every", str(steps), "--no-eval",
            "--out", out]


def measure(out: str) -> dict:
    """The check's numbers for the run in ``out``."""
    import torch

    from fastmi.train import evaluate as ev
    from fastmi.train.checkpoint import load_models
    from fastmi.train.datasets import load_dataset
    from fastmi.train.metrics import read

    records = read(os.path.join(out, "metrics.jsonl"))
    config, _, discriminator, _ = load_models(os.path.join(out, "checkpoint.pt"))
    torch.set_num_threads(1)
    data = load_dataset(config.dataset)
    probs = ev.cluster_probabilities(discriminator, data.images, config.spec)
    usage = ev.code_usage(probs)
    accuracy, _ = ev.cluster_accuracy(probs.argmax(1).numpy(), data.labels.numpy())
    return {"mi_c1_first": round(records[0]["mi_categorical"][0], 4),
            "mi_c1": round(records[-1]["mi_categorical"][0], 4),
            "mi_real": round(usage["mi"], 4), "h_marginal": round(usage["h_marginal"], 4),
            "accuracy": round(accuracy, 4)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = p.parse_args(argv)
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as out:
            subprocess.run([sys.executable, "-m", "fastmi.train", "--no-progress", "--threads", "1",
                            *short_run_argv(args.steps, args.batch_size, seed, out)], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL)
            rows.append({"seed": seed, **measure(out)})
        print(json.dumps(rows[-1]), flush=True)
    for key in ("mi_c1_first", "mi_c1", "mi_real", "h_marginal", "accuracy"):
        values = [r[key] for r in rows]
        print(f"{key}: min {min(values):.3f}, mean {sum(values) / len(values):.3f}, max {max(values):.3f}")


if __name__ == "__main__":
    main()
