"""models.bayesian.gmm: the Gaussian mixture by Gibbs (assignments) and HMC, on MNIST PCs."""
import json
import math

import pytest
import torch

from models.bayesian import gmm


def test_pi_conditional_adds_the_counts():
    z = torch.tensor([[0, 2, 2, 1, 2]])
    dist = gmm.pi_conditional({"z": z, "pi": torch.full((1, 3), 1 / 3)})
    torch.testing.assert_close(dist.concentration, torch.tensor([[2., 2., 4.]],
                                                                dtype=torch.float64))


def test_log_predictive_of_one_component_is_the_normal_density():
    draws = {"pi": torch.ones(2, 1, 1, dtype=torch.float64),
             "mu": torch.zeros(2, 1, 1, 2, dtype=torch.float64),
             "log_sigma": torch.zeros(2, 1, 1, 2, dtype=torch.float64)}
    x = torch.tensor([[0., 0.], [1., 2.]], dtype=torch.float64)
    expected = -math.log(2 * math.pi) - 0.5 * (0 + 5) / 2
    assert gmm.log_predictive(draws, x) == pytest.approx(expected)


def test_command_line_samples_and_writes_metrics(require_dataset, tmp_path):
    """20 sweeps on 200 images: the mixture beats a single standard normal (-2.84 nats)."""
    require_dataset("mnist")
    metrics = gmm.main(["--out", str(tmp_path), "--epochs", "20", "--train-size", "200",
                        "--test-size", "200", "--chains", "2", "--no-progress"])
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert -2.8 < metrics["test_loglik"] < 0 and 0 < metrics["hmc_acceptance"] <= 1
