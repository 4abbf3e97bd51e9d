"""Annealed importance sampling (Neal 2001) with HMC transitions: log-normalizer estimates.

    ais = inference.AIS(build_gen(x_dim, z_dim, n, n_particles=16), {"x": x},
                        n_temperatures=500)
    log_px = ais.run()           # [n]: log mean_c w_c over the 16 chains (axis 0)

Chains start at the proposal q (by default the model's prior: the latents the
model samples itself) and move through the tempered densities
f_b(z) = q(z) p(x, z)^b / q(z)^b, b from 0 to 1, by one HMC transition each;
the log weight of a chain sums (b_t - b_{t-1}) log(p(x, z) / q(z)) along the
way. exp(log w) is an unbiased estimate of p(x) (the normalizer of p(x, .)),
so `run()`'s log mean exp over the chains is a stochastic lower bound of log
p(x) (Grosse et al. 2015) that tightens with more temperatures and chains.

The HMC step sizes are tuned (towards `target_acceptance`) on an independent
pilot run, one per temperature, and then held fixed: adapting on the chains
themselves would bias the weights.
"""
import math

import torch
from torch.distributions import constraints
from tqdm.auto import tqdm

import ppl
from inference.model import LogJoint
from ppl.stochastic_tensor import unwrap

__all__ = ["AIS", "hmc_step", "sigmoid_schedule"]


def sigmoid_schedule(n_temperatures, rate=4.):
    """Inverse temperatures b_0 = 0 < ... < b_T = 1, dense near both ends (as in ZhuSuan)."""
    t = torch.arange(n_temperatures + 1, dtype=torch.float64)
    s = torch.sigmoid(rate * (2. * t / n_temperatures - 1.))
    return ((s - s[0]) / (s[-1] - s[0])).tolist()


def _expand_to(mask, value):
    return mask.reshape(mask.shape + (1,) * (value.dim() - mask.dim()))


def hmc_step(position, log_density, start, step_size, n_leapfrogs):
    """One HMC transition per entry of the log-density: state in, state out.

    `position`: name -> tensor whose leading axes are the log-density's
    shape (one independent chain per entry); `log_density(position)` ->
    (log f, name -> grad log f); `start`: its value at `position`. Returns
    (new position, acceptance probability per chain).
    """
    log_f0, grads = start
    momentum = {k: torch.randn_like(v) for k, v in position.items()}
    kinetic0 = _kinetic(momentum, log_f0.dim())
    z = dict(position)
    p = {k: momentum[k] + 0.5 * step_size * grads[k] for k in z}
    for i in range(n_leapfrogs):
        z = {k: z[k] + step_size * p[k] for k in z}
        log_f, grads = log_density(z)
        scale = step_size if i < n_leapfrogs - 1 else 0.5 * step_size
        p = {k: p[k] + scale * grads[k] for k in z}
    log_accept = (log_f - _kinetic(p, log_f0.dim())) - (log_f0 - kinetic0)
    log_accept = torch.nan_to_num(log_accept, nan=-math.inf, posinf=-math.inf)
    accept = torch.rand_like(log_accept).log() < log_accept
    new = {k: torch.where(_expand_to(accept, z[k]), z[k], position[k]) for k in z}
    return new, log_accept.clamp(max=0.).exp()


def _kinetic(momentum, batch_ndim):
    total = 0.
    for p in momentum.values():
        total = total + 0.5 * p.pow(2).sum(dim=tuple(range(batch_ndim, p.dim())))
    return total


def _is_real(constraint):
    while isinstance(constraint, constraints.independent):
        constraint = constraint.base_constraint
    return constraint is constraints.real


class AIS:
    """Annealed importance sampling of `meta_bn`'s normalizer with `observed` fixed.

    `proposal`: None (the model's prior: latents the model samples itself),
    or a MetaBayesianNet / function building a BayesianNet whose latent nodes
    (sampled with the chains on `axis`) start the chains and whose
    `observe(**z).log_joint()` gives log q(z); required when `meta_bn` is a
    plain log_joint callable. Latents must be continuous with support on all
    of R (HMC moves freely). `schedule`: "sigmoid", "linear", or a list of
    inverse temperatures from 0 to 1.
    """

    def __init__(self, meta_bn, observed, proposal=None, n_temperatures=100, n_leapfrogs=10,
                 step_size=0.1, adapt_step_size=True, target_acceptance=0.65, axis=0,
                 schedule="sigmoid", progress=False):
        self._model = LogJoint(meta_bn, {k: unwrap(v) for k, v in (observed or {}).items()})
        if proposal is None and self._model.meta_bn is None:
            raise ValueError("AIS: a plain log_joint callable cannot sample its latents; give "
                             "a `proposal` (a model whose nodes start the chains)")
        self._proposal = None if proposal is None else ppl.as_meta_bn(proposal)
        for name, value, low in (("n_temperatures", n_temperatures, 1),
                                 ("n_leapfrogs", n_leapfrogs, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"AIS: `{name}` must be an int >= {low}, got {value!r}")
        if not step_size > 0:
            raise ValueError(f"AIS: `step_size` must be positive, got {step_size!r}")
        self.betas = self._schedule(schedule, n_temperatures)
        self.n_leapfrogs = n_leapfrogs
        self.step_size = float(step_size)
        self.adapt_step_size = adapt_step_size
        self.target_acceptance = target_acceptance
        self.axis = axis
        self.progress = progress
        self.step_sizes = None
        self.acceptance_rates = None
        self.log_weights = None

    @staticmethod
    def _schedule(schedule, n_temperatures):
        if schedule == "sigmoid":
            return sigmoid_schedule(n_temperatures)
        if schedule == "linear":
            return [t / n_temperatures for t in range(n_temperatures + 1)]
        betas = [float(b) for b in schedule]
        if len(betas) < 2 or betas[0] != 0. or betas[-1] != 1. \
                or any(b1 <= b0 for b0, b1 in zip(betas, betas[1:])):
            raise ValueError("AIS: `schedule` must be 'sigmoid', 'linear', or increasing "
                             "inverse temperatures from 0 to 1")
        return betas

    # -- densities -----------------------------------------------------------
    def _initial_sample(self):
        if self._proposal is None:
            bn = self._model.meta_bn.observe(**self._model.observed)
        else:
            bn = self._proposal.observe()
        values = {name: node.tensor.detach() for name, node in bn.stochastic_nodes.items()
                  if not node.is_observed()}
        if not values:
            raise ValueError("AIS: the proposal has no latent stochastic node to start from")
        return values

    def _log_terms(self, values):
        """(log q(z), log p(x, z) - log q(z)) at `values`."""
        if self._proposal is None:
            bn = self._model.bn(values)
            log_q = sum(bn.nodes[name].cond_log_p for name in values)
            log_p = bn.log_joint()
        else:
            log_p = self._model(values)
            log_q = self._proposal.observe(**values).log_joint()
        return log_q, log_p - log_q

    def _evaluate(self, values, beta):
        """(log q, log L, log f_beta, grads of log f_beta) at `values`, detached."""
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_(True) for k, v in values.items()}
            log_q, log_l = self._log_terms(leaves)
            log_f = log_q + beta * log_l
            grads = torch.autograd.grad(log_f.sum(), list(leaves.values()), allow_unused=True)
        grads = {k: torch.zeros_like(v) if g is None else g
                 for (k, v), g in zip(leaves.items(), grads)}
        return log_q.detach(), log_l.detach(), log_f.detach(), grads

    def _check(self, values):
        """Latents continuous on R, every model latent covered, shapes one chain per entry."""
        if self._model.meta_bn is not None:
            bn = self._model.bn(values)
            uncovered = [n for n, node in bn.stochastic_nodes.items() if not node.is_observed()]
            if uncovered:
                raise ValueError(f"AIS: model node '{uncovered[0]}' is latent but the proposal "
                                 f"does not give it (proposal nodes: {', '.join(values)})")
            for name in values:
                dist = bn.nodes[name].dist
                if not dist.is_continuous or not _is_real(dist.support):
                    raise ValueError(f"AIS: node '{name}' ({type(dist).__name__}) must be "
                                     f"continuous with support on all of R for HMC moves")
        log_q, log_l = self._log_terms(values)
        if log_q.shape != log_l.shape:
            raise ValueError(f"AIS: log q(z) has shape {tuple(log_q.shape)} but log p(x, z) "
                             f"has shape {tuple(log_l.shape)}; they must match (one chain "
                             f"per entry)")
        for name, value in values.items():
            if not value.is_floating_point():
                raise ValueError(f"AIS: node '{name}' must be continuous (got {value.dtype})")
            if value.shape[:log_q.dim()] != log_q.shape:
                raise ValueError(f"AIS: node '{name}' of shape {tuple(value.shape)} must start "
                                 f"with the log-density's shape {tuple(log_q.shape)} (one HMC "
                                 f"chain per entry); check group_ndims")
        if not -log_q.dim() <= self.axis < log_q.dim():
            raise ValueError(f"AIS: `axis`={self.axis} is out of range for the log-density of "
                             f"shape {tuple(log_q.shape)}")

    # -- the annealing -------------------------------------------------------
    def _anneal(self, step_sizes=None, desc="AIS"):
        """One annealing pass; adapts step sizes when `step_sizes` is None."""
        values = self._initial_sample()
        self._check(values)
        log_w, log_eps = 0., math.log(self.step_size)
        used, acceptance = [], []
        temperatures = range(1, len(self.betas))
        for t in tqdm(temperatures, desc=desc, disable=not self.progress, leave=False):
            beta, previous = self.betas[t], self.betas[t - 1]
            _, log_l, log_f, grads = self._evaluate(values, beta)
            log_w = log_w + (beta - previous) * log_l
            if t == len(self.betas) - 1:
                break
            eps = math.exp(log_eps) if step_sizes is None else step_sizes[t - 1]

            def log_density(z, beta=beta):
                return self._evaluate(z, beta)[2:]

            values, accept = hmc_step(values, log_density, (log_f, grads), eps,
                                      self.n_leapfrogs)
            rate = float(accept.mean())
            if step_sizes is None:
                log_eps += 0.5 * (rate - self.target_acceptance)
                eps = math.exp(log_eps)
            used.append(eps)
            acceptance.append(rate)
        return log_w, used, acceptance

    @torch.no_grad()
    def run(self):
        """Anneal once (after a pilot run when adapting); log p(x) estimates, `axis` reduced.

        Sets `log_weights` (per chain), `step_sizes` and `acceptance_rates`
        (per transition).
        """
        step_sizes = None
        if self.adapt_step_size:
            _, step_sizes, _ = self._anneal(desc="AIS pilot (step sizes)")
        else:
            step_sizes = [self.step_size] * (len(self.betas) - 2)
        log_w, self.step_sizes, self.acceptance_rates = self._anneal(step_sizes)
        self.log_weights = log_w
        k = log_w.shape[self.axis]
        return torch.logsumexp(log_w, dim=self.axis) - math.log(k)
