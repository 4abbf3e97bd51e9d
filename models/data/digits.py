"""scikit-learn's 8x8 digits: a small image set bundled with scikit-learn.

1797 digits of 64 pixels with grey levels 0..16, scaled here to [0, 1]. It
needs no download, so it is the default data set of the runnable examples.
"""
from collections import namedtuple

import numpy as np

__all__ = ["Digits", "load_digits"]

Digits = namedtuple("Digits", "images labels")


def load_digits():
    """The digits as float32 images [1797, 64] in [0, 1] and int64 labels [1797]."""
    from sklearn.datasets import load_digits as sklearn_digits
    bunch = sklearn_digits()
    images = (bunch.data / 16.0).astype(np.float32)
    return Digits(images=images, labels=bunch.target.astype(np.int64))
