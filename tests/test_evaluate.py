"""``fastmi.evaluate``: Hungarian clustering accuracy, NMI, and the command line."""

import json
import os

import numpy as np
import pytest

from fastmi.train import evaluate as ev
from fastmi.train import cli
from mnist_files import write_mnist


def test_cluster_accuracy_is_invariant_to_relabelling():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=500)
    permutation = rng.permutation(10)
    accuracy, mapping = ev.cluster_accuracy(permutation[labels], labels)
    assert accuracy == 1.0
    assert all(mapping[permutation[d]] == d for d in range(10))


def test_cluster_accuracy_uses_a_one_to_one_matching():
    # clusters 0 and 1 both hold mostly digit 7; a one-to-one matching gives only one
    # of them to 7, so the accuracy is (3 + 2) / 7, not the (3 + 2 + 1) / 7 of a
    # many-to-one majority vote.
    clusters = np.array([0, 0, 0, 1, 1, 1, 1])
    labels = np.array([7, 7, 7, 7, 3, 3, 5])
    accuracy, mapping = ev.cluster_accuracy(clusters, labels)
    assert accuracy == pytest.approx(5 / 7)
    assert mapping[0] == 7 and mapping[1] == 3
    with pytest.raises(ValueError, match="equal non-empty 1-d arrays"):
        ev.cluster_accuracy(np.array([0, 1]), np.array([0]))


def test_nmi_matches_scikit_learn():
    from sklearn.metrics import normalized_mutual_info_score

    rng = np.random.default_rng(1)
    for _ in range(5):
        labels = rng.integers(0, 10, size=400)
        clusters = np.where(rng.random(400) < 0.7, labels, rng.integers(0, 10, size=400))
        assert ev.normalized_mutual_information(clusters, labels) == pytest.approx(
            normalized_mutual_info_score(labels, clusters), abs=1e-10)
    labels = rng.integers(0, 10, size=400)
    assert ev.normalized_mutual_information(labels, labels) == pytest.approx(1.0)
    assert ev.normalized_mutual_information(rng.integers(0, 10, size=20000), labels.repeat(50)) < 0.01


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint of a few smoke-preset steps, and a small MNIST test split on disk."""
    root = tmp_path_factory.mktemp("eval")
    cli.main(["--preset", "smoke", "--steps", "4", "--no-eval", "--no-progress", "--threads", "1",
              "--out", str(root / "run")])
    data = root / "mnist"
    write_mnist(str(data), "test", n=40, compress=True)
    return root / "run" / "checkpoint.pt", data


def test_evaluate_command_on_the_mnist_test_split(trained, capsys, tmp_path):
    checkpoint, data = trained
    out = tmp_path / "result.json"
    result = ev.main(["--checkpoint", str(checkpoint), "--dataset", "mnist", "--data-dir", str(data),
                      "--split", "test", "--mi-samples", "200", "--batch-size", "100", "--out", str(out)])
    printed = capsys.readouterr().out
    accuracy_line = [line for line in printed.splitlines() if "accuracy" in line]
    assert len(accuracy_line) == 1 and f"{result['accuracy']:.4f}" in accuracy_line[0]
    saved = json.loads(out.read_text())
    assert saved["dataset"] == "mnist-test" and saved["images"] == 40 and saved["step"] == 4
    # 40 images over 10 clusters: the matched accuracy is at least that of the largest cluster's match
    assert 0.1 <= saved["accuracy"] <= 1.0 and 0.0 <= saved["nmi"] <= 1.0
    assert sum(saved["cluster_sizes"]) == 40 and sorted(saved["cluster_to_label"]) == list(range(10))
    bounds = saved["mi_bounds"]
    assert len(bounds["mi_categorical"]) == 1 and len(bounds["mi_continuous"]) == 2
    assert bounds["mi_categorical"][0] <= np.log(10) and bounds["samples"] == 200
    assert bounds["entropy_categorical"] == [pytest.approx(np.log(10))]


def test_evaluate_defaults_to_the_checkpoints_data_and_folder(trained, capsys):
    checkpoint, _ = trained
    result = ev.main(["--checkpoint", str(checkpoint), "--mi-samples", "100", "--batch-size", "100"])
    assert result["dataset"] == "mnist5k" and result["images"] == 5000
    assert os.path.isfile(checkpoint.parent / "evaluation-mnist5k.json")
    assert "accuracy" in capsys.readouterr().out


def test_evaluate_errors_name_the_problem(trained, capsys, tmp_path):
    checkpoint, data = trained
    with pytest.raises(SystemExit):
        ev.main(["--checkpoint", str(tmp_path / "missing.pt")])
    assert "missing.pt: no such checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ev.main(["--checkpoint", str(checkpoint), "--dataset", "mnist", "--data-dir", str(data), "--split", "train"])
    assert "MNIST train images: no file train-images-idx3-ubyte" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    raw = (data / "t10k-images-idx3-ubyte.gz").read_bytes()
    (broken / "t10k-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    (broken / "t10k-labels-idx1-ubyte.gz").write_bytes((data / "t10k-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(SystemExit):
        ev.main(["--checkpoint", str(checkpoint), "--data-dir", str(broken), "--split", "test"])
    err = capsys.readouterr().err
    assert "t10k-images-idx3-ubyte.gz" in err and "truncated or corrupt" in err
    with pytest.raises(SystemExit):
        ev.main(["--checkpoint", str(checkpoint), "--split", "test", "--dataset", "digits"])
    assert "apply to --dataset mnist" in capsys.readouterr().err
