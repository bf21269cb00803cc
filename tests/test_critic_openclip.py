"""critic_bound against the real thing: OpenCLIP's ClipLoss and SigLipLoss
(open_clip/loss.py of open-clip-torch 3.3.0), values and gradients of the features, the
logit scale and the bias; in one process and in two gloo processes in OpenCLIP's own
distributed modes (ClipLoss with local_loss=True, gather_with_grad=True; every dist_impl
of SigLipLoss).

open_clip/loss.py imports only torch, but the package's __init__ pulls torchvision and a
CUDA torch, so the file is loaded by path and the package is never imported. It is
found in a wheel that ``pip download --no-deps open-clip-torch==3.3.0 -d .whl`` put in
the repository's .whl/ (or in the folder FASTMI_OPENCLIP_WHEELS names), or in an
installed ``pip install --no-deps open-clip-torch==3.3.0``; without either the tests skip
and say so.
"""

import importlib.metadata
import importlib.util
import math
import os
import types
import zipfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import fastmi
from critic_helpers import WORLD, assert_close, random_pair, run_workers

VERSION = "3.3.0"
WHEELS = Path(os.environ.get("FASTMI_OPENCLIP_WHEELS", Path(__file__).resolve().parents[1] / ".whl"))
HOW = (f"`pip download --no-deps open-clip-torch=={VERSION} -d .whl` in the repository "
       f"(or `pip install --no-deps open-clip-torch=={VERSION}`)")
F64 = torch.float64
SIGLIP_MODES = ("bidir", "shift", "reduce", "gather")


def load_openclip_loss():
    """open_clip/loss.py of open-clip-torch 3.3.0 as a module, or None when it is not here."""
    for wheel in sorted(WHEELS.glob(f"open_clip_torch-{VERSION}-*.whl")):
        source = zipfile.ZipFile(wheel).read("open_clip/loss.py")
        return _module(source, f"{wheel}/open_clip/loss.py")
    try:
        installed = importlib.metadata.version("open_clip_torch")
    except importlib.metadata.PackageNotFoundError:
        return None
    spec = importlib.util.find_spec("open_clip")  # finds the package without running its __init__
    if installed != VERSION or spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "loss.py"
    return _module(path.read_bytes(), str(path))


def _module(source: bytes, origin: str):
    module = types.ModuleType("open_clip_loss")
    module.__file__ = origin
    exec(compile(source, origin, "exec"), module.__dict__)
    return module


openclip = load_openclip_loss()
pytestmark = pytest.mark.skipif(openclip is None, reason=f"OpenCLIP {VERSION}'s loss.py is not here: run {HOW}")


def features(rows, dim=8, seed=0, dtype=F64):
    """Unit-norm image and text features, paired by row, as CLIP's towers emit them."""
    image, text = random_pair(rows, rows, dim, dtype=dtype, seed=seed, signal=2.0)
    return F.normalize(image, dim=-1), F.normalize(text, dim=-1)


def compare(ours_fn, theirs_fn, image, text, log_scale, bias):
    """Runs both on leaf copies: ``fn(image, text, scale, bias)``, with scale = exp(log
    scale) as CLIP feeds it; returns {name: (ours, theirs)} for the loss and the gradients
    of image, text, log scale and bias."""
    results = []
    for fn in (ours_fn, theirs_fn):
        leaves = [t.detach().clone().requires_grad_() for t in (image, text, log_scale)]
        leaf_bias = None if bias is None else bias.detach().clone().requires_grad_()
        loss = fn(leaves[0], leaves[1], leaves[2].exp(), leaf_bias)
        loss.backward()
        grads = [t.grad for t in leaves] + [None if leaf_bias is None else leaf_bias.grad]
        results.append(dict(zip(("loss", "image", "text", "log_scale", "bias"), [loss.detach()] + grads)))
    return {name: (results[0][name], results[1][name]) for name in results[0]}


def assert_same(pairs, scores: float, where=""):
    """Both within the tolerance of their dtype, loosened by ``scores``, the magnitude of
    the scores: two float32 implementations each round scores of that size."""
    for name, (ours, theirs) in pairs.items():
        if theirs is None:
            assert ours is None, f"{where} {name}"
            continue
        # the loss: formed from scores of that size; log scale and bias: sums of O(1) terms
        floor = {"loss": scores, "log_scale": 1.0, "bias": 1.0}.get(name, 0.0)
        assert_close(ours, theirs, f"{where} {name}", floor=floor, amplify=max(scores, 1.0))


def clip_ours(image, text, scale, bias, **kw):
    return fastmi.critic_bound(image, text, estimator="infonce", symmetric=True, scale=scale, bias=bias, **kw).loss


def siglip_ours(image, text, scale, bias, **kw):
    return fastmi.critic_bound(image, text, estimator="siglip", scale=scale, bias=bias, **kw).loss


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=str)
@pytest.mark.parametrize("backend", ["reference", "tiled"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
def test_clip_loss(with_bias, backend, dtype):
    image, text = features(12, seed=1, dtype=dtype)
    log_scale = torch.tensor(math.log(1 / 0.07), dtype=dtype)
    bias = torch.tensor(-0.5, dtype=dtype) if with_bias else None
    pairs = compare(lambda *a: clip_ours(*a, backend=backend),
                    lambda i, t, s, b: openclip.ClipLoss()(i, t, s, logit_bias=b), image, text, log_scale, bias)
    assert_same(pairs, scores=1 / 0.07 + 0.5)


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=str)
@pytest.mark.parametrize("backend", ["reference", "tiled"])
def test_siglip_loss(backend, dtype):
    image, text = features(12, seed=2, dtype=dtype)
    pairs = compare(lambda *a: siglip_ours(*a, backend=backend), openclip.SigLipLoss(), image, text,
                    torch.tensor(math.log(10.0), dtype=dtype), torch.tensor(-10.0, dtype=dtype))
    assert_same(pairs, scores=20.0)


@pytest.mark.parametrize("estimator", ["infonce", "siglip"])
def test_normalize_inside_matches_normalized_features(estimator):
    """normalize=True on raw features == OpenCLIP on F.normalize(features), gradients of
    the raw features included."""
    raw_image, raw_text = random_pair(10, 10, 6, dtype=F64, seed=3, signal=2.0)
    raw_image, raw_text = 3.0 * raw_image, 0.5 * raw_text  # rows of all sorts of norms
    log_scale, bias = torch.tensor(math.log(10.0), dtype=F64), torch.tensor(-3.0, dtype=F64)
    if estimator == "infonce":
        ours, theirs = clip_ours, (lambda i, t, s, b: openclip.ClipLoss()(i, t, s, logit_bias=b))
    else:
        ours, theirs = siglip_ours, openclip.SigLipLoss()
    pairs = compare(lambda *a: ours(*a, normalize=True),
                    lambda i, t, s, b: theirs(F.normalize(i, dim=-1), F.normalize(t, dim=-1), s, b),
                    raw_image, raw_text, log_scale, bias)
    assert_same(pairs, scores=13.0)


@pytest.mark.parametrize("estimator", ["infonce", "siglip"])
def test_module_starts_as_clip_and_siglip(estimator):
    """CriticBound's scale (and bias) start where OpenCLIP's models start them
    (logit_scale = log(1 / 0.07); SigLIP: log 10 and -10) and train the same way."""
    module = fastmi.CriticBound(estimator, symmetric=estimator == "infonce")
    image, text = features(8, seed=4)
    if estimator == "infonce":
        assert module.log_scale.item() == pytest.approx(math.log(1 / 0.07)) and module.bias is None
        theirs = openclip.ClipLoss()(image, text, torch.tensor(math.log(1 / 0.07)).exp())
    else:
        assert module.log_scale.item() == pytest.approx(math.log(10.0)) and module.bias.item() == -10.0
        theirs = openclip.SigLipLoss()(image, text, torch.tensor(math.log(10.0)).exp(), torch.tensor(-10.0))
    ours = module(image.float(), text.float())
    assert_close(ours.loss, theirs.float(), "loss", floor=20.0)
    ours.loss.backward()
    assert module.log_scale.grad is not None


# ---- two gloo processes -------------------------------------------------------------------

ROWS = 6  # per rank


def _worker(rank):
    module = load_openclip_loss()
    rows = slice(rank * ROWS, (rank + 1) * ROWS)
    image, text = (t[rows] for t in features(WORLD * ROWS, seed=5))
    log_scale, bias = torch.tensor(math.log(1 / 0.07), dtype=F64), torch.tensor(-0.4, dtype=F64)
    group = dist.group.WORLD
    results = {}
    for backend in ("reference", "tiled"):
        clip = module.ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=WORLD)
        results["clip", backend] = compare(
            lambda *a: clip_ours(*a, backend=backend, group=group),
            lambda i, t, s, b: clip(i, t, s, logit_bias=b), image, text, log_scale, bias)
        for mode in SIGLIP_MODES:
            siglip = module.SigLipLoss(rank=rank, world_size=WORLD, dist_impl=mode)
            results[f"siglip-{mode}", backend] = compare(
                lambda *a: siglip_ours(*a, backend=backend, group=group), siglip, image, text,
                torch.tensor(math.log(10.0), dtype=F64), torch.tensor(-10.0, dtype=F64))
    return results


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("openclip-gloo")
    return run_workers(_worker, folder)


@pytest.mark.parametrize("backend", ["reference", "tiled"])
@pytest.mark.parametrize("mode", ["clip"] + [f"siglip-{m}" for m in SIGLIP_MODES])
def test_two_processes(ranks, mode, backend):
    """Each rank's loss and gradients (local features, log scale, bias) equal OpenCLIP's
    on that rank."""
    for rank, results in enumerate(ranks):
        assert_same(results[mode, backend], scores=20.0, where=f"rank {rank}")
