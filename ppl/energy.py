"""Undirected models over binary layers: a `BayesianNet` scored by an energy.

    @ppl.meta_bayesian_net(scope="rbm")
    def rbm():
        W = ppl.param("W", lambda: 0.01 * torch.randn(784, 500))
        b = ppl.param("b", lambda: torch.zeros(784))
        c = ppl.param("c", lambda: torch.zeros(500))
        bn = ppl.BayesianNet()
        v = bn.bernoulli("v", logits=b, group_ndims=1)
        h = bn.bernoulli("h", logits=c, group_ndims=1)
        bn.factor("coupling", ((v @ W) * h).sum(-1))     # -energy(v, h) up to the biases
        return bn

    model = ppl.EnergyModel(rbm(), layers={"v": 784, "h": 500})
    gibbs = inference.Gibbs(conditionals=model.conditionals())
    state, _ = gibbs.sample(model.meta_bn, {}, {"v": v0, "h": h0})   # one block sweep

The net's `log_joint()`, with every layer observed, is log p*(x) = -E(x) up
to a constant: p(x) = p*(x) / Z. Every node is observed, so the model must
broadcast over leading (batch, chain) axes: write the parameters without a
batch axis, as above.

A layer's block conditional p(x_l | rest) factorizes over its units when
they do not interact (an RBM layer given the other, a DBM layer given its
neighbours). For binary units and a log p* linear in each unit (every energy
of this family: biases and pairwise couplings), its logits are the gradient
of log p* with respect to the layer, at any value of the layer: one autograd
pass derives them. A layer can instead be given its conditional,
`conditionals[name](values) -> Bernoulli`, e.g. written out for speed;
`check` compares every conditional with the energy (single-unit flips) and
tests that the layer's units are conditionally independent.
"""
import functools
import math

import torch
import torch.nn.functional as F

from ppl import distributions
from ppl.stochastic_tensor import unwrap

__all__ = ["EnergyModel", "check_binary"]


def check_binary(name, value):
    """Raise ValueError unless `value` holds only 0s and 1s (data for a binary layer)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"layer '{name}': expected a tensor of 0/1 values, got "
                        f"{type(value).__name__}")
    bad = (value != 0) & (value != 1)
    if bool(bad.any()):
        example = value[bad].flatten()[0].item()
        raise ValueError(f"layer '{name}' holds binary units, but the values given hold "
                         f"{int(bad.sum())} entries that are not 0 or 1 (e.g. {example!r}); "
                         f"binarize the data first (e.g. torch.bernoulli(x) or x > 0.5)")
    return value


class EnergyModel:
    """A model p(x) = p*(x) / Z over named binary layers, p* = exp(log_joint) of a net.

    meta_bn: what builds the net (a MetaBayesianNet, a template call, or a
        function / nn.Module returning a BayesianNet, as `ppl.as_meta_bn`
        takes); every layer is one of its nodes, observed.
    layers: dict name -> number of units (the last axis of that node), in the
        order a Gibbs sweep updates them.
    conditionals: optional dict name -> fn(values) -> Bernoulli (ppl or torch,
        with logits of the layer's shape): that layer's block conditional given
        the values of the others. Layers not named are derived by autograd.
    """

    def __init__(self, meta_bn, layers, conditionals=None):
        from ppl.template import as_meta_bn
        if not isinstance(layers, dict) or not layers:
            raise TypeError("`layers` must be a non-empty dict name -> number of units")
        for name, size in layers.items():
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise ValueError(f"layer '{name}': the number of units must be a positive int, "
                                 f"got {size!r}")
        conditionals = dict(conditionals or {})
        for name, fn in conditionals.items():
            if name not in layers:
                raise ValueError(f"conditionals name '{name}', which is not a layer "
                                 f"(layers: {', '.join(layers)})")
            if not callable(fn):
                raise TypeError(f"conditionals['{name}'] must be a function values -> "
                                f"Bernoulli, got {type(fn).__name__}")
        self.meta_bn = as_meta_bn(meta_bn)
        self.layers = dict(layers)
        self.given = conditionals

    # -- the unnormalized density ------------------------------------------------
    def log_joint(self, values):
        """log p*(x) for `values` (name -> [*batch, units], every layer): shape [*batch].

        A layer given as probabilities (values strictly between 0 and 1, e.g.
        mean-field means) is averaged over, as independent Bernoulli units with
        those means: E_q[log p*]. log p* is linear in each unit (no x_i^2
        terms), so E_q[log p*] = log p*(means), and t -> log p*(t * means) is a
        polynomial of degree at most 2 for pairwise energies, or the number of
        averaged layers when units within a layer do not interact: its Taylor
        series at t = 0 (all of them off, binary values the net accepts) to
        that order gives the average exactly.
        """
        missing = [name for name in self.layers if name not in values]
        if missing:
            raise ValueError(f"EnergyModel.log_joint: no values for layers {missing}")
        means = {name: value for name, value in values.items()
                 if name in self.layers and not _is_binary(value)}
        if not means:
            return self.meta_bn.observe(**values).log_joint()
        keep_graph = torch.is_grad_enabled()
        any_mean = next(iter(means.values()))
        batch = torch.broadcast_shapes(*(value.shape[:-1] for value in means.values()))
        t = torch.zeros(batch + (1,), dtype=any_mean.dtype, device=any_mean.device,
                        requires_grad=True)
        with torch.enable_grad():
            term = self.meta_bn.observe(**{**values, **{name: t * value for name, value
                                                        in means.items()}}).log_joint()
            total = term
            for order in range(1, max(2, len(means)) + 1):
                if not term.requires_grad:
                    break
                term, = torch.autograd.grad(term.sum(), t, create_graph=True, allow_unused=True)
                if term is None:
                    break
                total = total + term[..., 0] / math.factorial(order)
        return total if keep_graph else total.detach()

    # -- block conditionals ------------------------------------------------------
    def logits(self, name, values):
        """The logits [*batch, units] of layer `name`'s block conditional given the others
        (`values` need not hold the layer itself).

        A given conditional's, or d log p* / d x_name at x_name = 0 (exact for an
        energy linear in each unit whose units within the layer do not interact;
        other layers given as probabilities give the mean-field logits); detached.
        """
        self._check_layer(name)
        if name in self.given:
            dist = self.given[name](values)
            logits = getattr(dist, "logits", None)
            if not isinstance(logits, torch.Tensor):
                raise TypeError(f"conditionals['{name}'] must return a Bernoulli with logits, "
                                f"got {type(dist).__name__}")
            return unwrap(logits).detach()
        other = values[name] if name in values else next(iter(values.values()))
        dtype = other.dtype if other.is_floating_point() else torch.get_default_dtype()
        value = torch.zeros(other.shape[:-1] + (self.layers[name],), dtype=dtype,
                            device=other.device, requires_grad=True)
        with torch.enable_grad():
            total = self.log_joint({**values, name: value}).sum()
            grad, = torch.autograd.grad(total, value)
        return grad.detach()

    def conditional(self, name, values):
        """Layer `name`'s block conditional: a ppl Bernoulli over [*batch, units]."""
        logits = self.logits(name, values)
        dtype = values[name].dtype if name in values else logits.dtype
        return distributions.Bernoulli(logits=logits, dtype=dtype, group_ndims=1)

    def conditionals(self, names=None):
        """name -> fn(values) -> Bernoulli, for `inference.Gibbs(conditionals=...)`."""
        names = self.layers if names is None else names
        return {name: functools.partial(self.conditional, name) for name in names}

    def mean_field(self, values, names, n_iterations=10, init=None):
        """Mean-field means of layers `names` given the other layers' `values`.

        Fixed-point updates mu_l = sigmoid(logits_l(values, mu)) in order; for one
        layer (an RBM's hidden layer) one update is exact. `init`: starting means
        (default 0.5). Returns name -> means [*batch, units].
        """
        if n_iterations < 1:
            raise ValueError(f"mean_field: `n_iterations` must be >= 1, got {n_iterations!r}")
        batch = next(iter(values.values())).shape[:-1]
        template = next(iter(values.values()))
        means = dict(init or {})
        for name in names:
            if name not in means:
                means[name] = torch.full(batch + (self.layers[name],), 0.5,
                                         dtype=template.dtype, device=template.device)
        for _ in range(n_iterations if len(names) > 1 else 1):
            for name in names:
                means[name] = torch.sigmoid(self.logits(name, {**values, **means}))
        return means

    def linear_terms(self, names, values):
        """(log p* with the layers `names` at 0: [*batch], name -> logits of each of them).

        log p* is linear in each layer; for layers that interact with none of
        each other it is log p*(names at 0) + sum over them of x . logits. One
        autograd pass gives every derived term; under grad mode the results
        stay differentiable in the model's parameters.
        """
        keep_graph = torch.is_grad_enabled()
        template = next(v for k, v in values.items() if k not in names)
        zeros = {name: torch.zeros(template.shape[:-1] + (self.layers[name],),
                                   dtype=template.dtype, device=template.device,
                                   requires_grad=name not in self.given)
                 for name in names}
        derived = [name for name in names if name not in self.given]
        with torch.enable_grad():
            base = self.log_joint({**values, **zeros})
            grads = torch.autograd.grad(base.sum(), [zeros[name] for name in derived],
                                        create_graph=keep_graph) if derived else ()
        logits = dict(zip(derived, grads))
        for name in names:
            if name in self.given:
                logits[name] = unwrap(self.given[name]({**values, **zeros}).logits)
        if not keep_graph:
            base, logits = base.detach(), {name: logit.detach() for name, logit in logits.items()}
        return base, {name: logits[name] for name in names}

    def sum_out(self, names, values):
        """log sum over the layers `names` of p*(x): [*batch], given the other layers.

        Exact when the units of `names` interact with none of each other (each
        unit then sums to softplus(logit)).
        """
        base, logits = self.linear_terms(names, values)
        return base + sum(F.softplus(logit).sum(-1) for logit in logits.values())

    # -- checks ------------------------------------------------------------------
    def check(self, values, names=None, n_units=16, atol=1e-4, rtol=1e-4):
        """Check each layer's conditional against the energy at `values`.

        For up to `n_units` units i of each layer: logit_i must equal
        log p*(x_i = 1, rest) - log p*(x_i = 0, rest); and the logits must not
        change when the layer itself is redrawn (its units are conditionally
        independent, so a block update is valid). Raises ValueError naming the
        layer, the unit and the two numbers.
        """
        generator = torch.Generator().manual_seed(0)
        for name in (self.layers if names is None else names):
            value = values[name]
            logits = self.logits(name, values)
            if not bool(torch.isfinite(logits).all()):
                raise FloatingPointError(f"layer '{name}' has non-finite values in its "
                                         f"conditional's logits (the weights overflowed?)")
            units = torch.randperm(value.shape[-1], generator=generator)[:n_units].tolist()
            for unit in units:
                on, off = value.clone(), value.clone()
                on[..., unit], off[..., unit] = 1, 0
                with torch.no_grad():
                    high, low = (self.log_joint({**values, name: x}) for x in (on, off))
                exact = (high - low).to(logits.dtype)
                claimed = logits[..., unit]
                # a difference of two sums of size |log p*|: allow their rounding error
                rounding = 64 * torch.finfo(high.dtype).eps * torch.maximum(high.abs(), low.abs())
                error = (claimed - exact).abs() - atol - rtol * exact.abs() - rounding
                if bool((error > 0).any()):
                    worst = error.flatten().argmax()
                    raise ValueError(
                        f"layer '{name}': the conditional does not match the energy: unit "
                        f"{unit} has logit {claimed.flatten()[worst].item():.6g} where "
                        f"log p*(x=1) - log p*(x=0) = {exact.flatten()[worst].item():.6g}")
            redrawn = torch.bernoulli(torch.full(value.shape, 0.5, dtype=torch.float64),
                                      generator=generator).to(value)
            moved = self.logits(name, {**values, name: redrawn})
            if not torch.allclose(moved, logits, atol=atol, rtol=max(rtol, 1e3 * torch.finfo(
                    logits.dtype).eps)):
                raise ValueError(
                    f"layer '{name}': its units are not conditionally independent given the "
                    f"other layers (the conditional's logits change by up to "
                    f"{(moved - logits).abs().max().item():.3g} when the layer itself "
                    f"changes), so it cannot be updated as one block; split it into "
                    f"layers whose units do not interact")

    def _check_layer(self, name):
        if name not in self.layers:
            raise KeyError(f"EnergyModel has no layer '{name}' (layers: "
                           f"{', '.join(self.layers)})")

    def __repr__(self):
        shape = ", ".join(f"{name}: {size}" for name, size in self.layers.items())
        return f"EnergyModel({shape}; given conditionals: {sorted(self.given) or 'none'})"


def _is_binary(value):
    return bool(((value == 0) | (value == 1)).all())
