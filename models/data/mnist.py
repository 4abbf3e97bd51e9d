"""MNIST from the four standard IDX files, and Larochelle's binarized MNIST.

    mnist = load_mnist()                 # $PPL_DATA/mnist, or a folder you name
    mnist.train_images.shape             # (60000, 28, 28), uint8 0..255
    bmnist = load_binarized_mnist()      # train (50000, 784) uint8 0/1, shuffled
"""
from collections import namedtuple
from pathlib import Path

import numpy as np

from models.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from models.data.paths import data_root, dataset_dir

__all__ = ["MNIST", "BinarizedMNIST", "load_mnist", "load_binarized_mnist", "MNIST_FILES"]

MNIST = namedtuple("MNIST", "train_images train_labels test_images test_labels")
BinarizedMNIST = namedtuple("BinarizedMNIST", "train valid test")

MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", IMAGES_MAGIC),
    "train_labels": ("train-labels-idx1-ubyte.gz", LABELS_MAGIC),
    "test_images": ("t10k-images-idx3-ubyte.gz", IMAGES_MAGIC),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", LABELS_MAGIC),
}


def load_mnist(path=None):
    """MNIST in its original order: images uint8 [n, 28, 28], labels uint8 [n].

    `path` is a folder with the four gzipped IDX files (default
    `$PPL_DATA/mnist`). The classic 50k/10k/10k split is train[:50000] /
    train[50000:] / test.
    """
    folder = dataset_dir("mnist", path)
    arrays = {}
    for key, (filename, magic) in MNIST_FILES.items():
        file = folder / filename
        if not file.is_file():
            raise FileNotFoundError(f"MNIST file missing: {file} (the folder must hold "
                                    f"{', '.join(f for f, _ in MNIST_FILES.values())})")
        arrays[key] = read_idx(file, magic=magic)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"MNIST {split}: images {images.shape} and labels {labels.shape} "
                             f"do not match (expected [n, rows, cols] and [n])")
    return MNIST(**arrays)


def load_binarized_mnist(path=None, seed=0):
    """Binarized MNIST (Larochelle & Murray 2011): uint8 0/1 arrays of shape [n, 784].

    `path` is the `.npz` file or its folder (default
    `$PPL_DATA/binarized_mnist/binarized_mnist.npz`). Rows of the file are
    grouped by class, so train and valid are shuffled (seeded by `seed`).
    """
    if path is None:
        file = dataset_dir("binarized_mnist") / "binarized_mnist.npz"
    else:
        file = Path(path)
        if file.is_dir():
            file = file / "binarized_mnist.npz"
    if not file.is_file():
        raise FileNotFoundError(f"binarized MNIST file not found: {file} (pass a path, or set "
                                f"PPL_DATA; default {data_root() / 'binarized_mnist'})")
    with np.load(file) as npz:
        missing = {"train", "valid", "test"} - set(npz.files)
        if missing:
            raise ValueError(f"{file}: missing arrays {sorted(missing)} (has {npz.files})")
        splits = {name: npz[name] for name in ("train", "valid", "test")}
    rng = np.random.default_rng(seed)
    for name, array in splits.items():
        if array.ndim != 2 or array.shape[1] != 784 or array.dtype != np.uint8:
            raise ValueError(f"{file}: '{name}' must be uint8 of shape [n, 784], got "
                             f"{array.dtype} {array.shape}")
        if array.max(initial=0) > 1:
            raise ValueError(f"{file}: '{name}' must hold 0/1 values, found {array.max()}")
        if name != "test":
            splits[name] = array[rng.permutation(len(array))]
    return BinarizedMNIST(**splits)
