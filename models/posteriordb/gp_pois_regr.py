"""Poisson regression with a latent Gaussian process (posteriordb `gp_pois_regr-gp_pois_regr`).

    rho ~ Gamma(25, 4)    alpha ~ HalfNormal(2)    f_tilde ~ N(0, 1)  [N]
    f = L f_tilde with L L^T = alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2)) + 1e-10 I
    k ~ Poisson(exp(f))

Latent values may carry leading axes (chains, draws): everything broadcasts.
"""
import torch

import ppl

POSTERIOR = "gp_pois_regr-gp_pois_regr"
JITTER = 1e-10


def cov_cholesky(x, alpha, rho):
    """Cholesky factor `[..., N, N]` of the squared-exponential covariance (+ jitter) and
    a mask `[...]` of where the factorization failed (there the factor is the identity).
    """
    squared_distance = (x[:, None] - x[None, :]) ** 2
    eye = torch.eye(len(x), dtype=x.dtype)
    cov = (alpha[..., None, None] ** 2 * torch.exp(-0.5 * squared_distance / rho[..., None, None] ** 2)
           + JITTER * eye)
    cov_tril, info = torch.linalg.cholesky_ex(cov)
    failed = info > 0
    return torch.where(failed[..., None, None], eye, cov_tril), failed


@ppl.meta_bayesian_net(scope="gp_pois_regr")
def build_model(x):
    """`x`: [N] inputs of the Gaussian process.

    A covariance that is not numerically positive definite makes the log
    density -inf (Stan rejects such a point too).
    """
    bn = ppl.BayesianNet()
    rho = bn.gamma("rho", x.new_tensor(25.), x.new_tensor(4.))
    alpha = bn.half_normal("alpha", x.new_tensor(2.))
    f_tilde = bn.normal("f_tilde", torch.zeros_like(x), std=1., group_ndims=1)
    cov_tril, failed = cov_cholesky(x, alpha.tensor, rho.tensor)
    bn.factor("cholesky_failed", torch.where(failed, -torch.inf, 0.).to(x.dtype))
    f = bn.deterministic("f", (cov_tril @ f_tilde[..., None]).squeeze(-1))
    bn.poisson("k", torch.exp(f), group_ndims=1)
    return bn


def from_data(data):
    """`(meta_bn, observed)` from posteriordb's data dict."""
    x = torch.tensor(data["x"], dtype=torch.float64)
    return build_model(x), {"k": torch.tensor(data["k"], dtype=torch.float64)}


def latent_from_params(params, data):
    """The model's latent values from posteriordb's parameters (dict name -> tensor)."""
    x = torch.tensor(data["x"], dtype=torch.float64)
    cov_tril, _ = cov_cholesky(x, params["alpha"], params["rho"])
    f_tilde = torch.linalg.solve_triangular(cov_tril, params["f"][..., None], upper=False)
    return {"rho": params["rho"], "alpha": params["alpha"], "f_tilde": f_tilde.squeeze(-1)}
