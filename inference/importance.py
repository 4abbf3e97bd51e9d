"""`is_loglikelihood`: log p(x) estimated by importance sampling."""
from inference.variational.monte_carlo import ImportanceWeightedObjective

__all__ = ["is_loglikelihood"]


def is_loglikelihood(meta_bn, observed, proposal=None, latent=None, axis=None):
    """log (1/k) sum_j p(x, z_j) / q(z_j), z_j ~ q, over the k samples on `axis`.

    Its exponential is an unbiased estimate of p(x); the log is a stochastic
    lower bound that converges to log p(x) as k grows. `proposal`: a
    BayesianNet whose latent nodes are matched to the model's by name (or
    `latent`, as in `inference.elbo`). Latents the proposal does not give,
    possibly all (proposal=None), are sampled by the model from their
    conditional priors and count as part of the proposal; build the model
    with the k samples on `axis` then. Returns a tensor (`axis` reduced).
    """
    return ImportanceWeightedObjective(meta_bn, observed, variational=proposal, latent=latent,
                                       axis=axis, allow_default=True).tensor
