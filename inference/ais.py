"""Annealed importance sampling (Neal 2001) with HMC transitions: log-normalizer estimates.

    ais = inference.AIS(build_gen(x_dim, z_dim, n, n_particles=16), {"x": x},
                        n_temperatures=500)
    log_px = ais.run()           # [n]: log mean_c w_c over the 16 chains (axis 0)

Chains start at the proposal q (by default the model's prior: the latents the
model samples itself) and move through the tempered densities
f_b(z) = q(z) (p(x, z) / q(z))^b, b from 0 to 1, by one HMC transition each;
the log weight of a chain sums (b_t - b_{t-1}) log(p(x, z) / q(z)) along the
way. exp(log w) is an unbiased estimate of p(x) (the normalizer of p(x, .)),
so `run()`'s log mean exp over the chains is a stochastic lower bound of log
p(x) (Grosse et al. 2015) that tightens with more temperatures and chains.

Every entry of the log density (e.g. [chains, n]) is one chain. HMC runs on
the flat unconstrained space of `inference.mcmc` (`hmc_kernel`, unit metric;
constrained latents such as Gamma ones move through their bijection, whose
log-Jacobian enters f_b and cancels in the weights). The step size is tuned
towards `target_acceptance` on an independent pilot run, one per
temperature, and then held fixed: adapting on the chains themselves would
bias the weights.
"""
import math

import torch
from tqdm.auto import tqdm

import ppl
from inference.mcmc.hmc import hmc_kernel
from inference.mcmc.metric import identity_metric
from inference.mcmc.state import HMCState
from inference.mcmc.transforms import LatentSpace, transform_to
from inference.model import LogJoint
from ppl.stochastic_tensor import unwrap

__all__ = ["AIS", "sigmoid_schedule"]


def sigmoid_schedule(n_temperatures, rate=4.):
    """Inverse temperatures b_0 = 0 < ... < b_T = 1, dense near both ends (as in ZhuSuan)."""
    t = torch.arange(n_temperatures + 1, dtype=torch.float64)
    s = torch.sigmoid(rate * (2. * t / n_temperatures - 1.))
    return ((s - s[0]) / (s[-1] - s[0])).tolist()


class AIS:
    """Annealed importance sampling of `meta_bn`'s normalizer with `observed` fixed.

    `proposal`: None (the model's prior: latents the model samples itself),
    or a MetaBayesianNet / template / function building a BayesianNet whose
    latent nodes (sampled with the chains on `axis`) start the chains and
    whose `observe(**z).log_joint()` gives log q(z); required when `meta_bn`
    is a plain log_joint callable. Latents must be continuous. `schedule`:
    "sigmoid", "linear", or a list of inverse temperatures from 0 to 1.
    """

    def __init__(self, meta_bn, observed, proposal=None, n_temperatures=100, n_leapfrogs=10,
                 step_size=0.1, adapt_step_size=True, target_acceptance=0.65, axis=0,
                 schedule="sigmoid", progress=False):
        self._model = LogJoint(meta_bn, {k: unwrap(v) for k, v in (observed or {}).items()})
        if proposal is None and self._model.meta_bn is None:
            raise ValueError("AIS: a plain log_joint callable cannot sample its latents; give "
                             "a `proposal` (a model whose nodes start the chains)")
        self._proposal = None if proposal is None else ppl.as_meta_bn(proposal)
        for name, value in (("n_temperatures", n_temperatures), ("n_leapfrogs", n_leapfrogs)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"AIS: `{name}` must be a positive int, got {value!r}")
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

    # -- the tempered densities ------------------------------------------------
    def _initial_sample(self):
        """name -> value of every latent drawn from the proposal, and their supports."""
        if self._proposal is None:
            bn = self._model.meta_bn.observe(**self._model.observed)
        else:
            bn = self._proposal.observe()
        nodes = {name: node for name, node in bn.stochastic_nodes.items()
                 if not node.is_observed()}
        if not nodes:
            raise ValueError("AIS: the proposal has no latent stochastic node to start from")
        return ({name: node.tensor.detach() for name, node in nodes.items()},
                {name: node.dist.support for name, node in nodes.items()})

    def _log_terms(self, values):
        """(log q(z), log p(x, z) - log q(z)) at `values` (constrained)."""
        if self._proposal is None:
            bn = self._model.bn(values)
            log_q = sum(bn.nodes[name].cond_log_p for name in values)
            log_p = bn.log_joint()
        else:
            log_p = self._model(values)
            log_q = self._proposal.observe(**values).log_joint()
        return log_q, log_p - log_q

    def _space(self, values, supports):
        """The flat unconstrained layout of the latents; checks nodes and shapes."""
        if self._model.meta_bn is not None:
            bn = self._model.bn(values)
            uncovered = [n for n, node in bn.stochastic_nodes.items() if not node.is_observed()]
            if uncovered:
                raise ValueError(f"AIS: model node '{uncovered[0]}' is latent but the proposal "
                                 f"does not give it (proposal nodes: {', '.join(values)})")
            for name in values:
                target = bn.nodes[name].dist.support
                if type(transform_to(target, name)) is not type(transform_to(supports[name],
                                                                             name)):
                    raise ValueError(f"AIS: node '{name}' has support {target} in the model but "
                                     f"{supports[name]} in the proposal")
                supports[name] = target
        log_q, log_l = self._log_terms(values)
        if log_q.shape != log_l.shape:
            raise ValueError(f"AIS: log q(z) has shape {tuple(log_q.shape)} but log p(x, z) "
                             f"has shape {tuple(log_l.shape)}; they must match (one chain "
                             f"per entry)")
        chains = log_q.shape
        for name, value in values.items():
            if not value.is_floating_point():
                raise ValueError(f"AIS: node '{name}' must be continuous (got {value.dtype})")
            if value.shape[:len(chains)] != chains:
                raise ValueError(f"AIS: node '{name}' of shape {tuple(value.shape)} must start "
                                 f"with the log-density's shape {tuple(chains)} (one HMC chain "
                                 f"per entry); check group_ndims")
        if not -len(chains) <= self.axis < len(chains):
            raise ValueError(f"AIS: `axis`={self.axis} is out of range for the log density of "
                             f"shape {tuple(chains)}")
        return LatentSpace(values, [v.shape[len(chains):] for v in values.values()],
                           [transform_to(supports[name], name) for name in values], chains)

    def _potential(self, space, beta):
        """x [n_chains, D] -> (log f_beta + log|det J|, its gradient, log L), detached.

        Chains with a non-finite value or gradient get -inf and a zero gradient
        (the kernel rejects moves there).
        """
        def evaluate(x):
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                values, log_det = space.constrain(x, with_log_det=True)
                log_q, log_l = self._log_terms(space.from_chains(values))
                log_f = (log_q + beta * log_l).reshape(-1) + log_det
                grad, = torch.autograd.grad(log_f.sum(), x)
            bad = ~(torch.isfinite(log_f) & torch.isfinite(grad).all(-1))
            log_f = torch.where(bad, torch.full_like(log_f, -math.inf), log_f.detach())
            grad = torch.where(bad[:, None], torch.zeros_like(grad), grad)
            return log_f, grad, log_l.detach().reshape(-1)
        return evaluate

    # -- the annealing -----------------------------------------------------------
    def _anneal(self, step_sizes=None, desc="AIS"):
        """One annealing pass; adapts the step size when `step_sizes` is None.

        Returns (log weights [chains], step sizes used, mean acceptance per transition).
        """
        values, supports = self._initial_sample()
        space = self._space(values, supports)
        x = space.unconstrain(values).reshape(space.n_chains, space.dim)
        metric = identity_metric(space.n_chains, space.dim, dtype=x.dtype, device=x.device)
        log_w = torch.zeros(space.n_chains, dtype=x.dtype, device=x.device)
        log_eps, used, acceptance = math.log(self.step_size), [], []
        for t in tqdm(range(1, len(self.betas)), desc=desc, disable=not self.progress,
                      leave=False):
            beta, previous = self.betas[t], self.betas[t - 1]
            potential = self._potential(space, beta)
            log_f, grad, log_l = potential(x)
            log_w = log_w + (beta - previous) * log_l
            if t == len(self.betas) - 1:
                break
            eps = math.exp(log_eps) if step_sizes is None else step_sizes[t - 1]
            state, info = hmc_kernel(HMCState(x, log_f, grad), lambda z: potential(z)[:2],
                                     torch.full_like(log_w, eps), metric, self.n_leapfrogs)
            x = state.position
            rate = float(info.accept_prob.mean())
            if step_sizes is None:
                log_eps += 0.5 * (rate - self.target_acceptance)
                eps = math.exp(log_eps)
            used.append(eps)
            acceptance.append(rate)
        return log_w.reshape(space.chain_shape), used, acceptance

    @torch.no_grad()
    def run(self):
        """Anneal once (after a pilot run when adapting); log p(x) estimates, `axis` reduced.

        Sets `log_weights` (per chain), `step_sizes` and `acceptance_rates`
        (per transition).
        """
        if self.adapt_step_size:
            _, step_sizes, _ = self._anneal(desc="AIS pilot (step size)")
        else:
            step_sizes = [self.step_size] * (len(self.betas) - 2)
        log_w, self.step_sizes, self.acceptance_rates = self._anneal(step_sizes)
        self.log_weights = log_w
        return torch.logsumexp(log_w, dim=self.axis) - math.log(log_w.shape[self.axis])
