"""The UCI regression benchmark of Hernandez-Lobato & Adams (2015), with its published splits.

Each data set folder (`<data>/uci/<name>/`) holds `data.txt` (whitespace
separated, no header), `index_features.txt` and `index_target.txt` (0-based
columns) and `index_train_<i>.txt` / `index_test_<i>.txt` (0-based rows of
the 90/10 splits; 20 splits, 5 for protein).

    split = load_uci("bostonHousing", split=0)
    split.x_train.shape, split.y_train.shape      # (455, 13), (455,)
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.data.paths import dataset_dir

__all__ = ["UCI_DATASETS", "UCISplit", "load_uci", "uci_n_splits"]

UCI_DATASETS = ("bostonHousing", "concrete", "energy", "kin8nm", "naval-propulsion-plant",
                "power-plant", "protein-tertiary-structure", "wine-quality-red", "yacht")


@dataclass
class UCISplit:
    """One train/test split as float tensors: x [n, d], y [n] (not standardized)."""

    name: str
    split: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _folder(name, path):
    if path is not None:
        return dataset_dir(name, Path(path))
    return dataset_dir(f"uci/{name}")


def _read_indices(folder, filename):
    file = folder / filename
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found")
    return np.atleast_1d(np.loadtxt(file, dtype=np.int64))


def uci_n_splits(name, path=None):
    """How many published splits the data set has (files index_train_<i>.txt)."""
    folder = _folder(name, path)
    n = 0
    while (folder / f"index_train_{n}.txt").is_file():
        n += 1
    return n


def load_uci(name, split=0, path=None, dtype=None):
    """Split `split` of UCI data set `name` (see `UCI_DATASETS`).

    path: the data set's own folder, instead of `$PPL_DATA/uci/<name>`.
    dtype: of the tensors, default `torch.get_default_dtype()`.
    """
    if path is None and name not in UCI_DATASETS:
        raise ValueError(f"unknown UCI data set {name!r}; expected one of {UCI_DATASETS}")
    folder = _folder(name, path)
    n_splits = uci_n_splits(name, path)
    if not isinstance(split, int) or not 0 <= split < n_splits:
        raise ValueError(f"{name} has splits 0..{n_splits - 1}, got split={split!r}")
    data = np.loadtxt(folder / "data.txt")
    features = _read_indices(folder, "index_features.txt")
    target = int(_read_indices(folder, "index_target.txt")[0])
    train = _read_indices(folder, f"index_train_{split}.txt")
    test = _read_indices(folder, f"index_test_{split}.txt")
    dtype = dtype or torch.get_default_dtype()

    def tensor(rows, cols):
        return torch.as_tensor(data[np.ix_(rows, cols)] if isinstance(cols, np.ndarray)
                               else data[rows, cols], dtype=dtype)

    return UCISplit(name, split, tensor(train, features), tensor(train, target),
                    tensor(test, features), tensor(test, target))
