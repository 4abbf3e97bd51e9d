"""SGLD, pSGLD, SGHMC and SGNHT: the double-well of Chen et al. (2014), data scaling, errors.

Statistical checks use many independent chains (a batch axis) and keep only
each chain's final state, so the draws are independent and their number is
exactly the effective sample size the thresholds are derived for.
"""
import collections
import math

import numpy as np
import pytest
import torch

import inference
import ppl
from inference.sgmcmc import minibatch_gradient



# -- the double well: U(x) = -2 x^2 + x^4, gradients with N(0, 2^2) noise ------

GRID = np.linspace(-3., 3., 1201)
DX = GRID[1] - GRID[0]
N_CHAINS = 5000
BANDWIDTH = 0.1


def _true_density():
    log_p = 2 * GRID ** 2 - GRID ** 4
    p = np.exp(log_p - log_p.max())
    return p / (p.sum() * DX)


def _kde_l1(draws, density):
    """L1 distance between a Gaussian KDE of `draws` and `density` on GRID."""
    z = (GRID[:, None] - draws[None, :]) / BANDWIDTH
    kde = np.exp(-0.5 * z ** 2).sum(1) / (len(draws) * BANDWIDTH * math.sqrt(2 * math.pi))
    return np.abs(kde - density).sum() * DX


@pytest.fixture(scope="module")
def double_well():
    """(density, L1 threshold): twice the mean KDE L1 error of exact draws of the same size.

    Exact draws come from the inverse CDF on the grid; with 5000 draws their
    mean L1 is ~0.05 (sd ~0.01), so the threshold (~0.1) leaves room for a
    small discretization bias and fails a sampler at the wrong temperature.
    """
    density = _true_density()
    cdf = np.cumsum(density) * DX
    rng = np.random.default_rng(0)
    exact = [_kde_l1(np.interp(rng.uniform(size=N_CHAINS), cdf / cdf[-1], GRID), density)
             for _ in range(10)]
    return density, 2 * float(np.mean(exact))


def noisy_double_well(values):
    """log p(x) = 2x^2 - x^4 + 2 e x, e ~ N(0, 1) per call: gradients 4x - 4x^3 + N(0, 4)."""
    x = values["x"]
    return 2 * x ** 2 - x ** 4 + 2 * torch.randn_like(x) * x


SAMPLERS = {
    "SGLD": (lambda: inference.SGLD(learning_rate=0.01), 1500),
    # decay close to 1: a preconditioner that follows the position would bias the
    # stationary law to p / G, because pSGLD leaves out the Gamma correction term.
    "PSGLD": (lambda: inference.PSGLD(learning_rate=0.03, decay=0.999), 1000),
    # step 0.1, C = 3 as in the paper: friction = 0.3, B-hat = lr * Var[grad] / 2 = 0.02
    "SGHMC": (lambda: inference.SGHMC(learning_rate=0.01, friction=0.3,
                                      variance_estimate=0.02), 800),
    "SGHMC first order": (lambda: inference.SGHMC(learning_rate=0.01, friction=0.3,
                                                  variance_estimate=0.02,
                                                  second_order=False), 800),
    # the thermostat finds the friction itself: no variance estimate given
    "SGNHT": (lambda: inference.SGNHT(learning_rate=0.01, variance_extra=0.1), 1000),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_double_well_density(name, double_well):
    """All chains start in the right-hand well; they must fill both wells in proportion."""
    density, threshold = double_well
    make, n_steps = SAMPLERS[name]
    sampler = make()
    latent = {"x": torch.ones(N_CHAINS, dtype=torch.float64)}
    for _ in range(n_steps):
        latent, _ = sampler.sample(noisy_double_well, {}, latent)
    l1 = _kde_l1(latent["x"].numpy(), density)
    assert l1 < threshold, f"{name}: KDE L1 error {l1:.4f} >= {threshold:.4f}"


def test_wrong_temperature_is_caught(double_well):
    """The check has power: SGLD with its noise doubled in variance fails it."""
    density, threshold = double_well
    sampler = inference.SGLD(learning_rate=0.01)

    def hot(values):  # log p / 2: the same chain as sampling p at temperature 2
        return noisy_double_well(values) / 2

    latent = {"x": torch.ones(N_CHAINS, dtype=torch.float64)}
    for _ in range(1500):
        latent, _ = sampler.sample(hot, {}, latent)
    assert _kde_l1(latent["x"].numpy(), density) > threshold


# -- minibatches and data_scale -------------------------------------------------

N_DATA, BATCH = 100, 10


@ppl.meta_bayesian_net()
def normal_mean(y_shape):
    """mu ~ N(0, 1), y_i ~ N(mu, 1): the posterior is N(sum y / (N + 1), 1 / (N + 1))."""
    bn = ppl.BayesianNet()
    mu = bn.normal("mu", torch.zeros(()), std=1.)
    bn.normal("y", mu[..., None] * torch.ones(y_shape), std=1., group_ndims=1)
    return bn


def test_data_scale_multiplies_only_the_named_nodes():
    y = torch.randn(BATCH)
    mu = torch.randn(3)
    gradient = minibatch_gradient(normal_mean(y.shape), {"y": y}, data_scale={"y": 7.})
    _, grads = gradient({"mu": mu})
    expected = -mu + 7. * (y.sum() - BATCH * mu)
    torch.testing.assert_close(grads["mu"], expected)


def minibatches(n_chains):
    """Each chain its own minibatch (B of N, with replacement), so chains stay independent."""
    return torch.randint(N_DATA, (n_chains, BATCH))


# The minibatch gradient's variance is V = N^2 / B * var(y) ~ 1000.
@pytest.mark.parametrize("make", [
    lambda: inference.SGLD(learning_rate=2e-4),
    # B-hat = lr * V / 2 = 0.1 of the friction 0.5 is gradient noise already
    lambda: inference.SGHMC(learning_rate=2e-4, friction=0.5, variance_estimate=0.1),
], ids=["SGLD", "SGHMC"])
def test_minibatch_posterior_of_a_normal_mean(make):
    """Minibatches of 10 out of 100 with data_scale N/B recover the exact posterior.

    1000 independent chains: the mean is checked within 5 standard errors,
    the variance within 25% (the standard error of a variance from 1000 draws
    is 4.5%; step size and minibatch noise add up to 5% for SGLD). Without
    `data_scale` the variance would be ~9 times too large.
    """
    y = 1.5 + torch.randn(N_DATA, dtype=torch.float64)
    post_var = 1. / (N_DATA + 1)
    post_mean = float(y.sum()) * post_var
    n_chains = 1000
    model = normal_mean((n_chains, BATCH))
    sampler = make()
    latent = {"mu": torch.ones(n_chains, dtype=torch.float64)}
    for _ in range(800):
        latent, _ = sampler.sample(model, {"y": y[minibatches(n_chains)]}, latent,
                                   data_scale={"y": N_DATA / BATCH})
    mu = latent["mu"]
    se = math.sqrt(post_var / n_chains)
    assert abs(float(mu.mean()) - post_mean) < 5 * se
    assert abs(float(mu.var()) / post_var - 1) < 0.25


# -- state between calls, errors ----------------------------------------------

def test_momentum_carries_over_between_calls():
    """Noise-free first-order SGHMC on log p = -x^2 / 2: v <- v - lr x, x <- x + v."""
    sampler = inference.SGHMC(learning_rate=0.01, friction=0., n_iter_resample_v=None,
                              second_order=False)

    def standard_normal(values):
        return -0.5 * (values["x"] ** 2).sum()

    start = torch.linspace(-1., 1., 4, dtype=torch.float64)
    samples, info = sampler.sample(standard_normal, {}, {"x": start.clone()})
    v = sampler.state.momentum["x"]
    samples, _ = sampler.sample(standard_normal, {}, samples)
    torch.testing.assert_close(sampler.state.momentum["x"], v - 0.01 * (start + v))
    torch.testing.assert_close(samples["x"], start + v + sampler.state.momentum["x"])
    assert sampler.state.step == 2 and info._fields == ("q", "mean_k", "log_joint")


def _standard_normal(values):
    return -0.5 * (values["x"] ** 2).sum()


def test_latent_tensors_are_updated_in_place_as_zhusuan_variables():
    """ZhuSuan: `sample_op, info = sgmcmc.sample(...)` assigns the new samples to the
    latent Variables. The caller's tensors (an nn.Parameter too) hold info.q after each
    call; returned samples are fresh and never overwritten by a later call."""
    sampler = inference.SGLD(learning_rate=0.1)
    x = torch.zeros(5, dtype=torch.float64)
    kept = []
    for _ in range(3):
        _, info = sampler.sample(_standard_normal, {}, {"x": x})
        assert torch.equal(x, info.q["x"]) and info.q["x"] is not x
        kept.append(info.q["x"])
    assert not torch.equal(kept[0], kept[1]) and not torch.equal(kept[1], kept[2])

    latent, functional = {"x": torch.zeros(5, dtype=torch.float64)}, []
    for _ in range(3):
        latent, _ = sampler.sample(_standard_normal, {}, latent)
        functional.append(latent["x"])
    assert not torch.equal(functional[0], functional[1])
    assert len({id(t) for t in functional}) == 3

    weights = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    before = weights.detach().clone()
    _, info = inference.SGHMC(0.01).sample(_standard_normal, {}, {"x": weights})
    assert torch.equal(weights.detach(), info.q["x"]) and not torch.equal(weights, before)
    assert weights.requires_grad and weights.is_leaf

    expanded = torch.zeros(1, dtype=torch.float64).expand(5)
    _, info = sampler.sample(_standard_normal, {}, {"x": expanded})
    assert torch.equal(expanded, torch.zeros(5, dtype=torch.float64))  # not writable: left


@pytest.mark.parametrize("make, fields", [
    (lambda: inference.SGLD(0.1), ("q", "log_joint")),
    (lambda: inference.PSGLD(0.1, "rms", None), ("q", "log_joint", "preconditioner")),
    (lambda: inference.SGHMC(0.01, 0.25, 0., 20, True), ("q", "mean_k", "log_joint")),
    (lambda: inference.SGNHT(0.01, 0., 1., None, True, True),
     ("q", "mean_k", "alpha", "log_joint")),
])
def test_info_is_zhusuans_namedtuple_of_dicts_per_latent(make, fields):
    latent = {"x": torch.zeros(3, 2), "y": torch.zeros(3)}

    def log_joint(values):
        return -0.5 * (values["x"] ** 2).sum(-1) - 0.5 * values["y"] ** 2
    samples, info = make().sample(log_joint, {}, latent)
    assert type(info).__name__ == "SGMCMCInfo" and info._fields == fields
    assert info.q is samples and set(info.q) == {"x", "y"}
    for field in fields[1:]:
        if field != "log_joint":
            assert set(getattr(info, field)) == {"x", "y"}


def test_psgld_takes_zhusuans_positional_arguments():
    hparams = collections.namedtuple("RMSHParams", "decay epsilon")(decay=0.5, epsilon=0.1)
    sampler = inference.PSGLD(0.1, "rms", hparams)
    assert (sampler.decay, sampler.epsilon, sampler.add_noise) == (0.5, 0.1, True)
    with pytest.raises(TypeError):
        inference.SGLD(0.1, False)  # add_noise is keyword only


def test_sgnht_scalar_thermostat_per_latent():
    """use_vector_alpha=False (ZhuSuan's mixture example): one thermostat per latent, driven
    by the mean of v**2 over all its elements; True: one per element."""
    x = torch.zeros(1000, dtype=torch.float64)
    scalar = inference.SGNHT(learning_rate=0.2, variance_extra=0.1, tune_rate=0.01,
                             second_order=False, use_vector_alpha=False)
    _, info = scalar.sample(_standard_normal, {}, {"x": x})
    assert info.alpha["x"].shape == () and info.mean_k["x"].shape == ()
    v = scalar.state.momentum["x"]
    torch.testing.assert_close(info.mean_k["x"], (v ** 2).mean())
    torch.testing.assert_close(info.alpha["x"], torch.tensor(0.1 + 0.01 * (float(
        (v ** 2).mean()) - 0.2), dtype=torch.float64))
    vector = inference.SGNHT(learning_rate=0.2, variance_extra=0.1, use_vector_alpha=True)
    _, info = vector.sample(_standard_normal, {}, {"x": torch.zeros(7, 2)})
    assert info.alpha["x"].shape == (7, 2) and info.mean_k["x"].shape == (7, 2)
    with pytest.raises(ValueError, match="use_vector_alpha"):
        inference.SGNHT(0.1, use_vector_alpha="yes")


def test_non_finite_gradient_names_the_node():
    sampler = inference.SGLD(learning_rate=0.1)

    def bad(values):
        return -(values["a"] ** 2).sum() + torch.sqrt(values["b"]).sum()

    with pytest.raises(FloatingPointError, match="'b'"):
        sampler.sample(bad, {}, {"a": torch.ones(2), "b": -torch.ones(2)})


def test_bad_arguments_are_reported():
    y = torch.randn(BATCH)
    model = normal_mean(y.shape)
    with pytest.raises(ValueError, match="plain log_joint"):
        minibatch_gradient(noisy_double_well, {}, {"x": 2.})({"x": torch.ones(1)})
    with pytest.raises(ValueError, match="not stochastic nodes"):
        minibatch_gradient(model, {"y": y}, {"z": 2.})({"mu": torch.zeros(())})
    with pytest.raises(ValueError, match="latent nodes \\['mu'\\]"):
        minibatch_gradient(model, {"y": y}, {"mu": 2.})({"mu": torch.zeros(())})
    with pytest.raises(TypeError, match="floating-point"):
        inference.SGLD(0.1).sample(model, {"y": y}, {"mu": torch.zeros((), dtype=torch.long)})
    with pytest.raises(ValueError, match="does not affect"):
        inference.SGLD(0.1).sample(noisy_double_well, {},
                                   {"x": torch.ones(2), "unused": torch.ones(2)})
    with pytest.raises(ValueError, match="variance_estimate"):
        inference.SGHMC(0.1, friction=0.1, variance_estimate=0.2)
    sampler = inference.SGLD(0.1)
    sampler.sample(noisy_double_well, {}, {"x": torch.ones(3)})
    with pytest.raises(ValueError, match="shape"):
        sampler.sample(noisy_double_well, {}, {"x": torch.ones(4)})
