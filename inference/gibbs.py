"""Gibbs sampling: discrete nodes by enumeration, conjugate nodes by their full conditionals.

    gibbs = inference.Gibbs(independent_elements=("v", "h"))            # an RBM
    for sweep in range(n_sweeps):
        latent, info = gibbs.sample(rbm, observed={}, latent=latent)

    gibbs = inference.Gibbs(continuous_kernel=inference.HMC(step_size=0.3, n_leapfrogs=5))
    latent, info = gibbs.sample(mixture, {"x": x}, {"z": z, "mu": mu})  # HMC-within-Gibbs

One `.sample` call is one sweep: the nodes of the first two kinds one by one
in `latent`'s order, then the continuous ones together:

- a node with a user conditional (`conditionals[name](values) -> Distribution`,
  `values` holding every observed and current latent value) is drawn from it:
  conjugate updates;
- a node whose distribution has finite support (Bernoulli, Categorical,
  OnehotCategorical, Binomial) is drawn from its full conditional by
  enumeration. Only the node's own term and its children's terms (which
  involve exactly its Markov blanket; children come from `bn.graph`) depend
  on its value, so only those are evaluated;
- the remaining (continuous) nodes are moved together by `continuous_kernel`
  (e.g. `inference.HMC`, `inference.NUTS`, an SGMCMC sampler: anything with
  `.sample(meta_bn, observed, latent)`), with the others held as observed.

Enumeration, for a node of shape chain_shape + element_shape + value_shape
with K support values, evaluates the model on a leading candidate axis (the
model must broadcast over extra leading axes, as it does over chain axes;
`vectorized=False` evaluates candidates one by one instead):

- element by element (always valid): for each element, K candidates that
  differ in that element only; n sequential passes for n elements;
- as a block, for nodes in `independent_elements`, whose elements are
  conditionally independent given everything else (an RBM layer given the
  other layer, mixture assignments given the parameters): all n * K
  single-element changes in one pass, then every element drawn at once. By
  the independence, each element's K log-probabilities differ by the same
  constant as its true conditional's, whatever the other elements' values.

Chains are the leading axes of the latent values: the model's `log_joint()`
has the chain shape (one value per chain), and each chain is updated
independently.
"""
import math

import torch

from inference.model import LogJoint
from ppl import graph as graph_lib

__all__ = ["Gibbs", "finite_support", "enumerate_block", "enumerate_element"]


def finite_support(dist):
    """The support of a ppl distribution as a tensor [K, *value_shape], or None if infinite.

    Uses torch's `enumerate_support`; None also when the support differs between
    batch elements (e.g. Binomial with varying `n_experiments`).
    """
    torch_dist = dist._dist
    if not torch_dist.has_enumerate_support:
        return None
    try:
        support = torch_dist.enumerate_support(expand=False)
    except NotImplementedError:
        return None
    return support.reshape((support.shape[0],) + tuple(dist.value_shape))


def _sample_index(logits):
    """Index drawn from softmax(logits) over the last axis."""
    return torch.distributions.Categorical(logits=logits).sample()


def enumerate_element(evaluate, value, n_chain_dims, n_value_dims, support, element):
    """Draw element `element` (flat index) of `value` from its full conditional.

    evaluate(candidates [K, *value.shape]) -> log-probabilities [K, *chain_shape]
    (up to a constant per chain). Returns the new value.
    """
    chain_shape = value.shape[:n_chain_dims]
    value_shape = value.shape[value.dim() - n_value_dims:]
    flat = value.reshape(chain_shape + (-1,) + value_shape)
    n = flat.shape[n_chain_dims]
    ones_c, ones_v = (1,) * n_chain_dims, (1,) * n_value_dims
    mask = torch.zeros(n, dtype=torch.bool, device=value.device)
    mask[element] = True
    mask = mask.reshape((1,) + ones_c + (n,) + ones_v)
    candidates = torch.where(mask, support.reshape((len(support),) + ones_c + (1,) + value_shape),
                             flat.unsqueeze(0))
    log_p = evaluate(candidates.reshape((len(support),) + value.shape))
    choice = _sample_index(log_p.movedim(0, -1))                      # [*chain]
    flat = flat.clone()
    flat[(slice(None),) * n_chain_dims + (element,)] = support[choice]
    return flat.reshape(value.shape)


def enumerate_block(evaluate, value, n_chain_dims, n_value_dims, support):
    """Draw every element of `value` at once; valid when they are conditionally independent.

    Evaluates all n * K single-element changes in one call of
    evaluate(candidates [n * K, *value.shape]) -> [n * K, *chain_shape].
    """
    chain_shape = value.shape[:n_chain_dims]
    value_shape = value.shape[value.dim() - n_value_dims:]
    flat = value.reshape(chain_shape + (-1,) + value_shape)
    n, k = flat.shape[n_chain_dims], len(support)
    ones_c, ones_v = (1,) * n_chain_dims, (1,) * n_value_dims
    mask = torch.eye(n, dtype=torch.bool, device=value.device)
    mask = mask.reshape((n, 1) + ones_c + (n,) + ones_v)
    candidates = torch.where(mask, support.reshape((1, k) + ones_c + (1,) + value_shape),
                             flat.reshape((1, 1) + flat.shape))
    log_p = evaluate(candidates.reshape((n * k,) + value.shape))
    log_p = log_p.reshape((n, k) + chain_shape)
    choice = _sample_index(log_p.movedim(0, -1).movedim(0, -1))      # [*chain, n]
    return support[choice].reshape(value.shape)


class Gibbs:
    """Gibbs sweeps over discrete, conjugate and (through a kernel) continuous nodes.

    conditionals: dict name -> fn(values) -> Distribution (ppl or torch), the
        node's full conditional given `values` (all observed and current
        latent values); its sample must have the latent's shape.
    continuous_kernel: sampler for the nodes neither enumerable nor in
        `conditionals` (HMC-within-Gibbs); required when there are such nodes.
    independent_elements: names of enumerable nodes whose elements are
        conditionally independent given the rest: updated as one block.
    vectorized: evaluate enumeration candidates as one batch (needs a model
        that broadcasts over a leading axis); False: one model run each.
    """

    def __init__(self, conditionals=None, continuous_kernel=None, independent_elements=(),
                 vectorized=True):
        self.conditionals = dict(conditionals or {})
        for name, fn in self.conditionals.items():
            if not callable(fn):
                raise TypeError(f"conditionals['{name}'] must be a function values -> "
                                f"Distribution, got {type(fn).__name__}")
        if continuous_kernel is not None and not hasattr(continuous_kernel, "sample"):
            raise TypeError(f"`continuous_kernel` must have .sample(meta_bn, observed, latent), "
                            f"got {type(continuous_kernel).__name__}")
        if isinstance(independent_elements, str):
            independent_elements = (independent_elements,)
        self.continuous_kernel = continuous_kernel
        self.independent_elements = set(independent_elements)
        self.vectorized = vectorized
        self._children = (None, {})

    # -- one sweep ---------------------------------------------------------
    def sample(self, meta_bn, observed, latent):
        """One sweep; returns (samples, info).

        latent: dict name -> current value, chain axes first (inputs are not
        modified). samples: dict of new values; info: {"continuous": the
        continuous kernel's info} when it ran.
        """
        if not isinstance(latent, dict) or not latent:
            raise TypeError("`latent` must be a non-empty dict node name -> tensor")
        log_joint = LogJoint(meta_bn, observed)
        for name, value in latent.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"latent['{name}'] must be a tensor, got {type(value).__name__}")
        # copies: the continuous kernel writes its samples into the latents it is given
        values = {k: v.detach().clone() for k, v in latent.items()}
        # the net is read only for nodes without a given conditional (a model of only
        # given conditionals, e.g. an EnergyModel's layers, is not run here at all)
        bn = log_joint.bn(values) if set(values) - set(self.conditionals) else None
        discrete, continuous = self._split(bn, values)
        chain_ndim = self._chain_ndim(bn, values) if discrete else 0
        for name in values:
            if name in self.conditionals:
                values[name] = self._draw_conditional(name, {**log_joint.observed, **values},
                                                      values[name])
            elif name in discrete:
                values[name] = self._enumerate(log_joint, values, name, discrete[name],
                                               chain_ndim)
        info = {}
        if continuous:
            fixed = {k: v for k, v in values.items() if k not in continuous}
            moved, info["continuous"] = self.continuous_kernel.sample(
                meta_bn, {**log_joint.observed, **fixed}, {k: values[k] for k in continuous})
            values.update(moved)
        return values, info

    def _split(self, bn, values):
        """(discrete: name -> (support, n_value_dims), continuous: [names]) of the latents."""
        discrete, continuous = {}, []
        for name, value in values.items():
            if name in self.conditionals:
                continue
            node = bn.nodes.get(name) if bn is not None else None
            support = None
            if node is not None and hasattr(node, "dist"):
                support = finite_support(node.dist)
            if support is not None:
                support = support.to(device=value.device, dtype=value.dtype)
                discrete[name] = (support, len(node.dist.value_shape))
            elif not value.is_floating_point():
                raise ValueError(f"latent '{name}' is discrete but its support cannot be "
                                 f"enumerated (a plain log_joint callable has no node "
                                 f"distributions, or the support is infinite or varies); give "
                                 f"its full conditional in `conditionals`")
            else:
                continuous.append(name)
        if continuous and self.continuous_kernel is None:
            raise ValueError(f"latents {continuous} are continuous and have no conditional in "
                             f"`conditionals`: pass a `continuous_kernel` (e.g. inference.HMC) "
                             f"to move them")
        for name in self.independent_elements:
            if name not in discrete:
                raise ValueError(f"`independent_elements` names '{name}', which is not an "
                                 f"enumerable discrete latent (latents: {', '.join(values)})")
        return discrete, continuous

    @staticmethod
    def _chain_ndim(bn, values):
        shape = bn.log_joint().shape
        for name, value in values.items():
            if value.shape[:len(shape)] != shape:
                raise ValueError(f"log_joint() has shape {tuple(shape)} (one value per chain), "
                                 f"but latent '{name}' has shape {tuple(value.shape)}: latents "
                                 f"must start with the chain axes")
        return len(shape)

    # -- updates -----------------------------------------------------------
    def _draw_conditional(self, name, values, current):
        dist = self.conditionals[name](values)
        if not hasattr(dist, "sample"):
            raise TypeError(f"conditionals['{name}'] must return a Distribution, got "
                            f"{type(dist).__name__}")
        with torch.no_grad():
            new = dist.sample()
        if new.shape != current.shape:
            raise ValueError(f"conditionals['{name}'] returned a distribution whose samples have "
                             f"shape {tuple(new.shape)}; the latent has shape "
                             f"{tuple(current.shape)}")
        return new.to(current.dtype)

    def _enumerate(self, log_joint, values, name, support_info, chain_ndim):
        support, n_value_dims = support_info
        children = self._children_of(log_joint, values, name)
        chain_shape = values[name].shape[:chain_ndim]

        def evaluate(candidates):
            if self.vectorized:
                hint = ("write the model so extra leading axes broadcast (as chain axes do), "
                        "or use Gibbs(vectorized=False)")
                try:
                    out = _restricted_log_prob(log_joint, values, name, candidates, children)
                except RuntimeError as err:
                    raise ValueError(f"Gibbs: the model failed on a leading candidate axis "
                                     f"for '{name}' ({err}): {hint}") from err
                expected = candidates.shape[:1] + chain_shape
                if out.shape != expected:
                    raise ValueError(
                        f"Gibbs: enumerating '{name}' over a leading candidate axis gave "
                        f"log-probabilities of shape {tuple(out.shape)}, expected "
                        f"{tuple(expected)}: {hint}")
                return out
            return torch.stack([_restricted_log_prob(log_joint, values, name, c, children)
                                for c in candidates])

        with torch.no_grad():
            value = values[name]
            if name in self.independent_elements:
                return enumerate_block(evaluate, value, chain_ndim, n_value_dims, support)
            n_elements = math.prod(value.shape[chain_ndim:value.dim() - n_value_dims])
            for element in range(n_elements):
                value = enumerate_element(evaluate, value, chain_ndim, n_value_dims, support,
                                          element)
            return value

    def _children_of(self, log_joint, values, name):
        """The node's children and factors in the model graph (cached per model object)."""
        model, cache = self._children
        if model is not log_joint.meta_bn:
            graph = log_joint.bn(values).graph
            cache = {node: graph_lib.children(graph, node) for node in graph.nodes}
            self._children = (log_joint.meta_bn, cache)
        return cache[name]


def _restricted_log_prob(log_joint, values, name, candidate, children):
    """log p(name | parents) + the log-probabilities of its children and factors.

    The rest of the log joint does not depend on `name`'s value, so this is its
    full conditional up to a constant.
    """
    bn = log_joint.bn({**values, name: candidate})
    total = bn.cond_log_prob(name)
    for child in children:
        total = total + (bn.factors[child] if child in bn.factors else bn.cond_log_prob(child))
    return total
