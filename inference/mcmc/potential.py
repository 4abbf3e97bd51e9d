"""The target of HMC/NUTS: log density and gradient over flat unconstrained positions.

    potential = Potential(meta_bn, observed, latent)   # latent: constrained, chain axes first
    x = potential.unconstrain(latent)                   # [n_chains, D]
    log_prob, grad = potential(x)                       # [n_chains], [n_chains, D]

Building a `Potential` runs the model once to find each latent's node, its
support (hence its bijection, see `transforms`) and the chain axes: the model
is run with the latents observed, and `log_joint()` must have exactly the
chain shape (a plain callable must return it too). Chains whose log density
or gradient is not finite, or whose values make the model raise, get
`log_prob = -inf` and a zero gradient, so they never poison the other chains;
the kernels reject such moves.
"""
import math

import torch
from torch.distributions import constraints

from inference.model import LogJoint, value_and_grad
from inference.mcmc.transforms import LatentSpace, transform_to
from ppl.distributions.base import values_trusted
from ppl.stochastic_tensor import StochasticTensor

__all__ = ["Potential", "latent_nodes"]


def latent_nodes(meta_bn, observed):
    """The unobserved stochastic nodes of a model, name -> `StochasticTensor`, from a prior run.

    `meta_bn` is anything `LogJoint` accepts except a plain callable (which has no nodes).
    """
    log_joint = LogJoint(meta_bn, observed)
    if log_joint.is_plain:
        raise ValueError("a plain log_joint callable has no nodes to inspect: give the latent "
                         "values (`latent` / `init`) explicitly")
    bn = log_joint.meta_bn.observe(**log_joint.observed)
    return {name: node for name, node in bn.stochastic_nodes.items() if not node.is_observed()}


def _constraint_tensors(constraint):
    """Tensors a constraint holds (e.g. interval bounds), searched recursively."""
    found = []
    for value in vars(constraint).values():
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, constraints.Constraint):
            found.extend(_constraint_tensors(value))
    return found


class Potential:
    """log p(observed, latent = T(x)) + log|det dT/dx| for flat unconstrained `x` [n_chains, D].

    meta_bn, observed: the model, as `inference.model.LogJoint` accepts it.
    latent: dict name -> constrained value whose leading axes are the chain axes.
    supports: optional dict name -> torch constraint; required for constrained
        latents of a plain callable (which has no nodes), and overrides a node's support.
    """

    def __init__(self, meta_bn, observed, latent, supports=None):
        self.log_joint = LogJoint(meta_bn, observed)
        self._bound = (meta_bn, dict(observed or {}))
        self.version = 0
        if not isinstance(latent, dict) or not latent:
            raise ValueError(f"`latent` must be a non-empty dict name -> tensor, got {latent!r}")
        supports = dict(supports or {})
        unknown = set(supports) - set(latent)
        if unknown:
            raise ValueError(f"`supports` names {sorted(unknown)} that are not latents "
                             f"(latents: {sorted(latent)})")
        latent = {k: self._as_tensor(k, v) for k, v in latent.items()}
        if self.log_joint.is_plain:
            chain_shape = self._chain_shape_plain(latent)
            node_supports = {}
        else:
            chain_shape, node_supports = self._inspect_model(latent)
        node_supports.update(supports)
        transforms, shapes = [], []
        for name, value in latent.items():
            support = node_supports.get(name, constraints.real)
            transforms.append(transform_to(support, name))
            shapes.append(value.shape[len(chain_shape):])
        self.space = LatentSpace(latent.keys(), shapes, transforms, chain_shape)
        self.supports = {name: node_supports.get(name, constraints.real) for name in latent}
        self.dtype = next(iter(latent.values())).dtype
        self.device = next(iter(latent.values())).device
        self._reshape_chains = self.space.chain_shape != (self.space.n_chains,)
        self._last_good = None  # each chain's last x with a finite log density (no host sync)

    # -- set-up checks -----------------------------------------------------
    @staticmethod
    def _as_tensor(name, value):
        if isinstance(value, StochasticTensor):
            value = value.tensor
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"latent '{name}' must be a tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise ValueError(f"latent '{name}' must be floating point (HMC moves continuously), "
                             f"got dtype {value.dtype}")
        return value.detach()

    def _chain_shape_plain(self, latent):
        with torch.no_grad():
            out = self.log_joint(latent)
        chain_shape = out.shape
        for name, value in latent.items():
            if value.shape[:len(chain_shape)] != chain_shape:
                raise ValueError(
                    f"latent '{name}' has shape {tuple(value.shape)}, but log_joint returned "
                    f"shape {tuple(chain_shape)}: the log joint must have one value per chain "
                    f"and every latent must start with the chain axes {tuple(chain_shape)}")
        return chain_shape

    def _inspect_model(self, latent):
        """Check the latents against the model's nodes; return (chain_shape, supports)."""
        meta_bn, observed = self.log_joint.meta_bn, self.log_joint.observed
        self.log_joint._check_overlap(latent)
        prior = meta_bn.observe(**observed)
        stochastic = prior.stochastic_nodes
        for name in latent:
            if name not in prior.nodes:
                raise ValueError(f"latent '{name}' is not a node of the model "
                                 f"(stochastic nodes: {', '.join(stochastic) or 'none'})")
            if name not in stochastic:
                raise ValueError(f"latent '{name}' is a deterministic node: only stochastic "
                                 f"nodes can be sampled")
        missing = [k for k, node in stochastic.items()
                   if not node.is_observed() and k not in latent]
        if missing:
            raise ValueError(f"nodes {missing} are neither observed nor given in `latent`: "
                             f"MCMC needs a value for every stochastic node (otherwise the "
                             f"model would redraw them from the prior at every step)")
        chain_of = {}
        for name, value in latent.items():
            node_shape = stochastic[name].tensor.shape
            if value.shape == node_shape:
                continue  # the model itself carries the chain axes (ZhuSuan style)
            lead = value.dim() - len(node_shape)
            if lead <= 0 or value.shape[lead:] != node_shape:
                raise ValueError(
                    f"latent '{name}' has shape {tuple(value.shape)}, but the model's node has "
                    f"shape {tuple(node_shape)}: give chain axes + {tuple(node_shape)}, "
                    f"e.g. ({'n_chains, ' + ', '.join(map(str, node_shape))})")
            chain_of[name] = value.shape[:lead]
        if len(set(chain_of.values())) > 1:
            listing = ", ".join(f"'{k}': {tuple(v)}" for k, v in chain_of.items())
            raise ValueError(f"the latents disagree on the chain axes ({listing}); every latent "
                             f"must have the same leading chain axes")
        leaves = {k: v.clone().requires_grad_(True) for k, v in latent.items()}
        with torch.enable_grad():
            try:
                bn = self.log_joint.bn(leaves)
                log_joint = bn.log_joint()
            except (RuntimeError, ValueError, IndexError, TypeError) as error:
                if chain_of and self._runs_without_chain_axes(latent, chain_of):
                    raise self._chain_axes_error(latent, chain_of, error) from error
                raise
            supports = {k: bn.get(k).dist.support for k in latent}
            self._check_supports_fixed(supports, leaves)
        if chain_of:
            chain_shape = next(iter(chain_of.values()))
            if log_joint.shape != chain_shape:
                raise ValueError(
                    f"log_joint() has shape {tuple(log_joint.shape)}, but the latents' chain axes "
                    f"are {tuple(chain_shape)}: the log joint must have exactly one value per "
                    f"chain (sum each node's value and data axes with group_ndims, and write the "
                    f"model so the chain axis broadcasts)")
        else:
            chain_shape = log_joint.shape
            for name, value in latent.items():
                if value.shape[:len(chain_shape)] != chain_shape:
                    raise ValueError(
                        f"latent '{name}' has shape {tuple(value.shape)}, but log_joint() has "
                        f"shape {tuple(chain_shape)}: latents must start with the chain axes")
        return chain_shape, supports

    def _runs_without_chain_axes(self, latent, chain_of):
        """Whether the model runs on the first chain's values with the chain axes removed."""
        first = {k: v[(0,) * len(chain_of[k])] if k in chain_of else v for k, v in latent.items()}
        try:
            with torch.no_grad():
                self.log_joint.bn(first).log_joint()
        except (RuntimeError, ValueError, IndexError, TypeError):
            return False
        return True

    @staticmethod
    def _chain_axes_error(latent, chain_of, error):
        """The model runs on one chain's values but not with the chain axes in front: say so."""
        chains = next(iter(chain_of.values()))
        listing = ", ".join(f"'{k}': {tuple(latent[k].shape)} = chains {tuple(chain_of[k])} + "
                            f"node {tuple(latent[k].shape[len(chain_of[k]):])}"
                            for k in chain_of)
        return ValueError(
            f"the model fails when its latents carry the chain axes {tuple(chains)} in front "
            f"({listing}), though it runs on a single chain's values: MCMC evaluates all "
            f"chains in one model call, so every latent node's value has the chain axes "
            f"first. Write the model so they broadcast: as in ZhuSuan, give each prior a "
            f"leading chain axis (e.g. bn.normal(name, torch.zeros(n_chains, ...), std=1.) "
            f"and init/latent values of exactly that shape), or write code that broadcasts "
            f"over leading axes (`x @ w` works with w [n_chains, 4, 3]; add a bias b "
            f"[n_chains, 3] as `b.unsqueeze(-2)`, index the last axes with `...`). "
            f"The model's error: {type(error).__name__}: {error}")

    @staticmethod
    def _check_supports_fixed(supports, leaves):
        inputs = list(leaves.values())
        for name, support in supports.items():
            for bound in _constraint_tensors(support):
                if not bound.requires_grad:
                    continue
                grads = torch.autograd.grad(bound.sum(), inputs, allow_unused=True,
                                            retain_graph=True)
                if any(g is not None for g in grads):
                    raise ValueError(
                        f"the support of latent '{name}' ({support}) depends on other latents; "
                        f"HMC/NUTS need fixed supports: reparameterize (e.g. "
                        f"x = lower + (upper - lower) * u with u ~ Uniform(0, 1))")

    # -- evaluation --------------------------------------------------------
    @property
    def n_chains(self):
        return self.space.n_chains

    @property
    def dim(self):
        return self.space.dim

    @property
    def chain_shape(self):
        return self.space.chain_shape

    @property
    def chains_are_rows(self):
        """Whether the chains are one axis, the rows of `x`: the log density of a few rows
        alone (e.g. the chains still running) may then be asked for, where the model
        allows it (see `compile.CompiledStep`'s `rows`)."""
        return not self._reshape_chains

    def unconstrain(self, latent):
        """Constrained latents (chain axes first) -> flat `x` [n_chains, D]."""
        missing = set(self.space.names) - set(latent)
        extra = set(latent) - set(self.space.names)
        if missing or extra:
            raise ValueError(f"latent names changed: expected {self.space.names}, got "
                             f"{sorted(latent)}")
        x = self.space.unconstrain({k: self._as_tensor(k, v) for k, v in latent.items()})
        if x.shape[:-1] != self.space.chain_shape:
            raise ValueError(f"latents have chain axes {tuple(x.shape[:-1])}, expected "
                             f"{tuple(self.space.chain_shape)}")
        return x.reshape(self.n_chains, self.dim)

    def constrain(self, x):
        """Flat `x` [n_chains, D] -> constrained latents with the chain axes restored."""
        return self.space.constrain(x.reshape(self.space.chain_shape + (self.dim,)))

    def _evaluate(self, x):
        space = self.space
        if self._reshape_chains:
            x = x.reshape(space.chain_shape + (space.dim,))
        if space.has_transforms:
            values, log_det = space.constrain(x, with_log_det=True)
        else:
            values, log_det = space.constrain(x), None
        out = self.log_joint(values)
        expected = space.chain_shape if self._reshape_chains else x.shape[:-1]
        if out.shape != expected:
            raise ValueError(f"log_joint returned shape {tuple(out.shape)}, expected the chain "
                             f"shape {tuple(expected)}")
        if log_det is not None:
            out = out + log_det
        return out.reshape(self.n_chains) if self._reshape_chains else out

    def _evaluate_or_mask(self, x):
        """`_evaluate`, but chains whose values make the model raise get -inf.

        A model can raise at some points (a value outside a support after
        overflow, a failed Cholesky factorization). The failing chains are
        found by bisection, re-evaluating with the others put back at their last
        position with a finite log density (zeros before there is one); they
        get -inf, which the kernels reject like any divergence. If even that
        position fails, the model's own error is raised.
        """
        try:
            return self._evaluate(x)
        except (ValueError, RuntimeError) as error:
            original = error
        bad = ~torch.isfinite(x).all(-1)
        safe = self._last_good_at(x)

        def fails(chains):
            """Whether the model raises with only `chains` at their real values."""
            keep_safe = torch.ones_like(bad)
            keep_safe[chains] = False
            with torch.no_grad():
                try:
                    self._evaluate(torch.where((keep_safe | bad)[:, None], safe, x))
                except (ValueError, RuntimeError):
                    return True
            return False

        def search(chains):
            if len(chains) == 1:
                return chains if fails(chains) else []
            half = len(chains) // 2
            return [c for part in (chains[:half], chains[half:]) if fails(part)
                    for c in search(part)]

        if fails([]):
            raise original
        failing = search(torch.nonzero(~bad).flatten().tolist())
        bad[failing] = True
        out = self._evaluate(torch.where(bad[:, None], safe, x))
        return torch.where(bad, torch.full_like(out, -math.inf), out)

    def log_prob(self, x):
        """Log density at `x` [n_chains, D] without gradient: [n_chains]."""
        with torch.no_grad():
            log_prob = self._evaluate_or_mask(x)
        return torch.where(torch.isnan(log_prob), torch.full_like(log_prob, -math.inf), log_prob)

    def __call__(self, x, mask_nonfinite=True):
        """(log_prob [n_chains], grad [n_chains, D]) at flat unconstrained `x` [n_chains, D]
        (`inference.model.value_and_grad`: non-finite chains get -inf and a zero gradient,
        unless `mask_nonfinite` is False: for a caller that stops at them anyway)."""
        log_prob, grad = value_and_grad(self._evaluate_or_mask, x, mask_nonfinite)
        if x.shape[0] == self.n_chains:  # (not for a few rows alone)
            self._last_good = torch.where(torch.isfinite(log_prob)[:, None], x.detach(),
                                          self._last_good_at(x))
        return log_prob, grad

    def _last_good_at(self, x):
        """Each chain's last x with a finite log density, for `x` of every chain (zeros
        before there is one, and for a few rows alone)."""
        if self._last_good is None or self._last_good.shape != x.shape:
            return torch.zeros_like(x)
        return self._last_good

    def traceable(self, x, mask_nonfinite=True):
        """`self(x, mask_nonfinite)` without Python branches on values or error recovery: for
        `CompiledStep`.

        Non-finite chains are masked with torch.where (log_prob -inf, gradient
        0); a model that raises is left to the eager `__call__`. The model's
        support checks are skipped (`values_trusted`): the bijections put the
        latents in their supports, and a check cannot be traced.
        """
        with values_trusted():
            return value_and_grad(self._evaluate, x, mask_nonfinite)

    def rebind(self, meta_bn, observed):
        """Evaluate another model object / other observed values with the same latent layout.

        `version` counts the rebinds that changed something (another model
        object or other observed tensors): compiled steps hold the old ones.
        """
        observed = dict(observed or {})
        if meta_bn is self._bound[0] and observed.keys() == self._bound[1].keys() and all(
                observed[k] is v for k, v in self._bound[1].items()):
            return
        self.log_joint = LogJoint(meta_bn, observed)
        self._bound = (meta_bn, observed)
        self.version += 1
