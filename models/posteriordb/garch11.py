"""GARCH(1, 1) volatility model (posteriordb `garch-garch11`).

    mu, alpha0 > 0, alpha1 in (0, 1), beta1 in (0, 1 - alpha1): flat priors
    sigma[1] = sigma1 (known),
    sigma[t]^2 = alpha0 + alpha1 (y[t-1] - mu)^2 + beta1 sigma[t-1]^2
    y[t] ~ N(mu, sigma[t])

beta1's upper bound depends on alpha1, so the model samples its share
`beta1_share = beta1 / (1 - alpha1)` in (0, 1) instead (the same unconstrained
coordinate as Stan's) and adds the log-Jacobian log(1 - alpha1) as a factor,
which keeps beta1's prior flat. Latent values may carry leading axes (chains,
draws): everything broadcasts.
"""
import torch
from torch.distributions import constraints

import ppl

POSTERIOR = "garch-garch11"


def volatility(y, sigma1, mu, alpha0, alpha1, beta1):
    """sigma `[..., T]` of the recursion, in closed form, in O(T).

    With a[1] = sigma1^2 and a[t] = alpha0 + alpha1 (y[t-1] - mu)^2, the
    recursion s[t] = a[t] + beta1 s[t-1] for s = sigma^2 unrolls to
    s[t] = sum_{j <= t} beta1^(t-j) a[j] = beta1^t sum_{j <= t} beta1^(-j) a[j]:
    a cumulative sum, taken in log space (`logcumsumexp`) since beta1^(-j)
    overflows for small beta1. Every term is positive, so nothing cancels.
    """
    innovations = alpha0[..., None] + alpha1[..., None] * (y[:-1] - mu[..., None]) ** 2
    first = (y.new_tensor(sigma1) ** 2).expand(innovations.shape[:-1] + (1,))
    a = torch.cat([first, innovations], -1)
    steps = torch.arange(len(y), dtype=y.dtype, device=y.device)
    log_beta = torch.log(beta1)[..., None]
    log_s = steps * log_beta + torch.logcumsumexp(a.log() - steps * log_beta, -1)
    return torch.exp(0.5 * log_s)


@ppl.meta_bayesian_net(scope="garch11")
def build_model(y, sigma1):
    """`y`: [T] the series (its past values drive the volatility); `sigma1`: sigma[1]."""
    bn = ppl.BayesianNet()
    mu = bn.improper_uniform("mu", constraints.real, dtype=y.dtype)
    alpha0 = bn.improper_uniform("alpha0", constraints.positive, dtype=y.dtype)
    alpha1 = bn.uniform("alpha1", y.new_tensor(0.), y.new_tensor(1.))
    beta1_share = bn.uniform("beta1_share", y.new_tensor(0.), y.new_tensor(1.))
    bn.factor("beta1_log_jacobian", torch.log1p(-alpha1.tensor))
    beta1 = bn.deterministic("beta1", beta1_share * (1. - alpha1))
    sigma = volatility(y, sigma1, mu.tensor, alpha0.tensor, alpha1.tensor, beta1)
    bn.normal("y", mu[..., None], std=sigma, group_ndims=1)
    return bn


def from_data(data):
    """`(meta_bn, observed)` from posteriordb's data dict."""
    y = torch.tensor(data["y"], dtype=torch.float64)
    return build_model(y, data["sigma1"]), {"y": y}


def latent_from_params(params, data):
    """The model's latent values from posteriordb's parameters (dict name -> tensor)."""
    return {"mu": params["mu"], "alpha0": params["alpha0"], "alpha1": params["alpha1"],
            "beta1_share": params["beta1"] / (1. - params["alpha1"])}
