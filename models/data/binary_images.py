"""Binary image data for models with a Bernoulli likelihood (VAEs, SBNs).

Training images keep their grey levels p in [0, 1] and are binarized afresh
every epoch, x ~ Bernoulli(p) ("dynamic binarization"); test images are
binarized once, with a fixed seed, so every evaluation sees the same set.

    data = load_binary_images("digits")          # or "mnist", "binarized_mnist", a path
    batches = BinarizedBatches(data.train, batch_size=128, seed=0)
    for x in batches(epoch):                     # float32 tensors [128, 64] of 0/1
        ...
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.data.digits import load_digits
from models.data.mnist import MNIST_FILES, load_binarized_mnist, load_mnist

__all__ = ["ImageData", "load_binary_images", "binarize", "iterate_batches",
           "BinarizedBatches", "DATASETS"]

DATASETS = ("digits", "mnist", "binarized_mnist")


@dataclass
class ImageData:
    """Images as float32 rows `[n, pixels]`.

    `train` holds grey levels in [0, 1] (binarized per epoch when
    `dynamic`), `test` holds 0/1 values. `image_shape` is (rows, cols).
    `train_labels` / `test_labels`: the digit classes, int64 [n] (None for
    binarized MNIST, which comes without labels).
    """
    name: str
    train: np.ndarray
    test: np.ndarray
    image_shape: tuple
    dynamic: bool
    train_labels: np.ndarray = None
    test_labels: np.ndarray = None

    @property
    def x_dim(self):
        return self.train.shape[1]


def binarize(images, seed):
    """A fixed binarization x ~ Bernoulli(images) of grey levels in [0, 1] (float32 0/1)."""
    rng = np.random.default_rng(seed)
    return (rng.random(images.shape, dtype=np.float32) < images).astype(np.float32)


def load_binary_images(source="digits", seed=0, n_test_digits=300):
    """`source`: "digits", "mnist", "binarized_mnist", or a path to either MNIST form.

    A folder with the IDX files is MNIST; an `.npz` file (or a folder with
    `binarized_mnist.npz`) is binarized MNIST. `seed` fixes the test-set
    binarization and, for digits, the train/test split (`n_test_digits`).
    """
    if source == "digits":
        digits = load_digits()
        order = np.random.default_rng(seed).permutation(len(digits.images))
        test, train = order[:n_test_digits], order[n_test_digits:]
        return ImageData("digits", digits.images[train],
                         binarize(digits.images[test], seed), (8, 8), dynamic=True,
                         train_labels=digits.labels[train],
                         test_labels=digits.labels[test])
    if source == "mnist" or _is_mnist_dir(source):
        mnist = load_mnist(None if source == "mnist" else source)
        flat = lambda a: a.reshape(len(a), -1).astype(np.float32) / 255.0  # noqa: E731
        return ImageData("mnist", flat(mnist.train_images),
                         binarize(flat(mnist.test_images), seed),
                         mnist.train_images.shape[1:], dynamic=True,
                         train_labels=mnist.train_labels.astype(np.int64),
                         test_labels=mnist.test_labels.astype(np.int64))
    if source == "binarized_mnist" or str(source).endswith(".npz") or _is_npz_dir(source):
        bmnist = load_binarized_mnist(None if source == "binarized_mnist" else source, seed)
        return ImageData("binarized_mnist", bmnist.train.astype(np.float32),
                         bmnist.test.astype(np.float32), (28, 28), dynamic=False)
    if not Path(source).exists():
        raise FileNotFoundError(f"data source {source!r} is neither one of {DATASETS} nor an "
                                f"existing path")
    raise ValueError(f"data source {source!r}: expected one of {DATASETS}, a folder with the "
                     f"MNIST IDX files, or a binarized_mnist .npz file")


def _is_mnist_dir(source):
    path = Path(source)
    return path.is_dir() and any((path / name).exists() for name, _ in MNIST_FILES.values())


def _is_npz_dir(source):
    return Path(source).is_dir() and (Path(source) / "binarized_mnist.npz").is_file()


def iterate_batches(array, batch_size, order=None):
    """float32 tensors of `batch_size` rows of `array` (in `order`; the last may be short)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    order = np.arange(len(array)) if order is None else order
    for start in range(0, len(order), batch_size):
        yield torch.from_numpy(np.ascontiguousarray(array[order[start:start + batch_size]],
                                                    dtype=np.float32))


class BinarizedBatches:
    """Shuffled mini-batches, binarized afresh each epoch: `batches(epoch)` iterates one epoch.

    Epoch `e` is a pure function of (`seed`, `e`), so a run resumed from a
    checkpoint sees the same batches as an uninterrupted one. Incomplete
    final batches are dropped (as in ZhuSuan's examples); `max_batches`
    caps an epoch (quick runs).
    """

    def __init__(self, images, batch_size, seed=0, binarize=True, max_batches=None):
        if images.ndim != 2:
            raise ValueError(f"images must be [n, pixels], got shape {images.shape}")
        if not isinstance(batch_size, int) or not 1 <= batch_size <= len(images):
            raise ValueError(f"batch_size must be an int in [1, {len(images)}], "
                             f"got {batch_size!r}")
        self.images = images
        self.batch_size = batch_size
        self.seed = seed
        self.binarize = binarize
        self.max_batches = max_batches

    def __len__(self):
        full = len(self.images) // self.batch_size
        return full if self.max_batches is None else min(full, self.max_batches)

    def __call__(self, epoch):
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.images))[:len(self) * self.batch_size]
        for batch in iterate_batches(self.images, self.batch_size, order):
            if self.binarize:
                noise = torch.from_numpy(rng.random(batch.shape, dtype=np.float32))
                batch = (noise < batch).to(torch.float32)
            yield batch
