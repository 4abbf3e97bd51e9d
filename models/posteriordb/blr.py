"""Bayesian linear regression (posteriordb `sblri-blr`).

    beta ~ N(0, 10)  [D]    sigma ~ HalfNormal(10)    y ~ N(X beta, sigma)

Latent values may carry leading axes (chains, draws): everything broadcasts.
"""
import torch

import ppl

POSTERIOR = "sblri-blr"


@ppl.meta_bayesian_net(scope="blr")
def build_model(x):
    """`x`: [N, D] the design matrix."""
    bn = ppl.BayesianNet()
    beta = bn.normal("beta", x.new_zeros(x.shape[1]), std=10., group_ndims=1)
    sigma = bn.half_normal("sigma", x.new_tensor(10.))
    bn.normal("y", beta @ x.T, std=sigma[..., None], group_ndims=1)
    return bn


def from_data(data):
    """`(meta_bn, observed)` from posteriordb's data dict."""
    x = torch.tensor(data["X"], dtype=torch.float64)
    return build_model(x), {"y": torch.tensor(data["y"], dtype=torch.float64)}


def latent_from_params(params, data):
    """The model's latent values from posteriordb's parameters (dict name -> tensor)."""
    return {"beta": params["beta"], "sigma": params["sigma"]}
