"""Log-likelihoods of data under energy models, given log Z (exact or from AIS).

- `log_likelihood`: exact given Z, when the hidden layers sum out analytically
  (an RBM: log p(v) = log sum_h p*(v, h) - log Z).
- `mean_field_bound`: a DBM's variational lower bound (Salakhutdinov & Hinton
  2009), E_q[log p*(v, h)] + H(q) - log Z with q the mean-field posterior.
- `importance_log_likelihood`: a DBN's estimate (Salakhutdinov & Murray 2008):
  log mean_m p*(v, h_m) / q(h_m | v) - log Z, with q the recognition
  (up-pass) distribution; a stochastic lower bound, tighter with more samples.

Each returns one value per example [n]; `log_z` is a float (or an AIS
`PartitionEstimate`, whose `log_z` is used).
"""
import math

import torch
import torch.nn.functional as F

from ppl.energy import check_binary

__all__ = ["log_likelihood", "mean_field_bound", "importance_log_likelihood"]


def _log_z(log_z):
    return float(getattr(log_z, "log_z", log_z))


def _checked(values):
    return {name: check_binary(name, value) for name, value in values.items()}


def log_likelihood(model, log_z, values, summed):
    """log p(values) [n] with the layers `summed` summed out exactly."""
    with torch.no_grad():
        return model.sum_out(tuple(summed), _checked(values)) - _log_z(log_z)


def mean_field_bound(model, log_z, values, hidden, n_iterations=30):
    """E_q[log p*(values, h)] + H(q) - log Z [n], q the mean-field posterior of `hidden`."""
    values = _checked(values)
    with torch.no_grad():
        means = model.mean_field(values, list(hidden), n_iterations)
        entropy = sum(_bernoulli_entropy(mu).sum(-1) for mu in means.values())
        return model.log_joint({**values, **means}) + entropy - _log_z(log_z)


def importance_log_likelihood(model, log_z, values, proposal_logits, n_samples=100,
                              summed=()):
    """log mean_m [sum_{summed} p*(values, h_m) / q(h_m)] - log Z [n], h_m ~ q.

    proposal_logits: name -> [n, units] logits of q, independent Bernoulli
    units over those layers; `summed`: layers summed out exactly given the rest.
    """
    values = _checked(values)
    with torch.no_grad():
        draws = {name: torch.bernoulli(torch.sigmoid(logits).expand(n_samples, *logits.shape))
                 for name, logits in proposal_logits.items()}
        log_q = sum((-F.binary_cross_entropy_with_logits(
            proposal_logits[name].expand_as(draw), draw, reduction="none")).sum(-1)
            for name, draw in draws.items())
        expanded = {name: value.expand(n_samples, *value.shape) for name, value in values.items()}
        joint = {**expanded, **draws}
        log_p = model.sum_out(tuple(summed), joint) if summed else model.log_joint(joint)
        return torch.logsumexp(log_p - log_q, 0) - math.log(n_samples) - _log_z(log_z)


def _bernoulli_entropy(p):
    return F.binary_cross_entropy(p, p, reduction="none")
