"""Targets with known posteriors for the HMC / NUTS tests, and the MCSE-based check."""
import numpy as np
import torch

import ppl
from inference import diagnostics


def assert_moments(draws, mean, second_moment, n_mcse=5., name="draws"):
    """Posterior mean and E[x^2] (or E[x x^T]) within `n_mcse` Monte Carlo standard errors.

    draws: (chain, draw, *shape); mean: shape; second_moment: shape, or shape +
    shape for the full matrix of second moments. The MCSEs come from our ESS
    estimates of each statistic.
    """
    draws = torch.as_tensor(draws).double().cpu().numpy()
    mean = np.asarray(mean, dtype=float)
    flat = draws.reshape(draws.shape[:2] + (-1,))
    err = (flat.mean((0, 1)) - mean.reshape(-1)) / np.atleast_1d(diagnostics.mcse_mean(flat))
    assert np.abs(err).max() < n_mcse, f"{name}: mean off by {np.abs(err).max():.1f} MCSE"
    second_moment = np.asarray(second_moment, dtype=float)
    if second_moment.shape == mean.shape:
        products = flat ** 2
        target = second_moment.reshape(-1)
    else:
        rows, cols = np.triu_indices(flat.shape[-1])
        products = flat[..., rows] * flat[..., cols]
        target = second_moment.reshape(flat.shape[-1], -1)[rows, cols]
    err = (products.mean((0, 1)) - target) / np.atleast_1d(diagnostics.mcse_mean(products))
    assert np.abs(err).max() < n_mcse, \
        f"{name}: second moments off by {np.abs(err).max():.1f} MCSE"


def correlated_gaussian(dim=50, seed=1, device="cpu"):
    """A plain log joint N(mu, cov) with variances from 0.1 to 10 along random axes, for
    positions on `device` (the moments come back as numpy arrays)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    cov = (q * torch.logspace(-1, 1, dim, dtype=torch.float64)) @ q.T
    precision = torch.linalg.inv(cov).float().to(device)
    mu = torch.randn(dim, generator=g).to(device)

    def log_joint(values):
        z = values["z"] - mu
        return -0.5 * ((z @ precision) * z).sum(-1)

    mean = mu.cpu().numpy()
    return log_joint, mean, cov.numpy() + np.outer(mean, mean)


@ppl.meta_bayesian_net()
def beta_bernoulli(n):
    bn = ppl.BayesianNet()
    p = bn.beta("p", torch.tensor(2.), torch.tensor(3.))
    bn.bernoulli("x", probs=p[..., None].expand(p.shape + (n,)), group_ndims=1)
    return bn


@ppl.meta_bayesian_net()
def gamma_poisson(n):
    bn = ppl.BayesianNet()
    rate = bn.gamma("rate", torch.tensor(3.), torch.tensor(2.))
    bn.poisson("y", rate[..., None].expand(rate.shape + (n,)), group_ndims=1)
    return bn


@ppl.meta_bayesian_net()
def normal_normal(n, dim):
    bn = ppl.BayesianNet()
    mu = bn.normal("mu", torch.zeros(dim), std=2., group_ndims=1)
    bn.normal("y", mu[..., None, :].expand(mu.shape[:-1] + (n, dim)), std=1., group_ndims=2)
    return bn


def conjugate_cases():
    """(name, model, observed, latent name, posterior mean, posterior E[x^2])."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(20, generator=g) < 0.3).float()
    a, b = 2. + float(x.sum()), 3. + 20. - float(x.sum())
    beta_mean, beta_var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    y = torch.poisson(torch.full((10,), 1.7), generator=g)
    shape, rate = 3. + float(y.sum()), 2. + 10.
    obs = torch.randn(5, 3, generator=g) + torch.tensor([1., -2., 0.5])
    precision = 1. / 4. + 5.
    nn_mean = obs.sum(0).numpy() / precision
    return [
        ("beta-bernoulli", beta_bernoulli(20), {"x": x}, "p", beta_mean,
         beta_var + beta_mean ** 2),
        ("gamma-poisson", gamma_poisson(10), {"y": y}, "rate", shape / rate,
         shape / rate ** 2 + (shape / rate) ** 2),
        ("normal-normal", normal_normal(5, 3), {"y": obs}, "mu", nn_mean,
         1. / precision + nn_mean ** 2),
    ]
