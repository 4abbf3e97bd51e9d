"""models.bayesian.svgp: the bound's math, bad input, and short runs on real data."""
import json
import math

import pytest
import torch
from torch.distributions import MultivariateNormal

import inference
import ppl
from models.bayesian import svgp as svgp_lib
from models.bayesian.svgp import SVGP, _standardize, initial_inducing
from models.data.uci import load_uci


@pytest.fixture
def boston(require_dataset):
    require_dataset("uci/bostonHousing")
    data = load_uci("bostonHousing", 0, dtype=torch.float64)
    x, x_test, _, _ = _standardize(data.x_train, data.x_test)
    y, y_test, _, _ = _standardize(data.y_train, data.y_test)
    return x, y, x_test, y_test


def _set_optimal_q(gp, x, y):
    """Put q(v) at the exact posterior of v = L^-1 f(X) when the inducing inputs are X."""
    k = gp.kernel(x, x)
    chol = torch.linalg.cholesky(k + gp.jitter * torch.eye(len(x), dtype=x.dtype))
    noisy = k + gp.noise_variance * torch.eye(len(x), dtype=x.dtype)
    post_mean = k @ torch.linalg.solve(noisy, y)
    post_cov = k - k @ torch.linalg.solve(noisy, k)
    whiten = torch.linalg.solve_triangular(chol, torch.eye(len(x), dtype=x.dtype), upper=False)
    s = whiten @ post_cov @ whiten.T
    c = torch.linalg.cholesky(s + 1e-12 * torch.eye(len(x), dtype=x.dtype))
    with torch.no_grad():
        gp.q_mean.copy_(whiten @ post_mean)
        gp.q_tril_raw.copy_(c.tril(-1) + torch.diag(torch.log(torch.expm1(c.diagonal()))))


def test_bound_with_all_points_inducing_equals_the_exact_marginal_likelihood(boston):
    """Z = X and q(u) = p(u | y): Titsias's bound is tight, log N(y; 0, K + s^2 I)."""
    x, y = boston[0][:40], boston[1][:40]
    gp = SVGP(x, jitter=1e-10)
    with torch.no_grad():
        gp.raw_lengthscale.fill_(1.5)
        gp.raw_noise.fill_(-1.)
    _set_optimal_q(gp, x, y)
    k = gp.kernel(x, x) + gp.noise_variance * torch.eye(len(x), dtype=x.dtype)
    exact = MultivariateNormal(torch.zeros_like(y), covariance_matrix=k).log_prob(y)
    with torch.no_grad():
        assert float(gp.bound(x, y)) == pytest.approx(float(exact), abs=1e-5)
        # any other q is strictly below
        gp.q_mean.add_(0.1)
        assert float(gp.bound(x, y)) < float(exact) - 1e-3


def test_sampled_elbo_of_model_and_guide_matches_the_closed_form(boston):
    """inference.elbo over the ppl model and guide estimates the same bound (within 5 s.e.)."""
    x, y = boston[0][:100], boston[1][:100]
    gp = SVGP(initial_inducing(x, 20))
    with torch.no_grad():
        gp.q_mean.normal_(0, 0.5)
        gp.q_tril_raw.add_(0.05 * torch.randn_like(gp.q_tril_raw).tril())
        lower_bound = inference.elbo(ppl.as_meta_bn(gp.model, x, 4000), {"y": y},
                                     variational=gp.guide(x, 4000))
        draws = torch.as_tensor(lower_bound)
        se = float(draws.std() / math.sqrt(len(draws)))
        assert float(draws.mean()) == pytest.approx(float(gp.bound(x, y)), abs=5 * se)


def test_bernoulli_quadrature_matches_monte_carlo():
    torch.manual_seed(1)
    x = torch.randn(30, 2, dtype=torch.float64)
    y = (x[:, 0] > 0).double()
    gp = SVGP(x[:10], likelihood="bernoulli")
    with torch.no_grad():
        gp.q_mean.normal_()
        mean, var = gp.marginals(x)
        f = mean + var.sqrt() * torch.randn(200_000, len(x), dtype=x.dtype)
        draws = torch.special.log_ndtr((2 * y - 1) * f)
        se = draws.std(0) / math.sqrt(len(f))
        assert torch.all((draws.mean(0) - gp.expected_log_lik(x, y)).abs() < 5 * se + 1e-9)


def test_kernel_matches_the_ard_rbf_formula_with_a_finite_gradient_at_coincident_points():
    """K(a, b) = s^2 exp(-|(a - b) / l|^2 / 2), exactly s^2 where inputs coincide, and
    gradients finite there (inducing inputs start at training inputs)."""
    torch.manual_seed(0)
    gp = SVGP(torch.randn(6, 3, dtype=torch.float64))
    with torch.no_grad():
        gp.raw_lengthscale.copy_(torch.tensor([-1., 0., 2.]))
        gp.raw_scale.fill_(0.5)
    x = torch.cat([gp.inducing.detach()[:2], torch.randn(4, 3, dtype=torch.float64)])
    lengthscale = torch.nn.functional.softplus(gp.raw_lengthscale)
    scaled = (x[:, None] - gp.inducing[None]) / lengthscale
    expected = torch.nn.functional.softplus(gp.raw_scale) * torch.exp(
        -0.5 * scaled.pow(2).sum(-1))
    k = gp.kernel(x, gp.inducing)
    torch.testing.assert_close(k, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(k[[0, 1], [0, 1]],
                               torch.nn.functional.softplus(gp.raw_scale).expand(2))
    k.sum().backward()
    assert torch.isfinite(gp.inducing.grad).all() and torch.isfinite(gp.raw_lengthscale.grad).all()


def test_inducing_points_of_the_wrong_dimension_are_a_clear_error():
    gp = SVGP(torch.randn(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError,
                       match=r"inputs x must be a tensor \[n, 3\].*got shape \(10, 4\)"):
        gp.bound(torch.randn(10, 4, dtype=torch.float64), torch.randn(10, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"`inducing` must be a floating-point tensor \[M, D\]"):
        SVGP(torch.randn(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="likelihood must be one of"):
        SVGP(torch.randn(5, 3), likelihood="poisson")


def test_command_line_fits_boston_and_writes_metrics(boston, tmp_path):
    """150 full-batch steps on split 0: far better than the mean predictor (RMSE ~7.9)."""
    metrics = svgp_lib.main(["--split", "0", "--epochs", "150", "--n-inducing", "50",
                             "--out", str(tmp_path), "--no-progress",
                             "--checkpoint", str(tmp_path / "svgp.pt")])
    assert (tmp_path / "svgp.pt.split0").is_file()
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["test_rmse"] == metrics["test_rmse"] and written["n_splits"] == 1
    assert metrics["test_rmse"] < 5. and metrics["test_nll"] < 3.2


def test_classification_on_breast_cancer():
    """The probit SVGP on scikit-learn's breast cancer set: under 10% test error."""
    datasets = pytest.importorskip("sklearn.datasets")
    features, labels = datasets.load_breast_cancer(return_X_y=True)
    order = torch.randperm(len(labels))
    x = torch.tensor(features, dtype=torch.float64)[order]
    y = torch.tensor(labels, dtype=torch.float64)[order]
    x, x_test, _, _ = _standardize(x[:450], x[450:])
    y, y_test = y[:450], y[450:]
    gp = SVGP(initial_inducing(x, 30), likelihood="bernoulli")
    svgp_lib.fit(gp, x, y, 150, progress=False)
    p = gp.predict(x_test)
    assert p.shape == y_test.shape
    assert float(((p > 0.5).double() != y_test).double().mean()) < 0.1
