"""The InfoGAN training loop (Chen et al. 2016; openai/InfoGAN), every loss from
:func:`fastmi.infogan_loss`.

Each step draws a real batch x and a latent batch (z, c), generates G(z, c), then

1. D/Q step: ``discriminator = L_D_adv + L_info`` on D(x), D(G(z, c)) and
   Q(G(z, c)), with G's output detached. One Adam optimizer holds D's head, Q's head
   and the body they share, so the info loss trains the body too.
2. G step: ``generator = L_G_adv + L_info`` on D and Q of the same G(z, c), now
   updated D/Q, gradients into G only.

Adam with beta1 = 0.5: lr 2e-4 for D/Q, 1e-3 for G (the paper's MNIST settings).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from typing import NamedTuple, Optional

import numpy as np
import torch

from . import evaluate as evaluation
from ..infogan.backends import backend_name
from ..infogan.api import infogan_loss
from ..infogan.spec import Codes, LatentSpec
from . import checkpoint as ckpt
from . import distributed, metrics, plots
from .batches import BatchOrder
from .config import RESTART_CRITERIA, TrainConfig, check_resumable, fixed_sigma_ceiling
from .datasets import load_dataset
from .models import build_models

SAMPLES_DIR = "samples"
EVALUATION_NAME = "evaluation.json"
RESTARTS_NAME = "restarts.json"


class TrainResult(NamedTuple):
    config: TrainConfig
    step: int
    generator: torch.nn.Module
    discriminator: torch.nn.Module
    last_record: Optional[dict]
    evaluation: Optional[dict]
    wall_s: float


def seed_for(*parts: int) -> int:
    """A 63-bit seed derived from integers (numpy's SeedSequence: stable across runs,
    unlike python's salted ``hash``)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(2, dtype=np.uint32).astype(np.uint64)
               .dot(np.array([1 << 31, 1], dtype=np.uint64)))


def default_threads() -> int:
    """torch's CPU threads, less one core left to the rest of the machine (1 on a
    2-core machine). OpenMP threads meet at a barrier after every op, so a thread that
    shares its core with another busy process stalls them all: measured here, a step
    on 2 threads with the other core busy ran 13x slower than on 1 thread. The count
    depends on the machine alone, not on its load, because it changes the float
    rounding: a run is reproducible only at a fixed thread count."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(torch.get_num_threads(), cores - 1))


def sample_latents(spec: LatentSpec, batch: int, noise_dim: int, rng: torch.Generator):
    """``(codes, generator input [batch, noise_dim + code_width])``: uniform(-1, 1) noise
    (openai/InfoGAN's ``Uniform(62)``) next to the codes drawn from their priors."""
    codes = spec.sample(batch, generator=rng)
    noise = torch.rand(batch, noise_dim, generator=rng, device=rng.device) * 2.0 - 1.0
    return codes, torch.cat([noise, codes.to_generator_input()], dim=1)


def discriminator_step(discriminator, optimizer, real, fake, codes: Codes, spec: LatentSpec,
                       info_trains_body: bool = True, **loss_options):
    """One D/Q update on ``discriminator = L_D_adv + L_info``. ``optimizer`` holds every
    parameter of ``discriminator``: D's head, Q's head and the shared body, so the
    info loss's gradient reaches the body (unless ``info_trains_body`` is False: then
    Q's head reads the body through a detach). Returns ``(losses, fake_logits, q)``."""
    if info_trains_body:
        real_logits, fake_logits, q = discriminator(real, fake.detach())
    else:
        real_logits, fake_logits, q = discriminator(real, fake.detach(), q_on_detached_body=True)
    losses = infogan_loss(real_logits, fake_logits, q, codes, spec, **loss_options)
    optimizer.zero_grad(set_to_none=True)
    losses.discriminator.backward()
    optimizer.step()
    return losses, fake_logits, q


def generator_step(discriminator, optimizer, generator_params, fake, codes: Codes, spec: LatentSpec,
                   **loss_options):
    """One G update on ``generator = L_G_adv + L_info``, through D and Q of ``fake``.
    Gradients go to ``generator_params`` alone: D/Q's would be thrown away."""
    with distributed.no_gradient_sync(discriminator):
        _, fake_logits, q = discriminator(None, fake)
    losses = infogan_loss(None, fake_logits, q, codes, spec, **loss_options)
    optimizer.zero_grad(set_to_none=True)
    losses.generator.backward(inputs=generator_params)
    optimizer.step()
    return losses


def make_optimizers(generator, discriminator, config: TrainConfig):
    """Adam for G, and one Adam for all of D/Q (body, D head, Q head). ``fused``: one
    kernel per update instead of a dozen per tensor (a seventh of a CPU step)."""
    betas = (config.beta1, config.beta2)
    dq_params = discriminator.parameters()
    if config.lr_q is not None:
        q_head = {id(p) for p in discriminator.q_head.parameters()}
        dq_params = [{"params": [p for p in discriminator.parameters() if id(p) not in q_head]},
                     {"params": list(discriminator.q_head.parameters()), "lr": config.lr_q}]
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=betas, fused=True)
    opt_d = torch.optim.Adam(dq_params, lr=config.lr_d, betas=betas, fused=True)
    for optimizer in (opt_g, opt_d):
        for group in optimizer.param_groups:
            group["base_lr"] = group["lr"]
    return opt_g, opt_d


def set_learning_rates(optimizers, config: TrainConfig, step: int) -> None:
    """The learning rates of step ``step`` (0-based): constant, or from
    ``lr_decay_start * steps`` on falling linearly to 0 at the last step. A function of
    the step alone, so that a resumed run sets the same rates."""
    start = config.lr_decay_start * config.steps
    if start >= config.steps:
        return
    factor = 1.0 if step < start else max(0.0, (config.steps - step) / (config.steps - start))
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor


class OutputDirError(ValueError):
    """``--out`` names a folder the run cannot write to."""


def output_dir_problem(out: str) -> Optional[str]:
    """None when ``out`` is (or can be made) a folder this process can write files in,
    else a one-line reason. Checked by writing a file, not by permission bits: root
    passes those everywhere, and a read-only mount or /proc refuses writes whatever
    they say. Without it a bad --out surfaced as a traceback at the run's first
    metrics line or checkpoint, after minutes of training."""
    try:
        if os.path.exists(out) and not os.path.isdir(out):
            return f"--out {out}: is a file, not a folder"
        os.makedirs(out, exist_ok=True)
        # named like a checkpoint temporary, so that remove_stale_temporaries sweeps
        # it up should this process die before the unlink
        fd, probe = tempfile.mkstemp(prefix=".tmp-write-check-", suffix=".pt", dir=out)
        os.close(fd)
        os.unlink(probe)
    except NotADirectoryError:
        return f"--out {out}: a folder on its path is a file"
    except OSError as e:
        return f"--out {out}: cannot write files there ({e.strerror or e})"
    return None


def train(config: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Trains per ``config``, writing metrics, sample grids, the MI plot, checkpoints and
    the final evaluation under ``config.out_dir``. With ``resume``, continues from the
    checkpoint there, bit for bit as if never interrupted (same device, backend and
    thread count). Under torchrun, trains with DistributedDataParallel."""
    world = distributed.setup(config.device)
    try:
        return _train(config, world, resume, overwrite)
    finally:
        distributed.teardown(world)


def _train(config: TrainConfig, world: distributed.World, resume: bool, overwrite: bool) -> TrainResult:
    started = time.perf_counter()
    device, main = world.device, world.is_main
    out = config.out_dir
    checkpoint_path = os.path.join(out, ckpt.CHECKPOINT_NAME)
    metrics_path = os.path.join(out, metrics.METRICS_NAME)
    say = _printer(main)
    if config.batch_size % world.size:
        raise ValueError(f"--batch-size {config.batch_size} must be divisible by the {world.size} processes")
    # rank 0 writes every file; the other ranks learn its verdict, so that all stop together
    problem = distributed.gather_objects(output_dir_problem(out) if main else None, world)[0]
    if problem:
        raise OutputDirError(problem)
    saved = None
    if resume:
        saved = ckpt.load(checkpoint_path)
        check_resumable(TrainConfig.from_dict(saved["config"]), config)
        if saved["world_size"] != world.size:
            raise ValueError(f"{checkpoint_path} was written by {saved['world_size']} processes; resume it "
                             f"with as many (this run has {world.size})")
        if saved["step"] > config.steps:
            raise ValueError(f"{checkpoint_path} is at step {saved['step']}, past --steps {config.steps}")
    elif os.path.exists(checkpoint_path) and not overwrite:
        raise FileExistsError(f"{out} already holds a run ({ckpt.CHECKPOINT_NAME}); pass --resume to continue "
                              f"it, --overwrite to start over, or --out DIR")
    distributed.barrier(world)  # every rank has read the old state before rank 0 clears it
    if main:
        # this run owns the folder now: a checkpoint write that was killed left these
        for path in ckpt.remove_stale_temporaries(out):
            say(f"removed {path}, the temporary file of a checkpoint write that did not finish")
    if main and not resume:
        for path in (checkpoint_path, metrics_path, os.path.join(out, EVALUATION_NAME),
                     os.path.join(out, RESTARTS_NAME)):
            if os.path.exists(path):
                os.unlink(path)
        shutil.rmtree(os.path.join(out, SAMPLES_DIR), ignore_errors=True)
        os.makedirs(out, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    elif device.type == "cpu":
        torch.set_num_threads(default_threads())

    # ---- data, models, optimizers, random streams -----------------------------------
    spec = config.spec
    data = load_dataset(config.dataset, config.data_dir, config.split)
    images = data.images.to(device)
    batch = config.batch_size // world.size
    grid_noise = torch.rand(1, config.noise_dim, generator=torch.Generator().manual_seed(seed_for(config.seed, 2)))
    grid_noise = grid_noise * 2.0 - 1.0
    loss_options = dict(lambda_cat=config.lambda_cat, lambda_cont=config.lambda_cont, backend=config.loss_backend)
    candidate_seeds = restart_seeds(config)
    extra_steps = (config.restarts - 1) * config.restart_steps  # the restarts that were not kept

    def start_run(seed: int) -> _Run:
        return _Run(config, seed, spec, len(images), batch, world, device)

    restart_info, run = None, None
    if saved is not None:
        restart_info = saved.get("restart")
        run = start_run(candidate_seeds[restart_info["chosen"]] if restart_info else config.seed)
        run.generator.load_state_dict(saved["generator"])
        run.discriminator.load_state_dict(saved["discriminator"])
        run.opt_g.load_state_dict(saved["opt_g"])
        run.opt_d.load_state_dict(saved["opt_d"])
        run.order.load_state_dict(saved["batch_order"])
        ckpt.restore_rng_state(saved["rng"][world.rank], run.code_rng)
        run.step = saved["step"]
        if main:
            metrics.truncate(metrics_path, run.step)

    say(f"fastmi InfoGAN | data {data.name}: {len(images)} images {tuple(images.shape[1:])} | preset {config.preset}: "
        f"widths {config.widths.conv}/{config.widths.hidden}/{config.widths.q_hidden}, batch {config.batch_size}, "
        f"{config.steps} steps | device {device} x{world.size}, {torch.get_num_threads()} threads | "
        f"loss backend {config.loss_backend} -> {backend_name(config.loss_backend, device.type)}")
    say(f"codes: Cat({', '.join(map(str, spec.categorical))}) + {spec.continuous} uniform(-1,1) continuous "
        f"(Q: Gaussian, sigma {spec.std}) + {config.noise_dim} noise | out {out}"
        + (f" | resuming at step {run.step}" if run is not None and run.step else ""))

    def save_checkpoint(run: _Run):
        rng = distributed.gather_objects(ckpt.rng_state(run.code_rng), world)
        if main:
            state = {
                "format": ckpt.FORMAT, "config": config.as_dict(), "step": run.step, "world_size": world.size,
                "generator": run.generator.state_dict(), "discriminator": run.discriminator.state_dict(),
                "opt_g": run.opt_g.state_dict(), "opt_d": run.opt_d.state_dict(),
                "batch_order": run.order.state_dict(), "rng": rng,
            }
            if restart_info is not None:
                state["restart"] = restart_info
            ckpt.save_atomic(state, checkpoint_path)

    def draw_pictures(run: _Run, final: bool):
        title = f"{data.name}, step {run.step}"
        grid = os.path.join(out, SAMPLES_DIR, f"step-{run.step:06d}.png")
        plots.sample_grid(run.generator, spec, grid_noise, grid, title=title)
        if final:
            shutil.copyfile(grid, os.path.join(out, "samples.png"))
        plots.plot_metrics(metrics.read(metrics_path), spec, os.path.join(out, "mi.png"),
                            fixed_sigma_ceiling(spec))

    bar = _progress_bar(config.steps + extra_steps, (run.step + extra_steps) if run is not None else 0,
                        enabled=main and config.progress)

    def run_steps(run: _Run, until: int, kept: bool) -> Optional[dict]:
        """Trains ``run`` to step ``until``. A restart still on trial (``kept`` False)
        logs into ``run.records`` alone: no checkpoint, no picture, no accuracy."""
        G, DQ = run.wrapped(world)
        g_params = list(run.generator.parameters())
        means = metrics.RunningMeans(len(spec.categorical), spec.continuous)
        interval_started, record = time.perf_counter(), None
        while run.step < until:
            real = images[run.order.next().to(device)]
            codes, latent = sample_latents(spec, batch, config.noise_dim, run.code_rng)
            fake = G(latent)

            set_learning_rates((run.opt_g, run.opt_d), config, run.step)
            d_losses, fake_logits, q = discriminator_step(DQ, run.opt_d, real, fake, codes, spec,
                                                          config.info_trains_body, **loss_options)
            g_losses = generator_step(DQ, run.opt_g, g_params, fake, codes, spec, **loss_options)
            run.step += 1
            bar.update(1)

            means.add(d_losses.discriminator, g_losses.generator, d_losses.info, d_losses.stats,
                      metrics.continuous_code_bounds(fake_logits, q, codes, spec, config.loss_backend))
            if run.step % config.log_every == 0 or run.step == until:
                row = distributed.mean_over_ranks(means.means(), world).tolist()
                now = time.perf_counter()
                record = {"step": run.step, "interval": means.count, **means.record(row),
                          "steps_per_s": means.count / (now - interval_started), "elapsed_s": now - started}
                means.reset()
                if kept and main and (run.step % config.sample_every == 0 or run.step == config.steps):
                    # a progress monitor: the labels score the clusters, they never train anything
                    clusters = evaluation.predict_clusters(run.discriminator, images, spec)
                    record["accuracy"] = evaluation.cluster_accuracy(clusters, data.labels.numpy())[0]
                interval_started = time.perf_counter()
                if main:
                    if kept:
                        metrics.append(metrics_path, record)
                    else:
                        run.records.append(record)
                    bar.set_postfix_str(metrics.progress_text(record), refresh=False)
            if kept and (run.step % config.checkpoint_every == 0 or run.step == config.steps):
                save_checkpoint(run)
            if kept and main and run.step % config.sample_every == 0 and run.step != config.steps:
                draw_pictures(run, final=False)
                say(_log_line(record, config.steps))
        return record

    # ---- restarts: several starts on trial, one kept by a score that needs no labels -----
    if run is None and config.restarts > 1:
        trials = []
        for index, seed in enumerate(candidate_seeds):
            trial = start_run(seed)
            record = run_steps(trial, config.restart_steps, kept=False)
            trials.append(trial)
            say(f"restart {index + 1}/{config.restarts} (seed {seed}): step {trial.step} | "
                f"{metrics.progress_text(record)} (nats) | D/Q {record['loss_d']:.3f}")
        choice = choose_restart(trials, images, spec, config.restart_criterion) if main else None
        restart_info = distributed.gather_objects(choice, world)[0]
        run = trials[restart_info["chosen"]]
        del trials
        say(f"kept restart {restart_info['chosen'] + 1} of {config.restarts} (seed {run.seed}): "
            f"the highest {config.restart_criterion} ("
            + ", ".join(f"{v:.3f}" for v in restart_info["scores"]) + ")")
        if main:
            for record in run.records:
                metrics.append(metrics_path, record)
            evaluation.write_json(restart_info, os.path.join(out, RESTARTS_NAME))
    elif run is None:
        run = start_run(config.seed)

    # ---- the loop ---------------------------------------------------------------------
    last_record = run_steps(run, config.steps, kept=True)
    bar.close()
    if last_record is None and main:  # a resumed run that had no step left
        records = metrics.read(metrics_path)
        last_record = records[-1] if records else None

    # ---- the end: pictures, evaluation on the training data -----------------------------
    result = None
    if main:
        draw_pictures(run, final=True)
        if last_record is not None:
            say(_log_line(last_record, config.steps))
        if config.evaluate:
            result = evaluation.evaluate(run.generator, run.discriminator, spec, config.noise_dim, images,
                                         data.labels, dataset=data.name, seed=config.seed,
                                         backend=config.loss_backend)
            result["step"] = run.step
            if restart_info is not None:
                result["restart"] = restart_info
            evaluation.write_json(result, os.path.join(out, EVALUATION_NAME))
            for line in evaluation.summary_lines(result):
                say(line)
    wall = time.perf_counter() - started
    say(f"done in {wall:.0f} s: {out}/ holds metrics.jsonl, samples.png, mi.png, {ckpt.CHECKPOINT_NAME}"
        + (f", {EVALUATION_NAME}" if result else "") + (f", {RESTARTS_NAME}" if restart_info else ""))
    distributed.barrier(world)
    return TrainResult(config, run.step, run.generator, run.discriminator, last_record, result, wall)


class _Run:
    """One run's trainable state: what a checkpoint holds, bar the config. Built from
    ``seed`` alone: the weights (drawn from the global torch RNG, seeded here with the
    numpy and python ones), the data order and the latent stream of this rank."""

    def __init__(self, config: TrainConfig, seed: int, spec: LatentSpec, n_images: int, batch: int,
                 world: distributed.World, device: torch.device):
        torch.manual_seed(seed)
        np.random.seed(seed % 2 ** 32)
        random.seed(seed)
        self.seed, self.step, self.records = seed, 0, []
        self.order = BatchOrder(n_images, batch, seed, world.rank, world.size)
        self.generator, self.discriminator = build_models(config.widths, spec, config.noise_dim)
        self.generator.to(device)
        self.discriminator.to(device)
        self.opt_g, self.opt_d = make_optimizers(self.generator, self.discriminator, config)
        self.code_rng = torch.Generator(device=device).manual_seed(seed_for(seed, 1, world.rank))
        self._wrapped = None

    def wrapped(self, world: distributed.World):
        """``(G, DQ)`` for the steps: in DistributedDataParallel under torchrun, built once
        (a second wrapper would hook the same parameters again)."""
        if self._wrapped is None:
            self._wrapped = distributed.wrap(self.generator, world), distributed.wrap(self.discriminator, world)
        return self._wrapped


def restart_seeds(config: TrainConfig) -> list:
    """The seed of each restart: the run's own seed first (one restart is the plain run),
    then seeds derived from it."""
    return [config.seed] + [seed_for(config.seed, 3, i) % 2 ** 31 for i in range(1, config.restarts)]


def choose_restart(trials: list, images: torch.Tensor, spec: LatentSpec, criterion: str) -> dict:
    """Scores each restart on trial by ``criterion`` (higher is better; no labels) and
    returns ``{"criterion", "seeds", "steps", "scores", "chosen"}``."""
    if criterion in ("mi_c1", "jsd", "loss_d"):
        last = [t.records[-1] for t in trials]
        scores = {"mi_c1": [r["mi_categorical"][0] for r in last], "jsd": [r["jsd_bound"] for r in last],
                  "loss_d": [-r["loss_d"] for r in last]}[criterion]
    else:
        probs = [evaluation.cluster_probabilities(t.discriminator, images, spec) for t in trials]
        if criterion == "mi_real":
            scores = [evaluation.code_usage(p)["mi"] for p in probs]
        elif criterion == "consensus":
            clusters = [p.argmax(1).numpy() for p in probs]
            scores = [float(np.mean([evaluation.normalized_mutual_information(clusters[i], clusters[j])
                                     for j in range(len(trials)) if j != i])) for i in range(len(trials))]
        else:
            raise ValueError(f"restart criterion must be one of {RESTART_CRITERIA}, got {criterion!r}")
    return {"criterion": criterion, "seeds": [t.seed for t in trials], "steps": trials[0].step,
            "scores": [float(v) for v in scores], "chosen": int(np.argmax(scores))}


def _printer(enabled: bool):
    def say(line: str) -> None:
        if enabled:
            from tqdm import tqdm

            tqdm.write(line)
    return say


def _progress_bar(total: int, step: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=step, disable=not enabled, dynamic_ncols=True, unit="step",
                desc="InfoGAN")


def _log_line(record: Optional[dict], steps: int) -> str:
    if record is None:
        return ""
    accuracy = f" | cluster accuracy {record['accuracy']:.3f}" if "accuracy" in record else ""
    return (f"step {record['step']}/{steps} | D/Q {record['loss_d']:.3f} G {record['loss_g']:.3f} "
            f"info {record['loss_info']:.3f} | {metrics.progress_text(record)} (nats){accuracy} | "
            f"{record['steps_per_s']:.1f} steps/s")
