"""The trainer's data layer: the IDX reader, the MNIST file finder, the three datasets
and the resumable batch order."""

import gzip

import numpy as np
import pytest
import torch

from fastmi.train.batches import BatchOrder
from fastmi.train.datasets import find_mnist_file, load_dataset, load_digits, load_mnist, load_mnist5k
from fastmi.train.idx import DataError, read_idx, write_idx
from mnist_files import images, write_mnist


# ---- the IDX reader -------------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, compress, dtype):
    array = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    path = str(tmp_path / "a.idx")
    write_idx(path, array, compress=compress)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 5)
    np.testing.assert_array_equal(out, array)


def test_idx_reads_the_big_endian_layout_byte_for_byte(tmp_path):
    # a hand-written file: magic 00 00 0B (int16) 01 (1 dim), size 3, then 3 big-endian int16
    path = tmp_path / "h.idx"
    path.write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 3, 0x01, 0x02, 0xFF, 0xFE, 0x00, 0x07]))
    np.testing.assert_array_equal(read_idx(str(path)), np.array([0x0102, -2, 7], dtype=np.int16))


def _bytes_of(array, folder):
    path = folder / "bytes.idx"
    write_idx(str(path), array)
    return path.read_bytes()


@pytest.mark.parametrize("cut, message", [
    (0, "shorter than the 4-byte magic"),
    (3, "shorter than the 4-byte magic"),
    (10, "shorter than its 16-byte header"),
    (16 + 100, "truncated IDX file: the header announces shape (2, 28, 28)"),
    (-1, "truncated IDX file"),
])
def test_idx_truncated_files_name_the_file(tmp_path, cut, message):
    data = _bytes_of(images(2), tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(data[:cut])
    with pytest.raises(DataError) as e:
        read_idx(str(path))
    assert str(path) in str(e.value) and message in str(e.value)


def test_idx_truncated_gzip_names_the_file(tmp_path):
    data = gzip.compress(_bytes_of(images(4), tmp_path))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="gzip stream is truncated or corrupt") as e:
        read_idx(str(path))
    assert str(path) in str(e.value)


def test_idx_malformed_headers(tmp_path):
    bad_magic = tmp_path / "bad_magic"
    bad_magic.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="not an IDX file: magic number 12340801"):
        read_idx(str(bad_magic))
    bad_type = tmp_path / "bad_type"
    bad_type.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]))
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(str(bad_type))
    zero_dims = tmp_path / "zero_dims"
    zero_dims.write_bytes(bytes([0, 0, 0x08, 0]))
    with pytest.raises(DataError, match="0 dimensions"):
        read_idx(str(zero_dims))
    trailing = tmp_path / "trailing"
    trailing.write_bytes(_bytes_of(np.zeros(3, np.uint8), tmp_path) + b"\x00\x00")
    with pytest.raises(DataError, match="2 bytes after the 11"):
        read_idx(str(trailing))
    with pytest.raises(DataError, match="no such file") as e:
        read_idx(str(tmp_path / "missing"))
    assert "missing" in str(e.value)


# ---- MNIST files ------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_load_mnist_layouts(tmp_path, compress, layout):
    images, labels = write_mnist(str(tmp_path), "train", n=12, compress=compress, layout=layout)
    data = load_mnist(str(tmp_path), "train")
    assert data.images.shape == (12, 1, 28, 28) and data.images.dtype == torch.float32
    np.testing.assert_allclose(data.images[:, 0].numpy() * 255.0, images, atol=1e-4)
    np.testing.assert_array_equal(data.labels.numpy(), labels)
    assert data.name == "mnist-train"


def test_each_split_alone_is_enough(tmp_path):
    train_dir, test_dir = tmp_path / "train_only", tmp_path / "test_only"
    write_mnist(str(train_dir), "train", n=6, seed=1)
    _, test_labels = write_mnist(str(test_dir), "test", n=9, seed=2)
    assert len(load_mnist(str(train_dir), "train").images) == 6
    test = load_mnist(str(test_dir), "test")
    assert len(test.images) == 9 and test.name == "mnist-test"
    np.testing.assert_array_equal(test.labels.numpy(), test_labels)
    with pytest.raises(DataError, match="MNIST test images: no file t10k-images-idx3-ubyte"):
        load_mnist(str(train_dir), "test")
    with pytest.raises(DataError, match="MNIST train images: no file train-images-idx3-ubyte"):
        load_mnist(str(test_dir), "train")


def test_dotted_file_names_are_found(tmp_path):
    write_idx(str(tmp_path / "t10k-images.idx3-ubyte"), images(3))
    assert find_mnist_file(str(tmp_path), "test", "images").endswith("t10k-images.idx3-ubyte")


def test_mnist_mismatches_name_the_files(tmp_path):
    write_mnist(str(tmp_path), "train", n=5)
    write_idx(str(tmp_path / "train-labels-idx1-ubyte"), np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="holds 4 labels but .*train-images-idx3-ubyte holds 5 images"):
        load_mnist(str(tmp_path), "train")
    write_idx(str(tmp_path / "train-labels-idx1-ubyte"), np.full(5, 11, np.uint8))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: labels must be the digits 0..9"):
        load_mnist(str(tmp_path), "train")
    write_idx(str(tmp_path / "train-images-idx3-ubyte"), np.zeros((5, 20, 20), np.uint8))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: expected uint8 images of shape \[N, 28, 28\]"):
        load_mnist(str(tmp_path), "train")


def test_truncated_mnist_file_is_reported_by_name(tmp_path):
    write_mnist(str(tmp_path), "train", n=5)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated") as e:
        load_mnist(str(tmp_path), "train")
    assert str(path) in str(e.value)


def test_load_dataset_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="needs --data-dir"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="apply to --dataset mnist, not to digits"):
        load_dataset("digits", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("cifar")
    with pytest.raises(DataError, match="no such directory"):
        load_dataset("mnist", data_dir=str(tmp_path / "nope"))


# ---- the shipped sets ---------------------------------------------------------------------

def test_mnist5k_is_the_5000_shipped_digits():
    data = load_mnist5k()
    assert data.images.shape == (5000, 1, 28, 28)
    assert float(data.images.min()) == 0.0 and float(data.images.max()) == 1.0
    assert np.bincount(data.labels.numpy()).tolist() == [500] * 10
    # a digit has ink: the mean MNIST pixel is about 0.13
    assert 0.08 < float(data.images.mean()) < 0.2


def test_mnist5k_malformed_csv_names_the_file(tmp_path):
    path = tmp_path / "mnist_5k.csv.gz"
    path.write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    with pytest.raises(DataError, match="expected rows of 784 pixels and a label") as e:
        load_mnist5k(str(path))
    assert str(path) in str(e.value)
    path.write_bytes(gzip.compress(b"0," * 784 + b"0\n")[:20])
    with pytest.raises(DataError, match="truncated or malformed CSV"):
        load_mnist5k(str(path))


def test_digits_are_padded_to_28():
    data = load_digits()
    assert data.images.shape == (1797, 1, 28, 28)
    # the 4-pixel margin is empty and the 20x20 box holds the ink, as in MNIST
    assert float(data.images[:, :, :4].abs().max()) == 0.0 and float(data.images[:, :, :, -4:].abs().max()) == 0.0
    assert float(data.images.max()) <= 1.0 and float(data.images[:, :, 4:24, 4:24].mean()) > 0.1


# ---- batch order --------------------------------------------------------------------------

def test_batch_order_epochs_are_permutations_and_resume_exactly():
    order = BatchOrder(n=50, batch=8, seed=3)
    epoch = torch.cat([order.next() for _ in range(order.batches_per_epoch)])
    assert len(set(epoch.tolist())) == 48  # 6 full batches, the last 2 images dropped
    first_of_next = order.next()
    assert order.epoch == 1 and not torch.equal(first_of_next, epoch[:8])
    # a fresh order restored from a mid-epoch state yields the same batches
    order.next()
    state = order.state_dict()
    expected = [order.next() for _ in range(10)]
    restored = BatchOrder(n=50, batch=8, seed=3)
    restored.load_state_dict(state)
    for a in expected:
        assert torch.equal(restored.next(), a)
    with pytest.raises(ValueError, match="does not match"):
        BatchOrder(n=50, batch=4, seed=3).load_state_dict(state)


def test_batch_order_ranks_take_disjoint_shards():
    ranks = [BatchOrder(n=40, batch=5, seed=0, rank=r, world=2) for r in range(2)]
    seen = [torch.cat([o.next() for _ in range(o.batches_per_epoch)]) for o in ranks]
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
    assert len(seen[0]) + len(seen[1]) == 40
    with pytest.raises(ValueError, match="batch size 100 needs at least that many images"):
        BatchOrder(n=40, batch=50, seed=0, rank=0, world=2)
