"""Eight schools, non-centered (posteriordb `eight_schools-eight_schools_noncentered`).

    theta_trans ~ N(0, 1)   [J]      mu ~ N(0, 5)      tau ~ HalfCauchy(5)
    theta = mu + tau * theta_trans   y ~ N(theta, sigma)   (sigma known)

Latent values may carry leading axes (chains, draws): everything broadcasts.
"""
import torch

import ppl

POSTERIOR = "eight_schools-eight_schools_noncentered"


@ppl.meta_bayesian_net(scope="eight_schools_noncentered")
def build_model(sigma):
    """`sigma`: [J] known standard errors of the schools' effects."""
    bn = ppl.BayesianNet()
    theta_trans = bn.normal("theta_trans", torch.zeros_like(sigma), std=1., group_ndims=1)
    mu = bn.normal("mu", sigma.new_tensor(0.), std=5.)
    tau = bn.half_cauchy("tau", sigma.new_tensor(5.))
    theta = bn.deterministic("theta", mu[..., None] + tau[..., None] * theta_trans)
    bn.normal("y", theta, std=sigma, group_ndims=1)
    return bn


def from_data(data):
    """`(meta_bn, observed)` from posteriordb's data dict."""
    sigma = torch.tensor(data["sigma"], dtype=torch.float64)
    return build_model(sigma), {"y": torch.tensor(data["y"], dtype=torch.float64)}


def latent_from_params(params, data):
    """The model's latent values from posteriordb's parameters (dict name -> tensor)."""
    mu, tau = params["mu"], params["tau"]
    return {"theta_trans": (params["theta"] - mu[..., None]) / tau[..., None], "mu": mu,
            "tau": tau}
