"""Small MNIST IDX files for the data and evaluation tests."""

from __future__ import annotations

import os

import numpy as np

from fastmi.train.idx import write_idx


def images(n, seed=0):
    """n random 28x28 uint8 images."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def write_mnist(folder, split="train", n=12, compress=False, layout="flat", seed=0):
    """Writes a small MNIST split (labels 0, 1, ..., 9, 0, ...); returns (images, labels)."""
    prefix = {"train": "train", "test": "t10k"}[split]
    folder = os.path.join(folder, "MNIST", "raw") if layout == "torchvision" else folder
    os.makedirs(folder, exist_ok=True)
    pixels = images(n, seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    ext = ".gz" if compress else ""
    write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte{ext}"), pixels, compress)
    write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{ext}"), labels, compress)
    return pixels, labels
