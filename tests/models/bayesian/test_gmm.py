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


def test_z_conditional_matches_the_model_enumerated():
    """softmax_k of log p(x, z with z_i = k, ...) over k is z_conditional's p(z_i = k)."""
    x = torch.randn(5, 2, dtype=torch.float64)
    values = {"x": x, "pi": torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64),
              "mu": torch.randn(1, 3, 2, dtype=torch.float64),
              "log_sigma": 0.3 * torch.randn(1, 3, 2, dtype=torch.float64),
              "z": torch.tensor([[0, 1, 2, 0, 1]])}
    model = gmm.build_model(5, 3, 2, 1)
    probs = gmm.z_conditional(values).probs                      # [1, 5, 3]
    for i in range(5):
        log_joint = []
        for k in range(3):
            z = values["z"].clone()
            z[0, i] = k
            log_joint.append(model.observe(**{**values, "z": z}).log_joint())
        torch.testing.assert_close(probs[0, i], torch.softmax(torch.cat(log_joint), 0))


def test_enumerating_z_runs_the_same_sweep():
    """Gibbs by enumeration (O(n^2 K)) instead of the hand conditional: a few sweeps run."""
    x = torch.cat([torch.randn(15, 2) - 2, torch.randn(15, 2) + 2]).double()
    draws, accept = gmm.sample(x, 2, n_sweeps=6, n_warmup=3, n_chains=2, progress=False,
                               enumerate_z=True)
    assert draws["mu"].shape == (3, 2, 2, 2) and 0 <= accept <= 1


def test_log_predictive_of_one_component_is_the_normal_density():
    draws = {"pi": torch.ones(2, 1, 1, dtype=torch.float64),
             "mu": torch.zeros(2, 1, 1, 2, dtype=torch.float64),
             "log_sigma": torch.zeros(2, 1, 1, 2, dtype=torch.float64)}
    x = torch.tensor([[0., 0.], [1., 2.]], dtype=torch.float64)
    expected = -math.log(2 * math.pi) - 0.5 * (0 + 5) / 2
    assert gmm.log_predictive(draws, x) == pytest.approx(expected)


def test_command_line_samples_and_writes_metrics(require_dataset, tmp_path):
    """30 sweeps on 200 images: the mixture beats a single standard normal (-2.84 nats)."""
    require_dataset("mnist")
    metrics = gmm.main(["--out", str(tmp_path), "--epochs", "30", "--train-size", "200",
                        "--test-size", "200", "--chains", "2", "--no-progress"])
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert -2.8 < metrics["test_loglik"] < 0 and 0 < metrics["hmc_acceptance"] <= 1
