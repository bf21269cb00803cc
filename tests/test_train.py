"""The reference InfoGAN trainer: its gradient flow, learning, resuming, command line and
DistributedDataParallel."""

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from fastmi import LatentSpec, infogan_loss
from fastmi.train import checkpoint as ckpt
from fastmi.train import cli
from fastmi.train import metrics
from fastmi.train.config import TrainConfig, fixed_sigma_ceiling, preset
from fastmi.train.metrics import continuous_code_bounds
from fastmi.train.models import Widths, build_models
from fastmi.train.trainer import discriminator_step, generator_step, make_optimizers, sample_latents

SPEC = LatentSpec(categorical=(10,), continuous=2, std=1.0)
TINY = Widths(conv=(8, 16), hidden=32, q_hidden=16)


def _setup(seed=0, batch=16):
    torch.manual_seed(seed)
    generator, dq = build_models(TINY, SPEC)
    rng = torch.Generator().manual_seed(seed)
    codes, latent = sample_latents(SPEC, batch, 62, rng)
    real = torch.rand(batch, 1, 28, 28, generator=rng)
    return generator, dq, codes, latent, real


def _grads(module):
    return [None if p.grad is None else p.grad.clone() for p in module.parameters()]


# ---- gradient flow ---------------------------------------------------------------------

def test_d_step_optimizer_holds_the_body_and_both_heads():
    generator, dq, *_ = _setup()
    opt_g, opt_d = make_optimizers(generator, dq, preset("smoke"))
    in_d = {id(p) for group in opt_d.param_groups for p in group["params"]}
    in_g = {id(p) for group in opt_g.param_groups for p in group["params"]}
    for part in (dq.body, dq.d_head, dq.q_head):
        assert all(id(p) in in_d for p in part.parameters())
    assert in_d == {id(p) for p in dq.parameters()} and in_g == {id(p) for p in generator.parameters()}
    assert opt_d.param_groups[0]["lr"] == 2e-4 and opt_g.param_groups[0]["lr"] == 1e-3
    assert opt_d.param_groups[0]["betas"][0] == 0.5 == opt_g.param_groups[0]["betas"][0]


def test_info_loss_gradient_reaches_the_shared_body():
    """The D step's body gradient is the adversarial one plus the info loss's one; the
    latter is far from zero, and it changes the body's update."""
    generator, dq, codes, latent, real = _setup()
    # float64, so that the sum rule below holds to rounding (float32 leaves ~1e-5 noise
    # on the conv bias in front of batch norm, whose true gradient is zero)
    generator.double()
    dq.double()
    fake, real = generator(latent.double()), real.double()
    config = preset("smoke")

    def d_step(lambda_):
        model = copy.deepcopy(dq)
        _, opt_d = make_optimizers(generator, model, config)
        losses, _, _ = discriminator_step(model, opt_d, real, fake, codes, SPEC, lambda_cat=lambda_,
                                          lambda_cont=lambda_, backend="auto")
        return model, _grads(model.body), losses

    with_info, grads_full, losses = d_step(1.0)
    without_info, grads_adv, _ = d_step(0.0)
    # the info loss alone, differentiated by hand, on the same (pre-step) body
    model = copy.deepcopy(dq)
    _, fake_logits, q = model(real, fake.detach())
    info = infogan_loss(None, fake_logits, q, codes, SPEC).info
    grads_info = torch.autograd.grad(info, list(model.body.parameters()))
    assert float(info.detach()) > 0 and float(losses.info.detach()) == pytest.approx(float(info.detach()), rel=1e-12)
    for full, adv, inf in zip(grads_full, grads_adv, grads_info):
        torch.testing.assert_close(full, adv + inf, rtol=1e-9, atol=1e-12)
    info_norm = torch.sqrt(sum(g.square().sum() for g in grads_info))
    adv_norm = torch.sqrt(sum(g.square().sum() for g in grads_adv))
    assert info_norm > 0.05 * adv_norm > 0
    # and the step itself moves the body differently with the info term than without
    moved = [not torch.equal(a, b) for a, b in zip(with_info.body.parameters(), without_info.body.parameters())]
    assert sum(moved) >= len(moved) // 2


def test_g_step_updates_generator_only():
    generator, dq, codes, latent, real = _setup()
    config = preset("smoke")
    opt_g, _ = make_optimizers(generator, dq, config)
    before_d = copy.deepcopy(dq.state_dict())
    before_g = [p.clone() for p in generator.parameters()]
    losses = generator_step(dq, opt_g, list(generator.parameters()), generator(latent), codes, SPEC)
    assert all(p.grad is None for p in dq.parameters())  # no wasted D/Q weight gradients
    for k, v in dq.state_dict().items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(v, before_d[k]), k
    assert all(not torch.equal(a, b) for a, b in zip(before_g, generator.parameters()))
    # the G loss carries L_info: G is pushed to make its codes recognizable
    assert float(losses.generator.detach()) > float(losses.info.detach()) > 0


def test_continuous_bounds_add_up_to_the_loss_bound():
    generator, dq, codes, latent, real = _setup(batch=32)
    with torch.no_grad():
        _, fake_logits, q = dq(None, generator(latent))
    stats = infogan_loss(None, fake_logits, q, codes, SPEC).stats
    per_code = continuous_code_bounds(fake_logits, q, codes, SPEC, "auto")
    assert per_code.shape == (2,)
    torch.testing.assert_close(per_code.sum(), stats.mi_continuous, rtol=1e-5, atol=1e-6)
    ceiling = fixed_sigma_ceiling(LatentSpec(continuous=1, std=1.0))  # a fixed sigma = 1 caps the bound
    assert (per_code <= ceiling + 1e-6).all()


# ---- runs --------------------------------------------------------------------------------

def _run(argv):
    return cli.main(argv + ["--no-progress", "--threads", "1"])


def test_a_short_run_learns_the_categorical_code(tmp_path):
    """120 steps of the default preset at batch 32, one start, on the default data
    (about 15 s on 2 CPU cores); it fails when a change breaks the categorical code.
    Two things must happen, and neither reads a label:

    - the categorical MI bound H(c1) + E log Q(c1|x) on G's images climbs from about 0
      (Q knows nothing of c1; cross entropy = ln 10) toward H(c1) = ln 10 = 2.30;
    - Q's code means something on the real digits: the MI of image and code under Q,
      H(mean_x Q(c|x)) - mean_x H(Q(c|x)), rises above 0 (a Q that learned nothing of c1
      says the same for every digit), and the code is not collapsed onto a few values.

    Measured by benchmarks/train_short_check.py (the same run, in its own process; there
    on the reference loss backend) over seeds 0-4: the bound's first interval 0.12-0.15 nats and last 1.78-1.82, the MI on the
    real digits 0.077-0.111 and the entropy of Q's mean code 2.13-2.28 (of ln 10 = 2.30).
    With the categorical code fed to the loss shifted by one image in the batch (seeds
    0-2), the bound stayed at -0.01 and the MI on the real digits at 0.021-0.032. The test
    asks for a bound above 1.2 nats and 1 nat above its start, an MI on the real digits
    above 0.05 and an entropy above 1.8 (ln 6: a code that collapsed onto a few values
    fails)."""
    from fastmi.train import evaluate as ev
    from fastmi.train.datasets import load_dataset

    result = _run(["--steps", "120", "--batch-size", "32", "--restarts", "1", "--log-every", "10",
                   "--sample-every", "1000", "--checkpoint-every", "120", "--no-eval", "--out", str(tmp_path)])
    records = metrics.read(str(tmp_path / "metrics.jsonl"))
    first, last = records[0]["mi_categorical"][0], records[-1]["mi_categorical"][0]
    assert result.step == 120 and records[-1]["step"] == 120
    assert first < 0.4
    assert last > 1.2 and last - first > 1.0
    config, _, discriminator, _ = ckpt.load_models(str(tmp_path / "checkpoint.pt"))
    usage = ev.code_usage(ev.cluster_probabilities(discriminator, load_dataset(config.dataset).images, config.spec))
    assert usage["mi"] > 0.05, usage
    assert usage["h_marginal"] > 1.8, usage


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    common = ["--preset", "smoke", "--checkpoint-every", "4", "--log-every", "3", "--sample-every", "100",
              "--no-eval"]
    whole = _run(common + ["--steps", "12", "--out", str(tmp_path / "whole")])
    _run(common + ["--steps", "7", "--out", str(tmp_path / "parts")])
    # an interrupted run may have logged past its last checkpoint: the resume drops that
    with open(tmp_path / "parts" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 99, "stale": True}) + "\n")
    resumed = _run(["--resume", "--steps", "12", "--out", str(tmp_path / "parts"), "--no-eval"])
    assert resumed.step == whole.step == 12
    a, b = ckpt.load(str(tmp_path / "whole" / "checkpoint.pt")), ckpt.load(str(tmp_path / "parts" / "checkpoint.pt"))
    for part in ("generator", "discriminator"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resuming"
    for part in ("opt_g", "opt_d"):
        for idx, state in a[part]["state"].items():
            for k, v in state.items():
                assert torch.equal(v, b[part]["state"][idx][k]), f"{part} state {idx}.{k}"
    assert torch.equal(a["rng"][0]["codes"], b["rng"][0]["codes"]) and a["batch_order"] == b["batch_order"]
    records = metrics.read(str(tmp_path / "parts" / "metrics.jsonl"))
    assert [r["step"] for r in records] == [3, 6, 7, 9, 12] and not any("stale" in r for r in records)
    # the training data changed the weights: the equality above is not that of two untouched nets
    torch.manual_seed(0)
    fresh, _ = build_models(preset("smoke").widths, SPEC)
    assert not torch.equal(fresh.state_dict()["fc.0.weight"], a["generator"]["fc.0.weight"])


def _weights(path):
    saved = ckpt.load(str(path))
    return {f"{part}.{k}": v for part in ("generator", "discriminator") for k, v in saved[part].items()}


def test_the_kept_restart_goes_on_as_its_own_run_and_resumes(tmp_path):
    """Restarts: each start is a run of its own seed; the kept one trains on exactly as
    a plain run of that seed would (so a table of plain runs predicts what restarts
    keep), and a run resumed after the choice equals an uninterrupted one."""
    common = ["--preset", "smoke", "--restarts", "3", "--restart-steps", "4", "--checkpoint-every", "4",
              "--log-every", "2", "--sample-every", "100", "--no-eval"]
    whole = _run(common + ["--steps", "10", "--restart-criterion", "jsd", "--out", str(tmp_path / "whole")])
    choice = json.load(open(tmp_path / "whole" / "restarts.json"))
    assert choice["criterion"] == "jsd" and len(choice["seeds"]) == 3 and choice["steps"] == 4
    assert choice["seeds"][0] == 0 and len(set(choice["seeds"])) == 3  # the run's own seed first
    assert choice["chosen"] == max(range(3), key=choice["scores"].__getitem__)
    kept_seed = choice["seeds"][choice["chosen"]]
    plain = _run(["--preset", "smoke", "--seed", str(kept_seed), "--steps", "10", "--log-every", "2",
                  "--sample-every", "100", "--no-eval", "--out", str(tmp_path / "plain")])
    kept = _weights(tmp_path / "whole" / "checkpoint.pt")
    for name, value in _weights(tmp_path / "plain" / "checkpoint.pt").items():
        assert torch.equal(value, kept[name]), name
    records = metrics.read(str(tmp_path / "whole" / "metrics.jsonl"))
    assert [r["step"] for r in records] == [2, 4, 6, 8, 10]  # the kept start's own history
    assert records == [dict(r, elapsed_s=a["elapsed_s"], steps_per_s=a["steps_per_s"]) for r, a in
                       zip(metrics.read(str(tmp_path / "plain" / "metrics.jsonl")), records)]
    assert whole.step == plain.step == 10
    _run(common + ["--steps", "7", "--restart-criterion", "jsd", "--out", str(tmp_path / "parts")])
    assert json.load(open(tmp_path / "parts" / "restarts.json")) == choice
    _run(["--resume", "--steps", "10", "--no-eval", "--out", str(tmp_path / "parts")])
    resumed = _weights(tmp_path / "parts" / "checkpoint.pt")
    for name, value in kept.items():
        assert torch.equal(value, resumed[name]), name


def test_restart_choice_reads_no_labels(tmp_path, monkeypatch):
    """The same starts with the digits' labels shuffled: the same choice and scores, for
    each criterion that reads the real images (the labels only ever score the result)."""
    from fastmi.train import datasets, trainer

    real = datasets.load_dataset("mnist5k")
    shuffled = real._replace(labels=real.labels[torch.randperm(len(real.labels),
                                                               generator=torch.Generator().manual_seed(1))])
    for criterion in ("consensus",):
        choices = []
        for data in (real, shuffled):
            monkeypatch.setattr(trainer, "load_dataset", lambda *args, data=data: data)
            out = tmp_path / f"{criterion}-{len(choices)}"
            _run(["--preset", "smoke", "--restarts", "3", "--restart-steps", "6", "--steps", "7", "--no-eval",
                  "--restart-criterion", criterion, "--out", str(out)])
            choices.append(json.load(open(out / "restarts.json")))
        assert choices[0] == choices[1]


def test_run_writes_its_outputs(tmp_path):
    result = _run(["--preset", "smoke", "--steps", "6", "--log-every", "2", "--sample-every", "4",
                   "--checkpoint-every", "4", "--out", str(tmp_path)])
    records = metrics.read(str(tmp_path / "metrics.jsonl"))
    assert [r["step"] for r in records] == [2, 4, 6]
    for key in ("loss_d", "loss_g", "loss_info", "jsd_bound", "mi_continuous_total", "steps_per_s"):
        assert isinstance(records[-1][key], float)
    assert len(records[-1]["mi_categorical"]) == 1 and len(records[-1]["mi_continuous"]) == 2
    assert records[-1]["mi_categorical"][0] <= 2.303 and records[-1]["steps_per_s"] > 0
    for name in ("samples.png", "mi.png", "samples/step-000004.png", "samples/step-000006.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]  # atomic writes left no temp file
    evaluation = json.load(open(tmp_path / "evaluation.json"))
    assert 0.0 <= evaluation["accuracy"] <= 1.0 and evaluation["images"] == 5000
    assert result.evaluation["accuracy"] == evaluation["accuracy"]


def test_checkpoint_write_is_atomic(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    ckpt.save_atomic({"format": ckpt.FORMAT, "step": 1}, path)
    with pytest.raises(Exception):
        ckpt.save_atomic({"format": ckpt.FORMAT, "step": 2, "bad": lambda: None}, path)  # cannot pickle
    assert ckpt.load(path)["step"] == 1  # the old checkpoint survives a failed write
    assert os.listdir(tmp_path) == ["checkpoint.pt"]
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a readable checkpoint"):
        ckpt.load(str(tmp_path / "junk.pt"))


# ---- faults: a bad --out, a killed checkpoint write, a damaged checkpoint --------------------

def _bad_out_dirs(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    # /proc itself: an existing folder that takes no files, even from root, who writes
    # through a mode 0555 folder; below it, a folder that cannot be made
    return {"read-only folder": str(read_only), "/proc": "/proc", "under /proc": "/proc/fastmi-train-run",
            "below a file": str(a_file / "run"), "a file": str(a_file)}


@pytest.mark.parametrize("case", ["read-only folder", "/proc", "under /proc", "below a file", "a file"])
def test_unwritable_out_is_a_one_line_error_before_training(case, tmp_path, capsys, monkeypatch):
    """Before the check, a read-only --out (or /proc) trained until its first metrics
    line and died there with a traceback; below a file or under /proc, os.makedirs
    raised one. Now each is one line, before the data is even read."""
    out = _bad_out_dirs(tmp_path)[case]
    if case == "read-only folder":
        try:  # root writes through permission bits: nothing to check there
            (tmp_path / "read-only" / "probe").write_text("")
            pytest.skip("this user can write to a mode 0555 folder (root)")
        except PermissionError:
            pass
    from fastmi.train import trainer

    def no_data(*args, **kwargs):
        raise AssertionError("the run read its data: the --out check came too late")

    monkeypatch.setattr(trainer, "load_dataset", no_data)
    with pytest.raises(SystemExit) as e:
        _run(["--preset", "smoke", "--steps", "10", "--log-every", "1", "--no-eval", "--out", out])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith(f"fastmi.train: error: --out {out}: "), err


KILLED_WRITE = textwrap.dedent("""
    import os, signal, sys
    from fastmi.train import checkpoint
    # SIGKILL after the temporary file is written, before it replaces the checkpoint
    os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.save_atomic({"format": checkpoint.FORMAT, "step": 99}, sys.argv[1])
""")


def test_a_killed_checkpoint_write_leaves_no_temporary_file_after_the_next_start(tmp_path, capsys):
    out = tmp_path / "run"
    _run(["--preset", "smoke", "--steps", "2", "--no-eval", "--out", str(out)])
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(out / "checkpoint.pt")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    stale = [n for n in os.listdir(out) if n.startswith(".tmp-") and n.endswith(".pt")]
    assert len(stale) == 1  # what the killed write left
    capsys.readouterr()
    result = _run(["--resume", "--steps", "4", "--no-eval", "--out", str(out)])
    assert result.step == 4  # the checkpoint the kill interrupted survived whole, and resumed
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]
    assert f"removed {out / stale[0]}" in capsys.readouterr().out  # tqdm.write prints to stdout


def _same(a, b) -> bool:
    """Deep equality of checkpoint contents: dicts, sequences, tensors, numpy arrays."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
            and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a).__module__ == "numpy":
        import numpy as np

        return type(b).__module__ == "numpy" and np.array_equal(a, b)
    return a == b


def test_a_flipped_byte_in_a_checkpoint_is_refused(tmp_path, capsys):
    """torch's zip reader checks no CRC: before the checksum, a byte flipped in a weight
    loaded silently as a different weight. Now no flipped byte, wherever it lands, loads
    anything but the original contents: it raises, or (in bytes torch never reads) the
    load is unchanged."""
    out = tmp_path / "run"
    _run(["--preset", "smoke", "--steps", "2", "--no-eval", "--out", str(out)])
    path = out / "checkpoint.pt"
    clean = path.read_bytes()
    original = ckpt.load(str(path))
    damaged = tmp_path / "damaged.pt"

    def load_flipped(position):
        data = bytearray(clean)
        data[position] ^= 0x10
        damaged.write_bytes(bytes(data))
        return ckpt.load(str(damaged))

    # the middle of the file lies in the tensor bytes, in either layout
    with pytest.raises(ValueError, match="corrupted checkpoint: its contents do not match the SHA-256"):
        load_flipped(len(clean) // 2)
    silent = []
    for position in range(0, len(clean), max(1, len(clean) // 300)):
        try:
            loaded = load_flipped(position)
        except ValueError:
            continue
        if not _same(loaded, original):
            silent.append(position)
    assert not silent, f"flipped bytes at {silent[:10]} loaded as different contents"
    # the command line refuses it in one line
    damaged.replace(path)
    path.write_bytes(bytes(clean[:len(clean) // 2]) + bytes([clean[len(clean) // 2] ^ 1])
                     + bytes(clean[len(clean) // 2 + 1:]))
    with pytest.raises(SystemExit):
        cli.parse_config(["--resume", "--out", str(out)])
    assert "corrupted checkpoint" in capsys.readouterr().err


def test_checkpoints_of_format_1_still_load(tmp_path):
    """Written before the checksum: the state itself, no wrapper. They load, unverified."""
    path = tmp_path / "old.pt"
    torch.save({"format": ckpt.LEGACY_FORMAT, "step": 3, "w": torch.ones(2)}, path)
    assert ckpt.load(str(path))["step"] == 3


# ---- the command line ----------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--batch-size", "1"], "--batch-size must be >= 2"),
    (["--lr-d", "-1"], "--lr-d must be a finite number > 0"),
    (["--lr-g", "nan"], "--lr-g must be a finite number > 0"),
    (["--lambda-cat", "-0.5"], "--lambda-cat must be a finite number >= 0"),
    (["--log-every", "0"], "--log-every must be >= 1"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--dataset", "mnist"], "--dataset mnist needs --data-dir DIR"),
    (["--data-dir", "/nonexistent/mnist"], "--data-dir /nonexistent/mnist: no such directory"),
    (["--split", "test"], "--data-dir and --split apply to --dataset mnist, not to --dataset mnist5k"),
    (["--dataset", "digits", "--split", "train"], "apply to --dataset mnist, not to --dataset digits"),
    (["--preset", "huge"], "invalid choice: 'huge'"),
    (["--loss-backend", "cuda", "--device", "cpu"], "--loss-backend cuda cannot run on cpu here"),
    (["--device", "tpu"], "--device must be cpu or cuda"),
    (["--resume", "--overwrite"], "--resume and --overwrite exclude each other"),
    (["--steps", "ten"], "invalid int value: 'ten'"),
])
def test_bad_arguments_get_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_config(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_device_without_cuda_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        cli.parse_config(["--device", "cuda"])
    assert "CUDA is not available here" in capsys.readouterr().err


def test_presets():
    fast, paper = preset("fast"), preset("paper")
    assert paper.widths == Widths.paper() and paper.batch_size == 128 and paper.steps == 5000
    assert fast.widths.conv[0] < paper.widths.conv[0] and fast.steps < paper.steps
    for config in (fast, paper):
        assert (config.lr_d, config.lr_g, config.beta1, config.noise_dim) == (2e-4, 1e-3, 0.5, 62)
        assert config.spec == LatentSpec(categorical=(10,), continuous=2, continuous_prior="uniform", std=1.0)
    config, resume, overwrite = cli.parse_config(["--preset", "paper", "--steps", "7", "--out", "x"])
    assert (config.preset, config.steps, config.batch_size, config.out, resume) == ("paper", 7, 128, "x", False)
    assert TrainConfig.from_dict(config.as_dict()) == config


def test_existing_run_and_resume_mismatch_are_clear_errors(tmp_path, capsys):
    out = str(tmp_path / "run")
    _run(["--preset", "smoke", "--steps", "2", "--no-eval", "--out", out])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        _run(["--preset", "smoke", "--steps", "2", "--out", out])
    assert e.value.code == 2 and "already holds a run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.parse_config(["--resume", "--lr-g", "0.1", "--out", out])
    err = capsys.readouterr().err
    assert "a resumed run keeps the settings of its checkpoint" in err and "lr_g" in err
    with pytest.raises(SystemExit):
        cli.parse_config(["--resume", "--out", str(tmp_path / "empty")])
    assert "no checkpoint at" in capsys.readouterr().err
    config, resume, _ = cli.parse_config(["--resume", "--steps", "5", "--out", out])
    assert resume and config.steps == 5 and config.preset == "smoke" and config.batch_size == 16


def test_module_entry_point_runs():
    """``python -m fastmi.train`` is wired up (--help exits before any training)."""
    out = subprocess.run([sys.executable, "-m", "fastmi.train", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "--loss-backend" in out.stdout and "--resume" in out.stdout


# ---- DistributedDataParallel ------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import os, sys, torch
    from fastmi.train import cli
    out = sys.argv[1]
    result = cli.main(["--preset", "smoke", "--steps", "4", "--batch-size", "16", "--device", "cpu",
                       "--log-every", "2", "--sample-every", "100", "--no-eval", "--no-progress",
                       "--out", out])
    torch.save({"generator": result.generator.state_dict(), "discriminator": result.discriminator.state_dict()},
               os.path.join(out, "rank%s.pt" % os.environ["RANK"]))
""")


def test_ddp_two_cpu_processes_keep_identical_parameters(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(worker), str(out)], capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt") for r in range(2)]
    saved = ckpt.load(str(out / "checkpoint.pt"))
    assert saved["world_size"] == 2 and len(saved["rng"]) == 2
    # the ranks drew different latents, yet all-reduced gradients keep them in lockstep
    assert not torch.equal(saved["rng"][0]["codes"], saved["rng"][1]["codes"])
    for part in ("generator", "discriminator"):
        for k, v in ranks[0][part].items():
            if "running" in k or "num_batches" in k:
                continue  # batch-norm statistics are per rank (rank 0's are broadcast each forward)
            assert torch.equal(v, ranks[1][part][k]), f"{part}.{k} differs between ranks"
            assert torch.equal(v, saved[part][k])
    torch.manual_seed(0)
    fresh, _ = build_models(preset("smoke").widths, SPEC)
    assert not torch.equal(fresh.state_dict()["fc.0.weight"], ranks[0]["generator"]["fc.0.weight"])
    records = metrics.read(str(out / "metrics.jsonl"))
    assert [r["step"] for r in records] == [2, 4]
