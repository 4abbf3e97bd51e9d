"""models.bayesian.bnn: ZhuSuan's BNN on the UCI sets by VI and SG-MCMC (issue #27)."""
import json
import math

import pytest
import torch

from models.bayesian import bnn
from models.data.uci import load_uci, uci_n_splits


def _weights(sizes, n):
    return [torch.randn(n, n_out, n_in + 1) for n_in, n_out in zip(sizes[:-1], sizes[1:])]


def test_log_joint_is_the_hand_computed_one():
    """log p(lambda) + log p(tau) + log p(w | lambda) + log p(y | x, w, tau), per particle."""
    torch.manual_seed(0)
    sizes, n_particles = [3, 4, 1], 2
    x, y = torch.randn(5, 3), torch.randn(5)
    lam, tau = torch.tensor([0.5, 2.]), torch.tensor([1.5, 0.7])
    w0, w1 = _weights(sizes, n_particles)
    bn = bnn.build_bnn(x, sizes, n_particles).observe(**{"lambda": lam, "tau": tau, "w0": w0,
                                                        "w1": w1, "y": y})
    expected = (torch.distributions.Gamma(6., 6.).log_prob(lam)
                + torch.distributions.Gamma(1., 0.01).log_prob(tau))
    for w in (w0, w1):
        expected = expected + torch.distributions.Normal(0., lam.rsqrt()[:, None, None]) \
            .log_prob(w).sum((-2, -1))
    # the net by hand: append a 1, divide by sqrt(fan-in + 1), ReLU, same for the output
    for p in range(n_particles):
        h = torch.relu(torch.cat([x, torch.ones(5, 1)], 1) @ w0[p].T / 2.)
        out = (torch.cat([h, torch.ones(5, 1)], 1) @ w1[p].T / math.sqrt(5.)).squeeze(1)
        torch.testing.assert_close(bn["y_mean"][p], out)
        expected[p] += torch.distributions.Normal(out, tau[p].rsqrt()).log_prob(y).sum()
    torch.testing.assert_close(bn.log_joint(), expected)
    # ZhuSuan's minibatch log joint: priors + N / B * log p(y_batch)
    scaled = bnn._minibatch_log_joint(100)(bn)
    prior = expected - bn.cond_log_prob("y")
    torch.testing.assert_close(scaled, prior + 100 / 5 * bn.cond_log_prob("y"))


def test_predictive_log_likelihood_formula():
    """mean_n log (1/S) sum_s N(y_n; m_s(x_n), y_std^2 / tau_s), in original units."""
    torch.manual_seed(1)
    sizes = [2, 3, 1]
    weights, tau = _weights(sizes, 4), torch.tensor([1., 2., 4., 0.5])
    post = bnn.BNNPosterior(weights, tau, x_mean=torch.tensor([1., -1.]),
                            x_std=torch.tensor([2., 0.5]), y_mean=torch.tensor(10.),
                            y_std=torch.tensor(3.))
    x, y = torch.randn(6, 2), 10. + 3. * torch.randn(6)
    means, noise = post.predict(x)
    assert means.shape == (4, 6) and noise.shape == (4,)
    torch.testing.assert_close(means, bnn._forward((x - post.x_mean) / post.x_std, weights)
                               * 3. + 10.)
    torch.testing.assert_close(noise, 3. / tau.sqrt())
    expected_ll = 0.
    for n in range(6):
        dens = [math.exp(-0.5 * ((y[n] - means[s, n]) / noise[s]) ** 2)
                / (noise[s] * math.sqrt(2 * math.pi)) for s in range(4)]
        expected_ll += math.log(sum(dens) / 4) / 6
    metrics = post.evaluate(x, y)
    assert metrics["test_loglik"] == pytest.approx(expected_ll, rel=1e-5)
    assert metrics["test_rmse"] == pytest.approx(float(((means.mean(0) - y) ** 2).mean()
                                                       .sqrt()), rel=1e-6)
    mean, std = post.predictive(x)
    torch.testing.assert_close(mean, means.mean(0))
    torch.testing.assert_close(std ** 2, means.var(0, unbiased=False)
                               + (noise ** 2).mean(), rtol=1e-4, atol=1e-4)


def test_precision_conditionals_are_the_conjugate_ones():
    """lambda | w: Gamma(6 + n/2, 6 + sum w^2 / 2); tau | w, y: Gamma(1 + n/2, 0.01 + ...)."""
    w0, w1 = _weights([3, 4, 1], 2)
    lam = bnn.weight_conditional({"w0": w0, "w1": w1})
    torch.testing.assert_close(lam.alpha, torch.full((2,), 6. + (16 + 5) / 2))
    torch.testing.assert_close(lam.beta, 6. + ((w0 ** 2).sum((1, 2)) + (w1 ** 2).sum((1, 2)))
                               / 2)
    x, y = torch.randn(7, 3), torch.randn(7)
    tau = bnn.noise_conditional(x)({"w0": w0, "w1": w1, "y": y})
    torch.testing.assert_close(tau.alpha, torch.full((2,), 1. + 7 / 2))
    residual = y - bnn._forward(x, [w0, w1])
    torch.testing.assert_close(tau.beta, 0.01 + (residual ** 2).sum(1) / 2)


@pytest.mark.parametrize("inference", bnn.INFERENCES)
def test_fit_on_a_1d_problem(inference):
    """The Python API on a 1-D problem (the tutorial's): shapes; VI beats the mean already."""
    torch.manual_seed(2)
    x = torch.linspace(-3, 3, 64)
    y = torch.sin(x) * 3 + 0.1 * torch.randn(64)
    post = bnn.fit(x[:, None], y, inference, epochs=6, batch_size=16, n_samples=50,
                   progress=False)
    mean, std = post.predictive(torch.linspace(-4, 4, 9))
    assert mean.shape == std.shape == (9,) and bool((std > 0).all())
    metrics = post.evaluate(x[:, None], y)
    assert math.isfinite(metrics["test_loglik"])
    if inference == "vi":
        assert metrics["test_rmse"] < float(y.std())


def test_bad_arguments():
    with pytest.raises(ValueError, match="inference: expected one of"):
        bnn.fit(torch.randn(5, 2), torch.randn(5), "hmc")
    with pytest.raises(ValueError, match=r"y_train: expected shape \(5,\)"):
        bnn.fit(torch.randn(5, 2), torch.randn(4))
    with pytest.raises(ValueError, match=r"x: expected a floating-point array of shape"):
        bnn.fit(torch.randn(5, 2, 1), torch.randn(5))


@pytest.fixture
def uci(require_dataset):
    require_dataset("uci/yacht")


def test_uci_loader_reads_the_published_split(require_dataset):
    require_dataset("uci/bostonHousing")
    boston = load_uci("bostonHousing", 0)
    assert uci_n_splits("bostonHousing") == 20
    assert boston.x_train.shape == (455, 13) and boston.x_test.shape == (51, 13)
    assert boston.y_train.shape == (455,) and boston.y_test.shape == (51,)
    assert 5. <= float(boston.y_train.min()) and float(boston.y_train.max()) <= 50.  # $1000s
    with pytest.raises(ValueError, match="splits 0..19"):
        load_uci("bostonHousing", 20)


@pytest.mark.parametrize("inference", ["vi", "sghmc"])
def test_command_line_on_yacht(uci, tmp_path, inference):
    """Two epochs on split 0 of yacht: metrics.json with finite, plausible numbers."""
    metrics = bnn.main(["--data", "yacht", "--split", "0", "--inference", inference,
                        "--epochs", "2", "--out", str(tmp_path), "--no-progress"])
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == metrics
    assert set(metrics) == {"test_rmse", "test_rmse_se", "test_loglik", "test_loglik_se",
                            "budget"}
    assert 0 < metrics["test_rmse"] < 30 and math.isfinite(metrics["test_loglik"])
    assert metrics["test_rmse_se"] == 0 and metrics["budget"]["inference"] == inference


@pytest.mark.parametrize("argv, message", [
    (["--data", "boston"], "unknown UCI data set 'boston'"),
    (["--data", "yacht", "--split", "20"], "yacht has splits 0..19, got 20"),
    (["--inference", "hmc"], "invalid choice: 'hmc'"),
])
def test_command_line_rejects_bad_input(uci, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        bnn.main(argv + ["--out", str(tmp_path)])
    assert message in capsys.readouterr().err


def test_run_split_takes_epochs_batch_and_step_scale_from_settings(require_dataset,
                                                                   monkeypatch):
    """kin8nm's SETTINGS reach `fit`: SG-MCMC epochs and step multiplier, VI epochs."""
    require_dataset("uci/kin8nm")
    calls = []

    def record(x, y, inference, **kwargs):
        calls.append((inference, kwargs))
        raise StopIteration

    monkeypatch.setattr(bnn, "fit", record)
    setting = bnn.SETTINGS["kin8nm"]
    for inference in ("vi", "sghmc"):
        with pytest.raises(StopIteration):
            bnn.run_split("kin8nm", 0, inference, progress=False)
    (_, vi), (_, sghmc) = calls
    assert (vi["epochs"], vi["batch_size"]) == (setting.vi_epochs, setting.batch_size)
    assert "step_scale" not in vi
    assert (sghmc["epochs"], sghmc["step_scale"]) == (setting.sgmcmc_epochs, 4.)
    assert bnn.SAMPLERS["sghmc"](100, 4.).learning_rate == pytest.approx(4 * 0.05 / 100)


@pytest.mark.parametrize("weight_precision", [1., None])
def test_vi_observes_the_weight_precision_unless_it_is_learnt(monkeypatch, weight_precision):
    """ZhuSuan's bnn_vi prior by default (lambda observed at 1); None puts q(lambda) in."""
    seen = []
    elbo = bnn.inference.elbo

    def record(model, observed, variational, **kwargs):
        seen.append((dict(observed), set(variational.stochastic_nodes)))
        return elbo(model, observed, variational=variational, **kwargs)

    monkeypatch.setattr(bnn.inference, "elbo", record)
    torch.manual_seed(3)
    bnn.fit(torch.randn(16, 2), torch.randn(16), "vi", epochs=1, batch_size=16,
            n_particles=3, n_samples=5, weight_precision=weight_precision, progress=False)
    observed, guide_nodes = seen[0]
    if weight_precision is None:
        assert "lambda" not in observed and "lambda" in guide_nodes
    else:
        torch.testing.assert_close(observed["lambda"], torch.ones(3))
        assert "lambda" not in guide_nodes and {"tau", "w0", "w1"} <= guide_nodes
