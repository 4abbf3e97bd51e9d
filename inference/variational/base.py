"""`VariationalObjective`: a model, its observations and a guide, matched by node name.

    q = build_q_net(x, z_dim, n_particles=k)             # the guide's BayesianNet
    lower_bound = inference.elbo(build_gen(...), {"x": x}, variational=q, axis=0)
    torch.mean(lower_bound)                              # behaves like a tensor
    cost = lower_bound.sgvb().mean()                     # a gradient estimator

The guide's latent stochastic nodes are fed to the model as observations, so
the model is evaluated at the guide's samples: log p(x, z) and log q(z) give
the log importance weight log w = log p(x, z) - log q(z), whose shape is the
model's log joint shape (e.g. `[k, n]`, the particle axis first). Subclasses
turn log w into a value (`tensor`) and into surrogate costs.

The guide is given either as `variational`, a `BayesianNet` (its latent
stochastic nodes are used), or as `latent`, a dict name -> `StochasticTensor`
or name -> (samples, log_prob) as in ZhuSuan's older API. The arguments come
in ZhuSuan's order, `(meta_bn, observed, latent=None, axis=None,
variational=None)`: the guide network goes by keyword.
"""
import torch

from inference.model import LogJoint
from inference.variational.tensor_like import TensorLike
from ppl.bayesian_net import BayesianNet
from ppl.stochastic_tensor import StochasticTensor, unwrap

__all__ = ["VariationalObjective"]


class _GuideNode:
    """One latent of the guide: its value, log q(value), and distribution (None for pairs)."""

    def __init__(self, name, value, log_q, dist=None):
        self.name = name
        self.value = value
        self.log_q = log_q
        self.dist = dist


def _guide_nodes(variational, latent, guide_arg="variational"):
    """name -> _GuideNode from the guide network or the `latent` dict.

    `guide_arg`: the argument name the caller gave the network under
    (`variational`, or `proposal` for `is_loglikelihood`), used in errors.
    """
    if isinstance(latent, BayesianNet):
        raise TypeError(f"`latent` (the third positional argument, as in ZhuSuan) is a dict "
                        f"name -> (samples, log_prob); this is a ppl.BayesianNet: pass the "
                        f"guide network by keyword, `{guide_arg}=...`")
    if (variational is None) == (latent is None):
        raise ValueError(f"give the guide either as `{guide_arg}` (a ppl.BayesianNet) or as "
                         f"`latent` (a dict name -> StochasticTensor or (samples, log_prob)), "
                         f"not both and not neither")
    if variational is not None:
        if not isinstance(variational, BayesianNet):
            raise TypeError(f"`{guide_arg}` must be the guide's ppl.BayesianNet, got "
                            f"{type(variational).__name__}")
        latent = {name: node for name, node in variational.stochastic_nodes.items()
                  if not node.is_observed()}
        if not latent:
            raise ValueError(f"the guide (`{guide_arg}`) has no latent stochastic node")
    if not isinstance(latent, dict) or not latent:
        raise TypeError("`latent` must be a non-empty dict name -> StochasticTensor or "
                        "(samples, log_prob)")
    nodes = {}
    for name, entry in latent.items():
        if isinstance(entry, StochasticTensor):
            nodes[name] = _GuideNode(name, entry.tensor, entry.cond_log_p, entry.dist)
        elif isinstance(entry, (tuple, list)) and len(entry) == 2:
            value, log_q = (torch.as_tensor(unwrap(part)) for part in entry)
            nodes[name] = _GuideNode(name, value, log_q)
        else:
            raise TypeError(f"guide node '{name}': expected a StochasticTensor or a "
                            f"(samples, log_prob) pair, got {type(entry).__name__}")
    return nodes


def _check_axis(axis):
    if axis is not None and (not isinstance(axis, int) or isinstance(axis, bool)):
        raise TypeError(f"`axis` must be None or an int (the particle axis), got {axis!r}")
    return axis


def _first_nonfinite(named_tensors):
    for name, value in named_tensors:
        if isinstance(value, torch.Tensor) and not bool(torch.isfinite(value).all()):
            return name
    return None


class VariationalObjective(TensorLike):
    """Base class of `elbo`, `importance_weighted_objective` and `klpq` objectives.

    `allow_default=True` lets the model sample latents the guide does not
    give (from their conditional priors); those then count as part of the
    proposal (used by `is_loglikelihood`). Otherwise an unmatched latent is an
    error: a variational objective needs q for every latent. `guide_arg`: the
    name the guide network was given under, for error messages.
    """

    def __init__(self, meta_bn, observed, latent=None, axis=None, variational=None, *,
                 allow_default=False, guide_arg="variational"):
        self._observed = {name: unwrap(value) for name, value in (observed or {}).items()}
        self._model = LogJoint(meta_bn, self._observed)
        self._axis = _check_axis(axis)
        self._allow_default = allow_default
        if allow_default and variational is None and latent is None:
            self._guide = {}
        else:
            self._guide = _guide_nodes(variational, latent, guide_arg)
        observed_guide = [name for name in self._guide if name in self._observed]
        if observed_guide:
            raise ValueError(f"guide node '{observed_guide[0]}' is observed in the model; "
                             f"a guide may only give latent nodes (observed: "
                             f"{', '.join(self._observed)})")
        self._bn = self._observe_model()
        self._cache = {}

    # -- the model at the guide's samples ----------------------------------
    @property
    def meta_bn(self):
        return self._model.meta_bn

    @property
    def bn(self):
        """The model's `BayesianNet` at the guide's samples (None for a plain log_joint)."""
        return self._bn

    @property
    def latent_values(self):
        """name -> value of every guide latent (fed to the model as observations)."""
        return {name: node.value for name, node in self._guide.items()}

    def _observe_model(self):
        meta_bn = self._model.meta_bn
        if meta_bn is None:
            return None
        try:
            bn = meta_bn.observe(**self._observed, **self.latent_values)
        except ValueError as err:
            unknown, model_nodes = self._guide_names_unknown_to_model()
            if unknown:
                raise ValueError(f"guide node '{unknown[0]}' is not a node of the model "
                                 f"(model nodes: {', '.join(model_nodes)})") from err
            raise
        default = [name for name, node in bn.stochastic_nodes.items()
                   if not node.is_observed()]
        if default and not self._allow_default:
            raise ValueError(f"model node '{default[0]}' is latent but the guide gives no "
                             f"value for it (it is neither observed nor a guide node; "
                             f"guide nodes: {', '.join(self._guide) or 'none'})")
        self._default_latents = default
        return bn

    def _guide_names_unknown_to_model(self):
        """Guide names the model lacks, and the model's nodes (only run to explain a failed
        `observe`)."""
        try:
            bn = self._model.meta_bn.observe(**self._observed)
        except ValueError:
            return [], []
        return [name for name in self._guide if name not in bn.nodes], list(bn.nodes)

    def _log_joint_term(self):
        """log p(observed, latent) at the guide's samples."""
        if "log_p" not in self._cache:
            if self._bn is None:
                self._cache["log_p"] = self._model(self.latent_values)
            else:
                self._cache["log_p"] = self._bn.log_joint()
        return self._cache["log_p"]

    def _log_q_term(self):
        """log q(latent): the guide's log-probabilities summed (plus priors of defaults)."""
        if "log_q" not in self._cache:
            terms = [node.log_q for node in self._guide.values()]
            if self._bn is not None:
                terms += [self._bn.nodes[name].cond_log_p for name in self._default_latents]
            total = torch.zeros(()) if not terms else terms[0]
            for term in terms[1:]:
                total = total + term
            self._cache["log_q"] = total
        return self._cache["log_q"]

    def _log_weight(self):
        """log w = log p(x, z) - log q(z), in the model's log joint shape."""
        if "log_w" not in self._cache:
            log_p, log_q = self._log_joint_term(), self._log_q_term()
            self._check_shapes(log_p, log_q)
            self._cache["log_w"] = log_p - log_q
        return self._cache["log_w"]

    @staticmethod
    def _check_shapes(log_p, log_q):
        if log_q.shape == log_p.shape:  # the common case, without torch.broadcast_shapes
            return
        try:
            shape = torch.broadcast_shapes(log_p.shape, log_q.shape)
        except RuntimeError:
            shape = None
        if shape != log_p.shape:
            raise ValueError(f"the guide's log q(z) has shape {tuple(log_q.shape)}, which does "
                             f"not broadcast to the model's log joint shape "
                             f"{tuple(log_p.shape)}; check `group_ndims` and `n_samples` of "
                             f"the guide and of the model")

    def _size_along_axis(self, value):
        if self._axis is None:
            return None
        if not -value.dim() <= self._axis < value.dim():
            raise ValueError(f"`axis`={self._axis} is out of range for the log weights of "
                             f"shape {tuple(value.shape)}")
        return value.shape[self._axis]

    # -- checks for the gradient estimators --------------------------------
    def _require_score_function(self, estimator):
        """Score-function estimators need log q(z) differentiable in q's parameters, at z fixed."""
        for node in self._guide.values():
            if node.value.requires_grad:
                raise ValueError(f"{estimator}: guide node '{node.name}' is reparameterized "
                                 f"(its sample carries gradients), which would add a "
                                 f"path-derivative term to this score-function estimator; "
                                 f"build it with is_reparameterized=False, or use sgvb()")
            if node.dist is not None and node.dist.use_path_derivative:
                raise ValueError(f"{estimator}: guide node '{node.name}' has "
                                 f"use_path_derivative=True, which detaches log q(z) from its "
                                 f"parameters; a score-function estimator needs that gradient")

    def _require_reparameterized(self, estimator):
        """SGVB differentiates through the samples: trainable guide nodes must be
        reparameterized."""
        for node in self._guide.values():
            if node.dist is not None and not node.dist.is_reparameterized \
                    and node.log_q.requires_grad:
                raise ValueError(f"{estimator}: guide node '{node.name}' "
                                 f"({type(node.dist).__name__}) is not reparameterized, so "
                                 f"the gradient would miss its score term; use a "
                                 f"score-function estimator (reinforce/vimco) instead")

    # -- reporting ---------------------------------------------------------
    def nonfinite_node(self):
        """The first guide or model node whose log-probability is NaN/inf, else None.

        Guide nodes come first (their samples feed the model), then the model's
        stochastic nodes and factors in the order they were created.
        """
        named = []
        for node in self._guide.values():
            named += [(node.name, node.value), (node.name, node.log_q)]
        if self._bn is not None:
            named += [(name, node.cond_log_p) for name, node in self._bn.stochastic_nodes.items()]
            named += list(self._bn.factors.items())
        return _first_nonfinite(named)

    # -- tensor-like surface -----------------------------------------------
    def _objective(self):
        raise NotImplementedError

    @property
    def tensor(self):
        """The objective's value as a plain tensor."""
        if "value" not in self._cache:
            self._cache["value"] = self._objective()
        return self._cache["value"]

    def __repr__(self):
        return f"{type(self).__name__}(axis={self._axis}, guide={list(self._guide)})"
