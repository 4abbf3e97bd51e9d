"""`is_loglikelihood`: log p(x) estimated by importance sampling."""
from inference.variational.monte_carlo import ImportanceWeightedObjective

__all__ = ["is_loglikelihood"]


def is_loglikelihood(meta_bn, observed, latent=None, axis=None, proposal=None):
    """log (1/k) sum_j p(x, z_j) / q(z_j), z_j ~ q, over the k samples on `axis`.

    Its exponential is an unbiased estimate of p(x); the log is a stochastic
    lower bound that converges to log p(x) as k grows. ZhuSuan's signature:
    `latent`, a dict name -> (samples, log_prob) as in `inference.elbo`, or
    instead `proposal`, a BayesianNet whose latent nodes are matched to the
    model's by name. Latents the proposal does not give,
    possibly all (proposal=None), are sampled by the model from their
    conditional priors and count as part of the proposal; build the model
    with the k samples on `axis` then. Returns a tensor (`axis` reduced).
    """
    return ImportanceWeightedObjective(meta_bn, observed, latent, axis, proposal,
                                       allow_default=True, guide_arg="proposal").tensor
