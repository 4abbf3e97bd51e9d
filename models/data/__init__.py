"""Data sets for the model zoo: MNIST (IDX), binarized MNIST, scikit-learn's digits.

Files are found under `$PPL_DATA` (default `<repo>/../shared/data`) or a
path you give; nothing is downloaded.
"""
from models.data.binary_images import (DATASETS, BinarizedBatches, ImageData, binarize,
                                       iterate_batches, load_binary_images)
from models.data.digits import load_digits
from models.data.idx import read_idx
from models.data.mnist import load_binarized_mnist, load_mnist
from models.data.movielens import load_movielens
from models.data.newsgroups import load_newsgroups
from models.data.paths import data_root, dataset_dir

__all__ = ["DATASETS", "BinarizedBatches", "ImageData", "binarize", "iterate_batches",
           "load_binary_images", "load_digits", "read_idx", "load_binarized_mnist",
           "load_mnist", "data_root", "dataset_dir", "load_movielens",
           "load_newsgroups"]
