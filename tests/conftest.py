"""Shared test set-up: a headless matplotlib, a fixed seed per test, the data folder, the
compiled-step cache."""

from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")  # tests draw graphs and plots without a display


# One intra-op thread: the suite's tensors are small, and on a busy 2-core machine two
# threads made small ops up to 100x slower (thread hand-off dominates the math).
torch.set_num_threads(1)

# Compiled steps: the suite loads from, and adds its own models' steps to, the user's cache
# ($PPL_CACHE_DIR, default ~/.cache/ppl), where the install's build step put NUTS's tree
# step (`python -m inference.mcmc.precompile`), so no test builds it again. A test that needs
# an empty cache takes the `empty_cache` fixture. Nothing here makes a temporary folder.


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty PPL_CACHE_DIR (returned) for this test. Inductor's precompiled C++ header
    (about 180 MB, seconds to build) stays in Inductor's own folder, shared by every test."""
    monkeypatch.setenv("PPL_CACHE_DIR", str(tmp_path / "ppl"))
    return tmp_path / "ppl"


_REPO = Path(__file__).resolve().parents[1]
_OUTPUT_FOLDERS = ("runs", "checkpoints")  # the runnable models' default output folders


@pytest.fixture(scope="session", autouse=True)
def _nothing_left_in_the_repository():
    """No test writes into the repository: outputs go to tmp_path (a run leaves nothing
    behind outside the user's cache)."""
    before = {name for name in _OUTPUT_FOLDERS if (_REPO / name).exists()}
    yield
    made = [name for name in _OUTPUT_FOLDERS if (_REPO / name).exists() and name not in before]
    assert not made, f"the tests wrote into the repository: {made} (pass --out tmp_path)"


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
