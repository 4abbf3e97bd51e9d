"""Step size and mass matrix adaptation: schedule, estimators, and the targets they reach."""
import functools
import math

import numpy as np
import pytest
import torch

import inference
from inference.mcmc import (DualAveraging, ExponentialMovingVariance, HMCState, Potential,
                            WelfordCovariance, find_initial_step_size, identity_metric,
                            window_schedule)
from inference.mcmc.integrators import leapfrog

# Compilation is tested in test_compile: the kernels here run eagerly.
NUTS = functools.partial(inference.NUTS, jit_compile=False)
HMC = functools.partial(inference.HMC, jit_compile=False)


def test_window_schedule_matches_stan():
    assert window_schedule(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    assert window_schedule(500) == [(75, 100), (100, 150), (150, 250), (250, 450)]
    assert window_schedule(150) == [(75, 100)]
    assert window_schedule(100) == [(15, 90)]  # 15% / 75% / 10% when too short
    assert window_schedule(19) == []


def test_welford_matches_numpy_and_regularizes_like_stan():
    """Stan's shrinkage n/(n+5) S + 5/(n+5) 1e-3 I, for diagonal and dense S alike."""
    rng = np.random.default_rng(0)
    draws = rng.standard_normal((30, 4, 3)) @ np.array([[1., 0.5, 0.], [0., 2., 0.], [0, 0, .1]])
    diag, dense = WelfordCovariance(), WelfordCovariance(dense=True)
    for x in torch.as_tensor(draws):
        diag.update(x)
        dense.update(x)
    n = 30
    for chain in range(4):
        cov = np.cov(draws[:, chain].T)
        assert np.allclose(diag.covariance(regularize=False)[chain], np.diag(cov))
        assert np.allclose(dense.covariance(regularize=False)[chain], cov)
        w = 5 / (n + 5)
        assert np.allclose(diag.covariance()[chain], (1 - w) * np.diag(cov) + w * 1e-3)
        assert np.allclose(dense.covariance()[chain], (1 - w) * cov + w * 1e-3 * np.eye(3))
    # no more draws than dimensions: S is singular; Stan's shrinkage on the directions the
    # draws span, and the null direction gets the smallest variance they do have
    few = WelfordCovariance(dense=True)
    for x in torch.as_tensor(draws[:3]):
        few.update(x)
    w = 5 / (3 + 5)
    for chain in range(4):
        cov = np.cov(draws[:3, chain].T)
        values, vectors = np.linalg.eigh(cov)
        assert values[0] < 1e-12 < values[1]
        estimate = few.covariance()[chain].numpy()
        for value, vector in zip(values[1:], vectors[:, 1:].T):
            assert np.allclose(estimate @ vector, ((1 - w) * value + w * 1e-3) * vector)
        null = vectors[:, 0]
        assert np.allclose(estimate @ null, ((1 - w) * values[1] + w * 1e-3) * null)
    # a chain whose draws never moved: Stan's shrinkage alone
    still = WelfordCovariance(dense=True)
    for _ in range(3):
        still.update(torch.ones(2, 3, dtype=torch.float64))
    assert torch.allclose(still.covariance(), torch.eye(3, dtype=torch.float64) * w * 1e-3)
    with pytest.raises(ValueError, match="at least 2"):
        WelfordCovariance().update(torch.zeros(2, 3)).covariance()


def test_dense_estimate_preconditions_a_strongly_correlated_posterior():
    """The regularized dense estimate keeps the small eigenvalues of a correlated target:
    all eigenvalues of estimate^-1 cov stay within the sampling spread of an n-draw
    covariance, (1 -+ 2 sqrt(D / n))^2. (Shrinking towards diag(S) instead puts the
    smallest at 0.33 here, and the step size shrinks with its square root.)"""
    dim, n = 10, 2000
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    cov = (q * np.logspace(-4, 0, dim)) @ q.T
    draws = rng.multivariate_normal(np.zeros(dim), cov, size=(n, 2))
    estimator = WelfordCovariance(dense=True)
    for x in torch.as_tensor(draws):
        estimator.update(x)
    spread = 2 * np.sqrt(dim / n)
    for estimate in estimator.covariance().numpy():
        ratios = np.linalg.eigvals(np.linalg.solve(estimate, cov)).real
        assert (1 - spread) ** 2 < ratios.min() and ratios.max() < (1 + spread) ** 2, ratios


def test_exponential_moving_variance_is_the_weighted_variance():
    rng = np.random.default_rng(1)
    draws = rng.standard_normal((40, 2, 3)) * [1., 3., 0.2] + 5.
    decay = 0.9
    ema = ExponentialMovingVariance(decay)
    for x in torch.as_tensor(draws):
        ema.update(x)
    weights = decay ** np.arange(39, -1, -1.)
    weights /= weights.sum()
    mean = np.einsum("t,tcd->cd", weights, draws)
    var = np.einsum("t,tcd->cd", weights, (draws - mean) ** 2)
    assert np.allclose(ema.mean.numpy(), mean) and np.allclose(ema.var.numpy(), var)


def test_dual_averaging_converges_per_chain():
    """With acceptance exp(-c * step), the fixed point is step = -log(target) / c."""
    rates = torch.tensor([0.1, 1., 10.], dtype=torch.float64)
    dual = DualAveraging(torch.ones(3, dtype=torch.float64), target_acceptance_rate=0.8,
                         t0=10)
    for _ in range(3000):
        dual.update(torch.exp(-rates * dual.step_size))
    expected = -math.log(0.8) / rates
    assert torch.allclose(dual.final_step_size, expected, rtol=0.02)
    dual.update(torch.tensor([math.nan, 2., -1.], dtype=torch.float64))  # clipped to [0, 1]
    assert torch.isfinite(dual.step_size).all()


def test_initial_step_size_brackets_half_acceptance():
    """Each chain stops where its one-step acceptance crosses 1/2 (for its own momentum);
    averaged over chains and fresh momenta, half the step accepts more, twice less."""
    scales = torch.tensor([0.1, 1., 10.]).repeat_interleave(100)[:, None]

    def log_joint(v):
        return -0.5 * ((v["z"] / scales) ** 2).sum(-1)

    potential = Potential(log_joint, None, {"z": torch.zeros(300, 50)})
    torch.manual_seed(0)
    x = torch.randn(300, 50) * scales
    state = HMCState(x, *potential(x))
    metric = identity_metric(300, 50)
    step = find_initial_step_size(state, potential, metric, torch.ones(300))

    def accept(eps):
        p = metric.sample_momentum()
        _, p_new, lp, _ = leapfrog(potential, metric, x, p, state.grad, eps[:, None])
        h0 = metric.kinetic_energy(p) - state.log_prob
        return torch.exp((h0 - metric.kinetic_energy(p_new) + lp).clamp(max=0.))

    for group in range(3):
        chains = slice(100 * group, 100 * (group + 1))
        assert accept(step / 2)[chains].mean() > 0.5
        assert accept(step * 2)[chains].mean() < 0.5
    # The found step scales with the target's scale (over a 100-fold range), up to the
    # factor-2 grid and the factor 2 between searches that stop going up or going down.
    medians = step.reshape(3, 100).median(1).values / torch.tensor([0.1, 1., 10.])
    assert medians.max() / medians.min() < 4.


GAUSSIAN_SCALES = torch.logspace(-0.5, 0.5, 6)


def _diagonal_gaussian(v):
    return -0.5 * ((v["z"] / GAUSSIAN_SCALES) ** 2).sum(-1)


@pytest.mark.parametrize("kernel", [
    NUTS(target_acceptance_rate=0.65),
    HMC(step_size=0.1, trajectory_length=2., jitter=0.2, adapt_step_size=True,
                  adapt_mass=True, target_acceptance_rate=0.65, t0=10),
], ids=["nuts", "hmc"])
def test_warmup_reaches_target_acceptance_and_posterior_scales(kernel):
    result = inference.mcmc.run(kernel, _diagonal_gaussian, init={"z": torch.zeros(8, 6)},
                                n_warmup=400, n_samples=200, progress=False, seed=0)
    # Dual averaging drives the mean acceptance statistic to the target; the final
    # buffer (last 50 warm-up iterations, fixed metric) shows it for every chain.
    final_buffer = result.warmup_stats["accept_prob"][:, -50:].mean(1)
    assert np.all(np.abs(final_buffer - 0.65) < 0.05), final_buffer
    # The averaged step size used afterwards is smaller than the adaptation's typical
    # step (Jensen: acceptance is concave in the log step): acceptance at or above the
    # target, but not near 1 (which would mean a needlessly small step).
    after = result.stats["accept_prob"].mean(1)
    assert np.all((after > 0.6) & (after < 0.95)), after
    assert np.all(result.stats["step_size"] == result.step_size.numpy()[:, None])
    # The inverse mass estimates the posterior variance from the last window (200 draws
    # per chain; with an ESS of 50 or more the standard error of its log is below
    # sqrt(2 / 50) = 0.2): within 4.5 standard errors, for each of the 48.
    ratio = result.inverse_mass_matrix / GAUSSIAN_SCALES ** 2
    assert (ratio.log().abs() < 0.9).all(), ratio


@pytest.mark.parametrize("n_warmup", [50, 100])
def test_short_warmup_of_hmc_ends_with_a_usable_step(n_warmup):
    """ZhuSuan's t0=100 moves dual averaging slowly: after the last metric update a
    short final buffer must not leave the step at ten times the heuristic one."""
    kernel = HMC(trajectory_length=3., adapt_step_size=True, adapt_mass="diag")
    result = inference.mcmc.run(kernel, _diagonal_gaussian, init={"z": torch.zeros(4, 6)},
                                n_warmup=n_warmup, n_samples=50, progress=False, seed=0)
    assert result.num_divergences.sum() == 0
    assert np.all(result.stats["accept_prob"].mean(1) > 0.4), result.stats["accept_prob"]


def test_dense_mass_estimates_the_covariance():
    cov = torch.tensor([[1., 0.9, 0.], [0.9, 1., -0.3], [0., -0.3, 0.5]])
    precision = torch.linalg.inv(cov)

    def log_joint(v):
        return -0.5 * ((v["z"] @ precision) * v["z"]).sum(-1)

    result = inference.mcmc.run(NUTS(adapt_mass="dense"), log_joint,
                                init={"z": torch.zeros(4, 3)}, n_warmup=500, n_samples=20,
                                progress=False, seed=0)

    estimate = result.inverse_mass_matrix
    assert estimate.shape == (4, 3, 3)
    # From the last window's 200 draws per chain (ESS 50 or more): variances within a
    # factor 2, and the 0.9 correlation to about 4 standard errors ((1 - r^2) / sqrt(ESS)).
    ratio = estimate.diagonal(dim1=-2, dim2=-1) / cov.diag()
    assert (ratio.log().abs() < 0.7).all(), ratio
    correlation = estimate[:, 0, 1] / (estimate[:, 0, 0] * estimate[:, 1, 1]).sqrt()
    assert ((correlation - 0.9).abs() < 0.1).all(), correlation


def test_dense_momenta_have_the_mass_matrix_as_covariance():
    from inference.mcmc import DenseMetric
    inverse_mass = torch.tensor([[[2., 0.5], [0.5, 1.]]], dtype=torch.float64)
    metric = DenseMetric(inverse_mass.expand(20000, 2, 2))
    torch.manual_seed(0)
    p = metric.sample_momentum()
    mass = torch.linalg.inv(inverse_mass[0])
    cov = torch.cov(p.T)
    # standard error of a covariance entry from n draws ~ sqrt((m_ii m_jj + m_ij^2) / n)
    se = torch.sqrt((mass.diag()[:, None] * mass.diag()[None] + mass ** 2) / 20000)
    assert ((cov - mass).abs() < 5 * se).all()
    v = DenseMetric(inverse_mass.expand(3, 2, 2)).velocity(p[:3])
    assert torch.allclose(v, p[:3] @ inverse_mass[0])
