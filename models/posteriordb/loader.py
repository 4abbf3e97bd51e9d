"""Reading the posteriordb files: posterior info, Stan code, data, reference draws.

The layout is posteriordb's own (see `$PPL_DATA/posteriordb`):
`posteriors/<name>.json` names the model and data, `models/stan/<model>.stan`,
`data/data/<data>.json.zip`, `reference_posteriors/draws/draws/<name>.json.zip`
(10 chains, each a dict `"beta[2]" -> [1000 draws]`) and
`reference_posteriors/summary_statistics/mean_value/mean_value/<name>.json`.
"""
import json
import re
import zipfile
from collections import defaultdict

import numpy as np

from models.data.paths import dataset_dir

__all__ = ["database_dir", "read_posterior_info", "read_stan_code", "read_data",
           "read_reference_draws", "read_reference_info", "read_reference_means"]


def database_dir(path=None):
    """The `posterior_database` folder under `$PPL_DATA/posteriordb` (or under `path`)."""
    folder = dataset_dir("posteriordb", path) / "posterior_database"
    if not folder.is_dir():
        raise FileNotFoundError(f"posteriordb: no 'posterior_database' folder in "
                                f"{folder.parent}")
    return folder


def _read_json(file):
    if not file.is_file():
        raise FileNotFoundError(f"posteriordb: missing file {file}")
    if file.suffix == ".zip":
        with zipfile.ZipFile(file) as archive:
            return json.loads(archive.read(archive.namelist()[0]))
    return json.loads(file.read_text())


def read_posterior_info(name, path=None):
    """The posterior's info dict (`model_name`, `data_name`, `dimensions`, ...)."""
    return _read_json(database_dir(path) / "posteriors" / f"{name}.json")


def read_stan_code(model_name, path=None):
    """The Stan program of `model_name`, as text."""
    file = database_dir(path) / "models" / "stan" / f"{model_name}.stan"
    if not file.is_file():
        raise FileNotFoundError(f"posteriordb: missing file {file}")
    return file.read_text()


def read_data(data_name, path=None):
    """The data dict of `data_name` as posteriordb stores it (lists and numbers)."""
    return _read_json(database_dir(path) / "data" / "data" / f"{data_name}.json.zip")


def _group(columns, n_leading):
    """`{"b[1]": a1, "b[2]": a2, "s": a3}` -> `{"b": stack([a1, a2], -1), "s": a3}`.

    Indices are Stan's (1-based, row-major for matrices); each value has
    `n_leading` axes in front of the parameter's own.
    """
    scalars, indexed = {}, defaultdict(dict)
    for column, values in columns.items():
        match = re.fullmatch(r"(\w+)\[([\d,]+)\]", column)
        if match is None:
            scalars[column] = np.asarray(values, dtype=np.float64)
        else:
            index = tuple(int(i) - 1 for i in match.group(2).split(","))
            indexed[match.group(1)][index] = np.asarray(values, dtype=np.float64)
    out = dict(scalars)
    for name, cells in indexed.items():
        shape = tuple(max(index[d] for index in cells) + 1 for d in range(len(next(iter(cells)))))
        first = next(iter(cells.values()))
        array = np.full(first.shape[:n_leading] + shape, np.nan)
        for index, values in cells.items():
            array[(Ellipsis,) + index] = values
        out[name] = array
    return out


def read_reference_draws(name, path=None):
    """Reference draws: dict param -> float64 array `(chain, draw) + param shape`."""
    chains = _read_json(database_dir(path) / "reference_posteriors" / "draws" / "draws"
                        / f"{name}.json.zip")
    columns = {column: np.stack([np.asarray(chain[column], dtype=np.float64)
                                 for chain in chains])
               for column in chains[0]}
    return _group(columns, n_leading=2)


def read_reference_info(name, path=None):
    """How the reference draws were made: Stan's arguments (`inference.method_arguments`,
    e.g. `control.adapt_delta`) and diagnostics (ESS, R-hat, divergences)."""
    return _read_json(database_dir(path) / "reference_posteriors" / "draws" / "info"
                      / f"{name}.info.json")


def read_reference_means(name, path=None):
    """Reference posterior means with their MCSE: dict param -> (mean, mcse) arrays."""
    table = _read_json(database_dir(path) / "reference_posteriors" / "summary_statistics"
                       / "mean_value" / "mean_value" / f"{name}.json")
    means = _group(dict(zip(table["names"], table["mean_value"])), n_leading=0)
    mcses = _group(dict(zip(table["names"], table["mcse_mean"])), n_leading=0)
    return {param: (means[param], mcses[param]) for param in means}
