"""MovieLens 100K: 100,000 ratings (1-5) of 1,682 movies by 943 users, five 80/20 splits.

    data = load_movielens(split=1)          # u1.base / u1.test
    data.train[:, 0], data.train[:, 1]      # user and item indices (0-based, int64)
    data.train_ratings                      # float64 ratings in [1, 5]

The five splits `u1..u5` have disjoint test sets (5-fold cross-validation);
indices are shifted from the files' 1-based ids so that every split shares one
index space of `n_users` x `n_items` (read from `u.info`).
"""
from collections import namedtuple

import numpy as np

from models.data.paths import dataset_dir

__all__ = ["Ratings", "load_movielens", "movie_titles", "N_SPLITS"]

N_SPLITS = 5

Ratings = namedtuple("Ratings", "train train_ratings test test_ratings n_users n_items")
Ratings.__doc__ = """A split: `train`/`test` [n, 2] int64 (user, item) pairs, 0-based;
`train_ratings`/`test_ratings` [n] float64; `n_users`, `n_items` of the whole set."""


def _read(file):
    table = np.loadtxt(file, dtype=np.int64, usecols=(0, 1, 2), ndmin=2)
    return table[:, :2] - 1, table[:, 2].astype(np.float64)


def _counts(folder):
    info = {}
    for line in (folder / "u.info").read_text().split("\n"):
        if line.strip():
            number, what = line.split()
            info[what] = int(number)
    return info["users"], info["items"]


def load_movielens(split=1, path=None):
    """Split `split` (1-5) of MovieLens 100K from `path` (default `<data>/movielens-100k`)."""
    if isinstance(split, bool) or split not in range(1, N_SPLITS + 1):
        raise ValueError(f"load_movielens: `split` must be 1..{N_SPLITS}, got {split!r}")
    folder = dataset_dir("movielens-100k", path)
    train, train_ratings = _read(folder / f"u{split}.base")
    test, test_ratings = _read(folder / f"u{split}.test")
    n_users, n_items = _counts(folder)
    return Ratings(train, train_ratings, test, test_ratings, n_users, n_items)


def movie_titles(path=None):
    """Movie titles by 0-based item index, from `u.item` (latin-1, `|`-separated)."""
    folder = dataset_dir("movielens-100k", path)
    lines = (folder / "u.item").read_text(encoding="latin-1").split("\n")
    return [line.split("|")[1] for line in lines if line.strip()]
