"""Kid's IQ score regressed on the mother's IQ (posteriordb `kidiq-kidscore_momiq`).

    beta: flat prior  [2]      sigma ~ HalfCauchy(2.5)
    kid_score ~ N(beta[1] + beta[2] * mom_iq, sigma)

Latent values may carry leading axes (chains, draws): everything broadcasts.
"""
import torch
from torch.distributions import constraints

import ppl

POSTERIOR = "kidiq-kidscore_momiq"


@ppl.meta_bayesian_net(scope="kidscore_momiq")
def build_model(mom_iq):
    """`mom_iq`: [N] the mothers' IQ scores."""
    bn = ppl.BayesianNet()
    beta = bn.improper_uniform("beta", constraints.real, [2], dtype=mom_iq.dtype, group_ndims=1)
    sigma = bn.half_cauchy("sigma", mom_iq.new_tensor(2.5))
    mean = beta[..., 0:1] + beta[..., 1:2] * mom_iq
    bn.normal("kid_score", mean, std=sigma[..., None], group_ndims=1)
    return bn


def from_data(data):
    """`(meta_bn, observed)` from posteriordb's data dict."""
    mom_iq = torch.tensor(data["mom_iq"], dtype=torch.float64)
    return build_model(mom_iq), {"kid_score": torch.tensor(data["kid_score"],
                                                           dtype=torch.float64)}


def latent_from_params(params, data):
    """The model's latent values from posteriordb's parameters (dict name -> tensor)."""
    return {"beta": params["beta"], "sigma": params["sigma"]}
