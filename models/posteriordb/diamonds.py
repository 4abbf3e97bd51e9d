"""Diamond prices, a brms linear regression with 24 predictors (posteriordb `diamonds-diamonds`).

    b ~ N(0, 1)  [K - 1]    Intercept ~ StudentT(3, 8, 10)    sigma ~ HalfStudentT(3, 0, 10)
    Y ~ N(Intercept + Xc b, sigma),  Xc = X without its intercept column, centered

`sigma` has a flat base density on the positive reals and its half-t prior as a
factor (ppl has no half-t family). Latent values may carry leading axes
(chains, draws): everything broadcasts. The posterior is strongly correlated
(long NUTS trajectories): a slow benchmark, not a unit test.
"""
import math

import torch
from torch.distributions import constraints

import ppl
from ppl.distributions import StudentT

POSTERIOR = "diamonds-diamonds"


@ppl.meta_bayesian_net(scope="diamonds")
def build_model(x_centered):
    """`x_centered`: [N, K - 1] the predictors (no intercept column), centered."""
    bn = ppl.BayesianNet()
    b = bn.normal("b", x_centered.new_zeros(x_centered.shape[1]), std=1., group_ndims=1)
    intercept = bn.student_t("Intercept", x_centered.new_tensor(3.), 8., 10.)
    sigma = bn.improper_uniform("sigma", constraints.positive, dtype=x_centered.dtype)
    half_t = StudentT(x_centered.new_tensor(3.), 0., 10.).log_prob(sigma) + math.log(2.)
    bn.factor("sigma_prior", half_t)
    bn.normal("Y", intercept[..., None] + b @ x_centered.T, std=sigma[..., None],
              group_ndims=1)
    return bn


def from_data(data):
    """`(meta_bn, observed)` from posteriordb's data dict."""
    x = torch.tensor(data["X"], dtype=torch.float64)[:, 1:]
    return build_model(x - x.mean(0)), {"Y": torch.tensor(data["Y"], dtype=torch.float64)}


def latent_from_params(params, data):
    """The model's latent values from posteriordb's parameters (dict name -> tensor)."""
    return {"b": params["b"], "Intercept": params["Intercept"], "sigma": params["sigma"]}
