"""pytest-benchmark suite: one whole InfoGAN training step with the loss of each provider.

    pytest benchmarks/bench_e2e.py --benchmark-only

One step is what the reference trainer's loop does per batch (fastmi/train/trainer.py):
G(z, c) on a fixed latent batch, then ``discriminator_step`` (D/Q update on
L_D_adv + L_info) and ``generator_step`` (G update on L_G_adv + L_info), with the
trainer's own functions, networks (fastmi/train/models.py at the InfoGAN paper's
widths), spec (Cat(10) + 2 continuous codes, fixed sigma), loss weights and fused Adam
optimizers, at B = 64 on 28x28 images. Providers: the eager reference, each fused
backend, and torch.compile of the reference loss (the trainer's ``infogan_loss``
replaced by the compiled function for that test). The step's time shows what the fused
loss buys in a whole step, not only in isolation. At least 15 timed steps (one per
round) after two warm-up steps.
"""

from __future__ import annotations

from typing import Optional

import torch

from fastmi.bench import providers as P
from fastmi.infogan.api import infogan_loss
from fastmi.train import trainer
from fastmi.train.config import preset
from fastmi.train.models import build_models

BATCH = 64
MIN_ROUNDS = 15  # a CPU step takes about 0.4 s, in which the loss is a fraction of a ms: a steady median
_eager_first_step: Optional[tuple] = None  # the eager provider's (D, G) losses of the first step


def _setup(device: str, provider: str):
    config = preset("paper", batch_size=BATCH)
    spec = config.spec
    torch.manual_seed(0)
    generator, discriminator = build_models(config.widths, spec, config.noise_dim)
    generator.to(device)
    discriminator.to(device)
    opt_g, opt_d = trainer.make_optimizers(generator, discriminator, config)
    rng = torch.Generator(device=device).manual_seed(0)
    real = torch.rand(BATCH, 1, 28, 28, generator=rng, device=device)
    codes, latent = trainer.sample_latents(spec, BATCH, config.noise_dim, rng)
    backend = "reference" if provider == "eager" or provider in P.COMPILE_MODES else provider
    options = dict(lambda_cat=config.lambda_cat, lambda_cont=config.lambda_cont, backend=backend)
    g_params = list(generator.parameters())

    def step():
        fake = generator(latent)
        d_losses, _, _ = trainer.discriminator_step(discriminator, opt_d, real, fake, codes, spec, **options)
        g_losses = trainer.generator_step(discriminator, opt_g, g_params, fake, codes, spec, **options)
        return d_losses.discriminator.detach(), g_losses.generator.detach()

    return config, generator, discriminator, step


def test_train_step(benchmark, e2e_provider, bench_env, bench_tools, monkeypatch):
    record, rounds_for = bench_tools
    device = bench_env["device"]
    if e2e_provider in P.COMPILE_MODES:
        monkeypatch.setattr(trainer, "infogan_loss", P.compile_fn(infogan_loss, P.COMPILE_MODES[e2e_provider]))
    config, generator, discriminator, step = _setup(device, e2e_provider)
    spec = config.spec

    # the first step from the seeded start: every provider's losses match the eager one's
    before = [p.detach().clone() for p in (*generator.parameters(), *discriminator.parameters())]
    first = step()
    global _eager_first_step
    if _eager_first_step is None:
        _eager_first_step = _setup(device, "eager")[-1]() if e2e_provider != "eager" else first
    torch.testing.assert_close(torch.stack(first), torch.stack(_eager_first_step), rtol=1e-3, atol=1e-4,
                               msg=lambda m: f"{e2e_provider}: first step's (D, G) losses differ from eager: {m}")
    after = list((*generator.parameters(), *discriminator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before, after)), "a step left some parameters unchanged"

    rounds = 1
    if not benchmark.disabled:
        rounds = max(MIN_ROUNDS, rounds_for(P.warm_up(P.Runner(step, None, "losses"), calls=2)))
    benchmark.group = f"train step B={BATCH}"
    losses = benchmark.pedantic(step, rounds=rounds)
    assert all(bool(torch.isfinite(t)) for t in losses)
    record(benchmark, {**bench_env, "kind": "e2e", "op": "train_step", "provider": e2e_provider,
                       "base_provider": e2e_provider, "cuda_graph": False, "spec": "mnist-trainer",
                       "spec_label": "MNIST trainer (paper widths)", "spec_repr": repr(spec),
                       "q_width": spec.q_width, "batch": BATCH, "dtype": "float32",
                       "widths": config.widths.as_dict()}, 0)
