"""Where data sets live: `$PPL_DATA`, else `<repo root>/../shared/data`.

Data is never committed; tests that need a missing set skip with a reason.
"""
import os
from pathlib import Path

__all__ = ["data_root", "dataset_dir"]

_REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root():
    """The folder holding the data sets (`$PPL_DATA` when set)."""
    env = os.environ.get("PPL_DATA")
    return Path(env) if env else _REPO_ROOT.parent / "shared" / "data"


def dataset_dir(name, path=None):
    """The folder of data set `name`: `path` when given, else `data_root() / name`.

    Raises FileNotFoundError naming the folder (and how to point elsewhere)
    when it does not exist.
    """
    folder = Path(path) if path is not None else data_root() / name
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{name} data folder not found: {folder} (pass a path, or set PPL_DATA to the "
            f"folder that holds '{name}/')")
    return folder
