"""Autoregressive model of order K (posteriordb `arK-arK`).

    alpha ~ N(0, 10)    beta ~ N(0, 10)  [K]    sigma ~ HalfCauchy(2.5)
    y[t] ~ N(alpha + sum_k beta[k] y[t - k], sigma)   for t > K

Latent values may carry leading axes (chains, draws): everything broadcasts.
"""
import torch

import ppl

POSTERIOR = "arK-arK"


def lagged(y, order):
    """`[T - order, order]` matrix whose row t holds y[t + order - 1], ..., y[t] (lags 1..K)."""
    return torch.stack([y[order - lag:len(y) - lag] for lag in range(1, order + 1)], -1)


@ppl.meta_bayesian_net(scope="arK")
def build_model(y, order):
    """`y`: [T] the series (its first `order` values are conditioned on)."""
    bn = ppl.BayesianNet()
    alpha = bn.normal("alpha", y.new_tensor(0.), std=10.)
    beta = bn.normal("beta", y.new_zeros(order), std=10., group_ndims=1)
    sigma = bn.half_cauchy("sigma", y.new_tensor(2.5))
    mean = alpha[..., None] + beta @ lagged(y, order).T
    bn.normal("y", mean, std=sigma[..., None], group_ndims=1)
    return bn


def from_data(data):
    """`(meta_bn, observed)` from posteriordb's data dict; `y` is observed from t = K + 1."""
    y = torch.tensor(data["y"], dtype=torch.float64)
    return build_model(y, data["K"]), {"y": y[data["K"]:]}


def latent_from_params(params, data):
    """The model's latent values from posteriordb's parameters (dict name -> tensor)."""
    return {name: params[name] for name in ("alpha", "beta", "sigma")}
