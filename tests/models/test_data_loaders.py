"""Data loaders: IDX parsing, MNIST / binarized MNIST / digits, dynamic binarization."""
import gzip

import numpy as np
import pytest
import torch

from models.data import (BinarizedBatches, binarize, data_root, iterate_batches,
                         load_binarized_mnist, load_binary_images, load_digits, load_mnist,
                         read_idx)
from models.data.idx import IMAGES_MAGIC, LABELS_MAGIC

MNIST_DIR = data_root() / "mnist"
BMNIST_FILE = data_root() / "binarized_mnist" / "binarized_mnist.npz"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(),
                                 reason=f"MNIST not found at {MNIST_DIR} (set PPL_DATA)")
needs_bmnist = pytest.mark.skipif(not BMNIST_FILE.is_file(),
                                  reason=f"binarized MNIST not found at {BMNIST_FILE} "
                                         f"(set PPL_DATA)")


def idx_bytes(array, magic_type=0x08):
    header = bytes([0, 0, magic_type, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


# -- IDX ----------------------------------------------------------------------
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(array)
    path = tmp_path / "images.idx"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    out = read_idx(path, magic=IMAGES_MAGIC)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)


def test_read_idx_wrong_magic_names_file_and_numbers(tmp_path):
    path = tmp_path / "labels-as-images.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(5, np.uint8))))
    with pytest.raises(ValueError, match=rf"{path.name}.*magic number {LABELS_MAGIC}, "
                                         rf"expected {IMAGES_MAGIC}"):
        read_idx(path, magic=IMAGES_MAGIC)


def test_read_idx_bad_headers(tmp_path):
    not_idx = tmp_path / "text.idx"
    not_idx.write_bytes(b"hello world, not an IDX file")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(not_idx)
    truncated = tmp_path / "truncated.idx"
    truncated.write_bytes(idx_bytes(np.zeros((4, 2, 2), np.uint8))[:-3])
    with pytest.raises(ValueError, match=r"announces shape \(4, 2, 2\) \(16 bytes.*holds 13"):
        read_idx(truncated)
    short = tmp_path / "short.idx"
    short.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="too short"):
        read_idx(short)


def test_missing_mnist_folder_and_file_are_named(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_mnist(missing)
    monkeypatch.setenv("PPL_DATA", str(tmp_path))
    assert data_root() == tmp_path
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "mnist")):
        load_mnist()
    (tmp_path / "mnist").mkdir()
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        load_mnist()
    with pytest.raises(FileNotFoundError, match="nor an existing path"):
        load_binary_images(str(missing))


def test_crafted_mnist_folder_loads_and_checks_magic(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28)).astype(np.uint8)
    labels = np.arange(6, dtype=np.uint8)
    for prefix in ("train", "t10k"):
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(images)))
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(labels)))
    mnist = load_mnist(tmp_path)
    np.testing.assert_array_equal(mnist.test_images, images)
    data = load_binary_images(str(tmp_path))  # a folder of IDX files is MNIST
    assert data.name == "mnist" and data.train.shape == (6, 784)
    np.testing.assert_allclose(data.train, images.reshape(6, -1) / 255.0, rtol=1e-6)
    # Swap in a labels file where the images belong: the magic number check catches it.
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz: bad IDX magic"):
        load_mnist(tmp_path)


# -- the real data sets -------------------------------------------------------
def test_digits():
    digits = load_digits()
    assert digits.images.shape == (1797, 64) and digits.images.dtype == np.float32
    assert digits.images.min() == 0.0 and digits.images.max() == 1.0
    assert set(np.unique(digits.labels)) == set(range(10))
    data = load_binary_images("digits", seed=3)
    assert data.train.shape == (1497, 64) and data.test.shape == (300, 64)
    assert data.image_shape == (8, 8) and data.dynamic
    assert set(np.unique(data.test)) == {0.0, 1.0}
    # the split is a partition of the 1797 digits
    assert len(np.unique(np.vstack([data.train, load_digits().images]), axis=0)) == \
        len(np.unique(digits.images, axis=0))


@needs_mnist
def test_mnist_shapes_and_values():
    mnist = load_mnist()
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10000, 28, 28)
    assert mnist.train_images.max() == 255 and mnist.train_images.min() == 0
    assert set(np.unique(mnist.train_labels)) == set(range(10))
    assert list(mnist.train_labels[:5]) == [5, 0, 4, 1, 9]  # the original order
    data = load_binary_images("mnist", seed=0)
    assert data.train.shape == (60000, 784) and data.train.dtype == np.float32
    assert 0.0 <= data.train.min() and data.train.max() == 1.0
    assert set(np.unique(data.test)) == {0.0, 1.0}


@needs_bmnist
def test_binarized_mnist_is_binary_and_shuffled():
    bmnist = load_binarized_mnist(seed=0)
    assert bmnist.train.shape == (50000, 784) and bmnist.valid.shape == (10000, 784)
    assert bmnist.test.shape == (10000, 784) and bmnist.train.dtype == np.uint8
    assert set(np.unique(bmnist.train)) == {0, 1}
    with np.load(BMNIST_FILE) as npz:
        raw = npz["train"]
    # Shuffled (the data README says rows come grouped by class): a permutation of the rows.
    assert not np.array_equal(bmnist.train[:100], raw[:100])
    def row_keys(rows):
        return np.sort(rows @ (np.arange(784) % 61 + 1).astype(np.int64))
    np.testing.assert_array_equal(row_keys(bmnist.train), row_keys(raw))
    np.testing.assert_array_equal(load_binarized_mnist(seed=0).train, bmnist.train)


# -- binarization and batching --------------------------------------------------
def test_dynamic_binarization_statistics():
    images = load_binary_images("digits").train
    batches = BinarizedBatches(images, batch_size=100, seed=7)
    epoch = list(batches(0))
    assert len(epoch) == len(batches) == 14
    assert all(b.dtype == torch.float32 and b.shape == (100, 64) for b in epoch)
    x = torch.cat(epoch).numpy()
    assert set(np.unique(x)) == {0.0, 1.0}
    # Each epoch's pixels are Bernoulli(p) draws of the rows it holds: recover
    # those rows (same order as the batches) and compare mean ink to sum p.
    order = np.random.default_rng([7, 0]).permutation(len(images))[:1400]
    p = images[order]
    z = (x.sum() - p.sum()) / np.sqrt((p * (1 - p)).sum())
    assert abs(z) < 5
    assert np.all(x[p == 0] == 0) and np.all(x[p == 1] == 1)
    # Fresh draws each epoch, the same draws for the same (seed, epoch).
    again = torch.cat(list(batches(0))).numpy()
    other = torch.cat(list(batches(1))).numpy()
    np.testing.assert_array_equal(x, again)
    assert (x != other).mean() > 0.05


def test_binarize_and_iterate_batches():
    grey = np.full((1000, 50), 0.3, dtype=np.float32)
    x = binarize(grey, seed=0)
    assert x.dtype == np.float32
    se = np.sqrt(0.3 * 0.7 / x.size)
    assert abs(x.mean() - 0.3) < 5 * se
    np.testing.assert_array_equal(x, binarize(grey, seed=0))
    sizes = [len(b) for b in iterate_batches(x, 300)]
    assert sizes == [300, 300, 300, 100]
    with pytest.raises(ValueError, match="batch_size"):
        BinarizedBatches(x, batch_size=5000)
