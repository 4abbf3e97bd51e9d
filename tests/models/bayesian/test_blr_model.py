"""models.bayesian.blr: NUTS, VI and SGLD posteriors of logistic regression on red wine."""
import json

import pytest
import torch

from models.bayesian import blr


def test_load_makes_a_balanced_binary_label(require_dataset):
    require_dataset("uci/wine-quality-red")
    x, y, x_test, y_test = blr.load("wine-quality-red", 0)
    assert x.shape == (1439, 12) and x_test.shape == (160, 12)
    assert torch.all(x[:, -1] == 1) and set(y.unique().tolist()) == {0., 1.}
    assert 0.4 < float(y.mean()) < 0.65       # quality >= 6: about half the wines


def test_compare_measures_distance_in_reference_sds():
    reference = torch.tensor([[0., 0.], [2., 4.]])      # means (1, 2), sds (1.41, 2.83)
    draws = reference + torch.tensor([1.41421356, 0.])
    result = blr.compare(draws, reference)
    assert result["max_mean_diff_sd"] == pytest.approx(1., rel=1e-6)
    assert result["min_sd_ratio"] == pytest.approx(1.)
    assert result["max_sd_ratio"] == pytest.approx(1.)


@pytest.mark.filterwarnings("ignore:.*sampling problems")  # 60 warm-up draws: short on purpose
def test_command_line_runs_the_three_methods(require_dataset, tmp_path):
    """A short run on 400 wines: every method predicts better than chance; metrics written."""
    require_dataset("uci/wine-quality-red")
    metrics = blr.main(["--out", str(tmp_path), "--n-samples", "60", "--epochs", "20",
                        "--vi-steps", "150", "--train-size", "400", "--no-progress",
                        "--checkpoint", str(tmp_path / "blr.pt")])
    assert (tmp_path / "blr.pt.nuts").is_file() and (tmp_path / "blr.pt.vi").is_file()
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == metrics
    for method in blr.METHODS:
        assert metrics[f"test_error_{method}"] < 0.4
        assert -0.7 < metrics[f"test_loglik_{method}"] < 0
    for method in ("vi", "sgld"):
        assert 0 <= metrics[f"max_mean_diff_sd_{method}"] < 10
        assert 0 < metrics[f"min_sd_ratio_{method}"] <= metrics[f"max_sd_ratio_{method}"]
    posteriors = json.loads((tmp_path / "posteriors.json").read_text())
    assert all(len(posteriors[m]["mean"]) == 12 for m in blr.METHODS)
