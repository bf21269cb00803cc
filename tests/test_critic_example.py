"""``python -m fastmi.examples.mi_staircase`` runs end to end (a few iterations per step,
so that it cannot rot) and the closed form of the data is right."""

import math

import pytest
import torch

from fastmi.examples import mi_staircase


def test_rho_gives_the_true_mi():
    for mi in mi_staircase.LEVELS:
        rho = mi_staircase.rho_for(mi, 20)
        assert -10 * math.log(1 - rho * rho) == pytest.approx(mi, rel=1e-12)


def test_samples_have_the_correlation():
    rho = mi_staircase.rho_for(6.0, 20)
    x, y = mi_staircase.sample(200_000, 20, rho, torch.Generator().manual_seed(0))
    corr = ((x * y).mean(0) / (x.std(0) * y.std(0))).mean()
    assert abs(float(corr) - rho) < 0.01


def test_runs_and_saves(tmp_path, capsys):
    mi_staircase.main(["--steps-per-level", "4", "--estimators", "infonce", "smile", "siglip", "--out",
                       str(tmp_path)])
    printed = capsys.readouterr().out
    assert "| InfoNCE (CPC) |" in printed and "| SMILE (tau = 5) |" in printed and "log 64 = 4.16" in printed
    assert (tmp_path / "mi_staircase.png").stat().st_size > 10_000
    table = (tmp_path / "mi_staircase.md").read_text()
    assert table.count("\n| ") == 4  # the header and three estimators
