"""The zoo convention's shared pieces: command line, metrics.json, samples.npy."""
import json

import numpy as np
import pytest
import torch

from models import zoo


def test_the_parser_has_every_option_of_the_convention_and_start_fills_epochs(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    args = zoo.parser("latent.x", "demo", data="mnist", epochs=7).parse_args(
        ["--out", str(tmp_path / "o"), "--train-size", "5", "--test-size", "3"])
    for name in ("data", "epochs", "seed", "out", "checkpoint", "n_samples", "train_size",
                 "test_size"):
        assert hasattr(args, name)
    zoo.start(args)
    assert args.epochs == 7 and (tmp_path / "o").is_dir()
    monkeypatch.setenv("CI", "true")
    args = zoo.parser("latent.x", "demo", data="mnist", epochs=7, quick_epochs=2).parse_args(
        ["--out", str(tmp_path / "o")])
    zoo.start(args)
    assert args.epochs == 2


def test_bad_sizes_are_refused_by_name():
    with pytest.raises(SystemExit):
        zoo.parser("latent.x", "demo", data="mnist", epochs=1).parse_args(["--train-size", "0"])


def test_metrics_are_flat_numbers_with_a_budget(tmp_path):
    budget = zoo.Budget().as_dict(3)
    zoo.write_metrics(tmp_path, {"test_loglik_nats": torch.tensor(-90.5), "test_error": 0.1},
                      budget)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_loglik_nats"] == -90.5 and saved["test_error"] == 0.1
    assert saved["budget"]["epochs"] == 3 and "wall_seconds" in saved["budget"]
    with pytest.raises(ValueError, match="test_rmse"):
        zoo.write_metrics(tmp_path, {"test_rmse": float("nan")}, budget)


def test_samples_are_saved_as_float32_rows_in_the_unit_interval(tmp_path):
    zoo.save_samples(tmp_path, torch.rand(12, 1, 28, 28))
    array = np.load(tmp_path / "samples.npy")
    assert array.shape == (12, 784) and array.dtype == np.float32
    assert (tmp_path / "samples.png").is_file()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        zoo.save_samples(tmp_path, torch.full((2, 784), 2.0))
    with pytest.raises(ValueError, match="784"):
        zoo.save_samples(tmp_path, torch.rand(2, 10))
