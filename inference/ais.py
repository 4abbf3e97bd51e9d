"""Annealed importance sampling (Neal 2001) with HMC transitions: log-normalizer estimates.

ZhuSuan's signature, `AIS(meta_bn, proposal_meta_bn, hmc, observed, latent,
n_temperatures=1000, n_adapt=30, verbose=False)`:

    # ZhuSuan's LNTM: the proposal is the model (function lntm) scored by the prior of eta
    prior = ppl.meta_bayesian_net(scope="lntm_prior",
                                  log_joint=lambda bn: bn.cond_log_prob("eta"))(lntm)
    hmc = inference.HMC(step_size=0.01, n_leapfrogs=20, adapt_step_size=True,
                        target_acceptance_rate=0.6)
    ais = inference.AIS(model, prior(*args), hmc, observed={"x": x, "beta": beta},
                        latent={"eta": eta}, n_temperatures=1000)
    ll_lb = ais.run()          # mean over the data of log mean_c w_c (chains on `axis` 0)
    ais.estimates              # [n]: one estimate per datum

Chains start at the proposal q: only the `latent` nodes are drawn from it
(observed with the entries of `observed` that are its nodes, so the model
whose word counts cannot be sampled serves), and they move through the
tempered densities f_b(z) = q(z) (p(x, z) / q(z))^b, b from 0 to 1, by one HMC
transition each; log q(z) is the proposal's log joint at `observed` and z.
The log weight of a chain sums (b_t - b_{t-1}) log(p(x, z) / q(z)) along the
way. exp(log w) is an unbiased estimate of p(x) (the normalizer of p(x, .)),
so the log mean exp over the chains is a stochastic lower bound of log p(x)
(Grosse et al. 2015) that tightens with more temperatures and chains.

Every entry of the log density (e.g. [chains, n]) is one chain. HMC (the
given `inference.HMC`'s kernel) runs on the flat unconstrained space of
`inference.mcmc` (unit metric; constrained latents such as Gamma ones move
through their bijection, whose log-Jacobian enters f_b and cancels in the
weights). With `hmc.adapt_step_size`, the step size is tuned towards
`hmc.target_acceptance_rate` on an independent pilot run (`n_adapt`
transitions at the first temperature, then one per temperature) and then held
fixed: adapting on the chains themselves would bias the weights.
"""
import math

import torch
from tqdm.auto import tqdm

import ppl
from inference.mcmc.sampler import HMC
from inference.mcmc.metric import identity_metric
from inference.mcmc.state import HMCState
from inference.mcmc.transforms import LatentSpace, transform_to
from inference.model import LogJoint, value_and_grad
from inference.utils import log_mean_exp
from inference.write_back import write_back
from ppl.stochastic_tensor import unwrap

__all__ = ["AIS", "sigmoid_schedule"]


def sigmoid_schedule(n_temperatures, rate=4.):
    """Inverse temperatures b_0 = 0 < ... < b_T = 1, dense near both ends (as in ZhuSuan)."""
    t = torch.arange(n_temperatures + 1, dtype=torch.float64)
    s = torch.sigmoid(rate * (2. * t / n_temperatures - 1.))
    return ((s - s[0]) / (s[-1] - s[0])).tolist()


def _positive_int(name, value, allow_zero=False):
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"AIS: `{name}` must be a {kind} int, got {value!r}")


class AIS:
    """Annealed importance sampling of `meta_bn`'s normalizer with `observed` fixed.

    `meta_bn`: the model (a MetaBayesianNet, a module or function building a
    BayesianNet, or a plain log_joint callable). `proposal_meta_bn`: a
    MetaBayesianNet / template / function building a BayesianNet whose
    `latent` nodes start the chains and whose log joint gives log q(z); None:
    the model's prior (the latents the model samples itself). `hmc`: an
    `inference.HMC` (its step size, n_leapfrogs, adapt_step_size and
    target_acceptance_rate are used; None: HMC(step_size=0.1, n_leapfrogs=10,
    adapt_step_size=True, target_acceptance_rate=0.65)). `latent`: the latent
    node names, as a dict name -> tensor (ZhuSuan's Variables: the final
    samples are written into them) or a list; None: every latent node of the
    model. Latents must be continuous. `n_adapt`: pilot transitions at the
    first temperature. `verbose`: print the acceptance rates of each phase.

    Keyword only: `axis`, the chains' axis of the log density; `schedule`,
    "sigmoid" (ZhuSuan's), "linear", or inverse temperatures from 0 to 1;
    `progress`, show progress bars.
    """

    def __init__(self, meta_bn, proposal_meta_bn=None, hmc=None, observed=None, latent=None,
                 n_temperatures=1000, n_adapt=30, verbose=False, *, axis=0, schedule="sigmoid",
                 progress=True):
        if observed is not None and not isinstance(observed, dict):
            raise TypeError(f"AIS: `observed` must be a dict name -> tensor, got "
                            f"{type(observed).__name__}")
        self._model = LogJoint(meta_bn, {k: unwrap(v) for k, v in (observed or {}).items()})
        if isinstance(proposal_meta_bn, dict):
            raise TypeError("AIS: `proposal_meta_bn` (the second argument) is a dict; AIS takes "
                            "ZhuSuan's arguments (meta_bn, proposal_meta_bn, hmc, observed, "
                            "latent, ...): pass the observations as `observed=`")
        if proposal_meta_bn is None and self._model.is_plain:
            raise ValueError("AIS: a plain log_joint callable cannot sample its latents; give "
                             "a `proposal_meta_bn` (a model whose nodes start the chains)")
        self._proposal = None if proposal_meta_bn is None else ppl.as_meta_bn(proposal_meta_bn)
        self._check_distinct()
        self.hmc = self._check_hmc(hmc)
        self._latent = self._check_latent(latent)
        _positive_int("n_temperatures", n_temperatures)
        _positive_int("n_adapt", n_adapt, allow_zero=True)
        self.betas = self._schedule(schedule, n_temperatures)
        self.n_adapt = n_adapt
        self.verbose = verbose
        self.axis = axis
        self.progress = progress
        self.step_sizes = None
        self.acceptance_rates = None
        self.log_weights = None
        self.estimates = None

    def _check_distinct(self):
        """A proposal sharing the model's template and log joint is the model: every weight
        would be 1 (e.g. `copy(model)` whose own `log_joint` was not set)."""
        model, proposal = self._model.meta_bn, self._proposal
        if model is None or proposal is None or proposal.template is None:
            return
        if proposal.template is model.template and proposal.log_joint is model.log_joint:
            raise ValueError("AIS: the proposal has the model's template and log_joint, so it "
                             "scores the chains as the model does; set the proposal's own "
                             "log_joint (ZhuSuan's `proposal = copy(model); proposal.log_joint "
                             "= log_prior`), or build it from its own template, e.g. "
                             "ppl.meta_bayesian_net(scope='prior', log_joint=fn)(model_function)"
                             "(...)")

    @staticmethod
    def _check_hmc(hmc):
        if hmc is None:
            return HMC(step_size=0.1, n_leapfrogs=10, adapt_step_size=True,
                       target_acceptance_rate=0.65)
        if not isinstance(hmc, HMC):
            raise TypeError(f"AIS: `hmc` must be an inference.HMC, got {type(hmc).__name__}")
        if hmc.jit_compile:
            raise ValueError("AIS: give an HMC without jit_compile (each temperature is a new "
                             "density)")
        return hmc

    def _check_latent(self, latent):
        if latent is None:
            return None
        names = list(latent)
        if not names or not all(isinstance(name, str) for name in names):
            raise TypeError("AIS: `latent` must be a non-empty dict name -> tensor or a list of "
                            "node names")
        overlap = sorted(set(names) & set(self._model.observed))
        if overlap:
            raise ValueError(f"AIS: nodes {overlap} are given both as observed and as latent")
        return latent

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
    def _start_net(self):
        """The net the chains start from: the proposal (observed where it has nodes in
        `observed`) or the model; its latent nodes are sampled only when read."""
        if self._proposal is None:
            return self._model.bn({})
        names = self._proposal.observe().nodes
        self._proposal_observed = {k: v for k, v in self._model.observed.items()
                                   if k in names}
        return self._proposal.observe(**self._proposal_observed)

    def _initial_sample(self):
        """name -> value of each `latent` node drawn from the proposal, and their supports."""
        bn = self._start_net()
        where = "the model" if self._proposal is None else "the proposal"
        if self._latent is None:
            names = [name for name, node in bn.stochastic_nodes.items()
                     if not node.is_observed()]
            if not names:
                raise ValueError(f"AIS: {where} has no latent stochastic node to start from")
        else:
            names = list(self._latent)
            free = [n for n, node in bn.stochastic_nodes.items() if not node.is_observed()]
            for name in names:
                if name not in free:
                    raise ValueError(f"AIS: latent '{name}' is not a latent stochastic node of "
                                     f"{where} (its latent nodes: {', '.join(free) or 'none'})")
            free = [n for n in free if n not in names]
            if free and self._proposal is not None and self._proposal.log_joint is None:
                raise ValueError(f"AIS: proposal node '{free[0]}' is neither observed nor "
                                 f"latent, so log q would include its random draw; add it "
                                 f"to `latent` or set the proposal's `log_joint`")
        return ({name: bn.nodes[name].tensor.detach() for name in names},
                {name: bn.nodes[name].dist.support for name in names})

    def _log_terms(self, values):
        """(log q(z), log p(x, z) - log q(z)) at `values` (constrained)."""
        if self._proposal is None:
            bn = self._model.bn(values)
            log_q = sum(bn.nodes[name].cond_log_p for name in values)
            log_p = bn.log_joint()
        else:
            log_p = self._model(values)
            log_q = self._proposal.observe(**self._proposal_observed, **values).log_joint()
        return log_q, log_p - log_q

    def _space(self, values, supports):
        """The flat unconstrained layout of the latents; checks nodes and shapes."""
        if not self._model.is_plain:
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
        """x [n_chains, D] -> (log f_beta + log|det J|, its gradient, log L), detached
        (`inference.model.value_and_grad`: chains with a non-finite value or gradient get
        -inf and a zero gradient, which the kernel rejects)."""
        def evaluate(x):
            found = []

            def log_f(x):
                values, log_det = space.constrain(x, with_log_det=True)
                log_q, log_l = self._log_terms(space.from_chains(values))
                found.append(log_l.detach().reshape(-1))
                return (log_q + beta * log_l).reshape(-1) + log_det
            value, grad = value_and_grad(log_f, x)
            return value, grad, found[0]
        return evaluate

    # -- the annealing -----------------------------------------------------------
    def _transition(self, state, potential, step_size, metric):
        """One HMC transition of every chain at one step size: (state, mean acceptance)."""
        step = torch.full_like(state.log_prob, step_size)
        state, info = self.hmc.transition(state, lambda z: potential(z)[:2], step, metric)
        return state, float(info.accept_prob.mean())

    def _anneal(self, step_sizes=None, desc="AIS"):
        """One annealing pass; adapts the step size when `step_sizes` is None.

        Returns (log weights [chains], step sizes used, mean acceptance per
        transition, the final samples name -> value).
        """
        values, supports = self._initial_sample()
        space = self._space(values, supports)
        x = space.unconstrain(values).reshape(space.n_chains, space.dim)
        metric = identity_metric(space.n_chains, space.dim, dtype=x.dtype, device=x.device)
        log_w = torch.zeros(space.n_chains, dtype=x.dtype, device=x.device)
        target = self.hmc.target_acceptance_rate
        log_eps, used, acceptance = math.log(self.hmc.step_size or 0.1), [], []
        if step_sizes is None and self.n_adapt and len(self.betas) > 2:
            potential = self._potential(space, self.betas[1])
            state = HMCState(x, *potential(x)[:2])
            for i in range(self.n_adapt):
                state, rate = self._transition(state, potential, math.exp(log_eps), metric)
                log_eps += 0.5 * (rate - target)
                if self.verbose:
                    print(f"Adapt iter {i}, acc = {rate:.3f}")
        bar = tqdm(range(1, len(self.betas)), desc=desc, disable=not self.progress, leave=False)
        for t in bar:
            beta, previous = self.betas[t], self.betas[t - 1]
            potential = self._potential(space, beta)
            log_f, grad, log_l = potential(x)
            log_w = log_w + (beta - previous) * log_l
            if t == len(self.betas) - 1:
                break
            eps = math.exp(log_eps) if step_sizes is None else step_sizes[t - 1]
            state, rate = self._transition(HMCState(x, log_f, grad), potential, eps, metric)
            x = state.position
            if step_sizes is None:
                log_eps += 0.5 * (rate - target)
                eps = math.exp(log_eps)
            used.append(eps)
            acceptance.append(rate)
            if self.verbose:
                bar.set_postfix(temperature=f"{beta:.4f}", acc=f"{rate:.3f}")
        samples = space.from_chains(space.constrain(x))
        return log_w.reshape(space.chain_shape), used, acceptance, samples

    @torch.no_grad()
    def run(self):
        """Anneal once (after a pilot run when adapting): the mean over the data of the
        log p(x) estimates (ZhuSuan's return value).

        Sets `estimates` (log p(x) per datum, `axis` reduced), `log_weights`
        (per chain), `step_sizes` and `acceptance_rates` (per transition), and
        writes the final samples into the `latent` tensors given.
        """
        if self.hmc.adapt_step_size or self.hmc.step_size is None:
            _, step_sizes, _, _ = self._anneal(desc="AIS pilot (step size)")
        else:
            step_sizes = [float(self.hmc.step_size)] * (len(self.betas) - 2)
        log_w, self.step_sizes, self.acceptance_rates, samples = self._anneal(step_sizes)
        self.log_weights = log_w
        self.estimates = log_mean_exp(log_w, self.axis)
        if isinstance(self._latent, dict):
            write_back(self._latent, samples)
        if self.verbose:
            rate = sum(self.acceptance_rates) / max(len(self.acceptance_rates), 1)
            print(f"AIS: log p(x) = {float(self.estimates.mean()):.4f} (mean over the data), "
                  f"mean acceptance {rate:.3f}")
        return self.estimates.mean()
