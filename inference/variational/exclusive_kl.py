"""The evidence lower bound (ELBO): minimizing KL(q || p), with SGVB and REINFORCE gradients.

    lower_bound = inference.elbo(model, {"x": x}, variational=q, axis=0)
    cost = lower_bound.sgvb().mean()             # reparameterized guide
    cost = lower_bound.reinforce().mean()        # any guide, is_reparameterized=False

The value is E_q[log p(x, z) - log q(z)] estimated by the guide's samples
(averaged over `axis`). With `analytic_kl=True` the terms log p(z) - log q(z)
of guide nodes whose KL divergence torch knows in closed form (e.g.
Normal/Normal) are replaced by -KL(q(z) || p(z | parents)), which often
lowers the variance (not always: near the posterior the Monte Carlo terms
cancel each other's noise). That is exact when p(z | parents) does not depend on guide nodes
sampled after z (a VAE's prior, the top layer of a hierarchy); a ladder whose
lower layer's prior depends on a later guide sample must not use it there:
pass the safe node names, `analytic_kl=["z2"]`.

A guide built with `use_path_derivative=True` gives log q(z) without the
direct dependence on q's parameters, so `sgvb()` becomes the
"sticking the landing" path-derivative estimator (same expectation, zero
variance at q = posterior).
"""
import torch
from torch.distributions import kl_divergence

from inference.variational.base import VariationalObjective
from inference.variational.baseline import MovingAverage
from ppl.stochastic_tensor import unwrap

__all__ = ["elbo", "EvidenceLowerBoundObjective"]

_TEMPLATE_BASELINE = "reinforce_moving_mean"


class EvidenceLowerBoundObjective(VariationalObjective):
    """The ELBO of a model and a guide (see `elbo`); behaves like the tensor of its value."""

    def __init__(self, meta_bn, observed, latent=None, axis=None, variational=None, *,
                 analytic_kl=False):
        super().__init__(meta_bn, observed, latent, axis, variational)
        self._analytic = self._analytic_nodes(analytic_kl)

    def _analytic_nodes(self, analytic_kl):
        if analytic_kl is False or analytic_kl is None:
            return []
        if self._bn is None or self._model.meta_bn.log_joint is not None:
            raise ValueError("analytic_kl needs the model's per-node log-probabilities: give "
                             "the model as a MetaBayesianNet (or a module building a "
                             "BayesianNet) without a custom `log_joint`")
        names = list(self._guide) if analytic_kl is True else list(analytic_kl)
        chosen = []
        for name in names:
            if name not in self._guide:
                raise ValueError(f"analytic_kl: '{name}' is not a guide node "
                                 f"(guide nodes: {', '.join(self._guide)})")
            known = self._has_closed_form(name)
            if known is not True:
                if analytic_kl is True:
                    continue
                raise ValueError(f"analytic_kl: node '{name}': {known}")
            chosen.append(name)
        if not chosen:
            raise ValueError("analytic_kl=True, but no guide node has a closed-form KL "
                             "divergence to its model counterpart")
        return chosen

    def _has_closed_form(self, name):
        """True, or the reason why KL(q(name) || p(name | parents)) has no closed form here."""
        q_dist, p_dist = self._guide[name].dist, self._bn.nodes[name].dist
        if q_dist is None:
            return "the guide gave a (samples, log_prob) pair, which has no distribution"
        if q_dist.group_ndims != p_dist.group_ndims:
            return (f"group_ndims differ (guide {q_dist.group_ndims}, model "
                    f"{p_dist.group_ndims})")
        try:
            kl_divergence(q_dist._dist, p_dist._dist)
        except NotImplementedError:
            return (f"torch has no closed-form KL({type(q_dist).__name__} || "
                    f"{type(p_dist).__name__})")
        return True

    def _kl_term(self, name):
        """KL(q(z) || p(z | parents)) summed over the grouped axes, like log_prob."""
        q_dist, p_dist = self._guide[name].dist, self._bn.nodes[name].dist
        kl = kl_divergence(q_dist._dist, p_dist._dist)
        if p_dist.group_ndims:
            kl = kl.sum(dim=tuple(range(-p_dist.group_ndims, 0)))
        return kl

    def _parts(self):
        """(signal, direct): the per-sample bound, and its part that q's parameters enter
        other than through the sampled z (-KL terms; log p for the model's parameters)."""
        if "parts" not in self._cache:
            log_w = self._log_weight()
            if not self._analytic:
                self._cache["parts"] = (log_w, self._log_joint_term())
            else:
                log_p_mc, kl = self._log_joint_term(), 0.
                signal = log_w
                for name in self._analytic:
                    log_p_z = self._bn.nodes[name].cond_log_p
                    kl_z = self._kl_term(name)
                    signal = signal - log_p_z + self._guide[name].log_q - kl_z
                    log_p_mc = log_p_mc - log_p_z
                    kl = kl + kl_z
                self._cache["parts"] = (signal, log_p_mc - kl)
        return self._cache["parts"]

    def _reduce(self, value):
        self._size_along_axis(value)
        return value if self._axis is None else value.mean(self._axis)

    def _objective(self):
        return self._reduce(self._parts()[0])

    def sgvb(self):
        """The SGVB (reparameterization) surrogate cost: -ELBO, per example.

        Needs reparameterized guide nodes (Normal, Concrete, ...). Its
        gradient is the path derivative of the bound (sticking-the-landing when
        the guide uses `use_path_derivative=True`).
        """
        self._require_reparameterized("sgvb()")
        return -self.tensor

    def reinforce(self, variance_reduction=True, baseline=None, decay=0.8,
                  moving_average=None):
        """The score-function (REINFORCE / NVIL) surrogate cost, per example.

        cost = -(stop(l - b) * log q(z) + log p(x, z)), l = log p - log q the
        learning signal. With `variance_reduction`, b is a moving average of
        l (minus the learned `baseline`, when given) over earlier steps.
        `baseline`: a tensor broadcasting to the log weights (e.g. a network
        of x); then returns `(cost, baseline_cost)`, baseline_cost =
        0.5 * (stop(l) - baseline)^2 averaged over `axis`, to train it.
        `moving_average`: the `MovingAverage` holding the state across steps;
        by default the model's template keeps one as its layer
        "reinforce_moving_mean" (so it is checkpointed with the model); a
        model without a template (a plain log_joint or nn.Module) needs it
        passed. Guide nodes must not be reparameterized.
        """
        self._require_score_function("reinforce()")
        signal, direct = self._parts()
        log_q = self._log_q_term()
        learning_signal = signal.detach()
        baseline_cost = None
        if variance_reduction:
            if baseline is not None:
                baseline = torch.as_tensor(unwrap(baseline), dtype=learning_signal.dtype)
                baseline_cost = self._reduce(0.5 * (learning_signal - baseline) ** 2)
                learning_signal = learning_signal - baseline.detach()
            average = self._moving_average(moving_average)
            value = average.value.to(learning_signal, copy=True)  # before this step's update
            average.update(learning_signal, decay)
            learning_signal = learning_signal - value
        elif baseline is not None:
            raise ValueError("reinforce(): a learned `baseline` needs variance_reduction=True")
        cost = self._reduce(-(learning_signal * log_q + direct))
        if baseline_cost is not None:
            return cost, baseline_cost
        return cost

    def _moving_average(self, moving_average):
        if moving_average is not None:
            if not isinstance(moving_average, MovingAverage):
                raise TypeError(f"`moving_average` must be an inference.MovingAverage, got "
                                f"{type(moving_average).__name__}")
            return moving_average
        template = None if self._model.meta_bn is None else self._model.meta_bn.template
        if template is None:
            raise ValueError("reinforce(variance_reduction=True) keeps a moving average of "
                             "the learning signal across steps, and this model has no "
                             "template to hold it: pass `moving_average=inference."
                             "MovingAverage()` (and checkpoint it with your modules)")
        average = template.get_module(_TEMPLATE_BASELINE, MovingAverage)
        if not isinstance(average, MovingAverage):
            raise ValueError(f"the model template's layer '{_TEMPLATE_BASELINE}' is reserved "
                             f"for reinforce()'s moving average")
        return average


def elbo(meta_bn, observed, latent=None, axis=None, variational=None, *, analytic_kl=False):
    """The evidence lower bound of `meta_bn` with `observed`, q given by the guide.

    ZhuSuan's signature. `meta_bn`: a MetaBayesianNet, an nn.Module building
    a BayesianNet, or a callable log_joint(values) -> tensor. `latent`: a dict
    name -> (samples, log_prob) or StochasticTensor; or instead `variational`,
    the guide's BayesianNet, matched to the model's latent nodes by name.
    `axis`: the particle axis averaged over (None: no averaging).
    `analytic_kl` (keyword only): True, or a list of guide node names, to use
    closed-form KL terms (see module docs). Returns an
    `EvidenceLowerBoundObjective`.
    """
    return EvidenceLowerBoundObjective(meta_bn, observed, latent, axis, variational,
                                       analytic_kl=analytic_kl)
