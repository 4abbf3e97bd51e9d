"""Shared test set-up: a headless matplotlib, a fixed seed per test, the data folder."""
import os
import tempfile

import matplotlib
import pytest
import torch

matplotlib.use("Agg")  # tests draw graphs and plots without a display


# One intra-op thread: the suite's tensors are small, and on a busy 2-core machine two
# threads made small ops up to 100x slower (thread hand-off dominates the math).
torch.set_num_threads(1)

# Steps compiled once per machine (inference.mcmc.shared_compile) go to a fresh folder for
# the session, not the user's cache: the suite compiles them itself (notebooks inherit it).
os.environ.setdefault("PPL_CACHE_DIR", tempfile.mkdtemp(prefix="ppl_cache_"))


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state, so failures reproduce."""
    torch.manual_seed(0)


@pytest.fixture
def data_dir():
    """The shared data folder: $PPL_DATA, default <repo root>/../shared/data."""
    from models.data import data_root
    return data_root()


@pytest.fixture
def require_dataset(data_dir):
    """`require_dataset("mnist")` -> its folder, or skip the test saying what is missing."""

    def require(name):
        folder = data_dir / name
        if not folder.exists():
            pytest.skip(f"data set '{name}' not found at {folder} (set PPL_DATA to the folder "
                        f"holding it)")
        return folder

    return require
