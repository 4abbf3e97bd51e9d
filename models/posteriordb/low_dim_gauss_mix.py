"""Two-component Gaussian mixture (posteriordb `low_dim_gauss_mix-low_dim_gauss_mix`).

    mu ~ N(0, 2), ordered  [2]    sigma ~ HalfNormal(2)  [2]    theta ~ Beta(5, 5)
    y[n] ~ theta N(mu[1], sigma[1]) + (1 - theta) N(mu[2], sigma[2])

The ordered `mu` is sampled as `mu_lower` (real) and `mu_gap = mu[2] - mu[1]`
(positive), with flat base densities and the N(0, 2) prior on `mu` as a factor:
the map (mu_lower, mu_gap) -> mu has unit Jacobian, and the unconstrained
coordinates (mu_lower, log mu_gap) are Stan's own for `ordered[2]`. The mixture
likelihood is a factor (log-sum-exp of the two components). Latent values may
carry leading axes (chains, draws): everything broadcasts.
"""
import torch
from torch.distributions import constraints

import ppl
from ppl.distributions import Normal

POSTERIOR = "low_dim_gauss_mix-low_dim_gauss_mix"


@ppl.meta_bayesian_net(scope="low_dim_gauss_mix")
def build_model(y):
    """`y`: [N] the data (scored by a factor, not a node: ppl has no mixture family)."""
    bn = ppl.BayesianNet()
    mu_lower = bn.improper_uniform("mu_lower", constraints.real, dtype=y.dtype)
    mu_gap = bn.improper_uniform("mu_gap", constraints.positive, dtype=y.dtype)
    mu = bn.deterministic("mu", torch.stack([mu_lower.tensor, mu_lower + mu_gap], -1))
    bn.factor("mu_prior", Normal(torch.zeros_like(mu), std=2., group_ndims=1).log_prob(mu))
    sigma = bn.half_normal("sigma", y.new_full([2], 2.), group_ndims=1)
    theta = bn.beta("theta", y.new_tensor(5.), y.new_tensor(5.))
    components = Normal(mu[..., None, :], std=sigma[..., None, :]).log_prob(y[:, None])
    weights = torch.stack([torch.log(theta.tensor), torch.log1p(-theta.tensor)], -1)
    bn.factor("y", torch.logsumexp(components + weights[..., None, :], -1).sum(-1))
    return bn


def from_data(data):
    """`(meta_bn, observed)` from posteriordb's data dict (the data lives in the model)."""
    return build_model(torch.tensor(data["y"], dtype=torch.float64)), {}


def latent_from_params(params, data):
    """The model's latent values from posteriordb's parameters (dict name -> tensor)."""
    mu = params["mu"]
    return {"mu_lower": mu[..., 0], "mu_gap": mu[..., 1] - mu[..., 0],
            "sigma": params["sigma"], "theta": params["theta"]}
