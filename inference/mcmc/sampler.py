"""ZhuSuan's sampler object: configuration plus `.sample(meta_bn, observed, latent)`.

`HMC` and `NUTS` subclass `HamiltonianSampler` and supply `transition(state,
potential, step_size, metric)` (their kernel). `inference.mcmc.run` reads the
configuration and drives the kernel with Stan's windowed warm-up; `.sample()`
is ZhuSuan's step-at-a-time interface: it keeps the chains' step sizes, mass
matrices and adaptation state between calls (keyed on the latents' names and
shapes) and adapts online while `adapt_step_size` / `adapt_mass` are true.
"""
from dataclasses import dataclass

import torch

from inference.mcmc.adaptation import (DualAveraging, ExponentialMovingVariance,
                                       find_initial_step_size, make_metric)
from inference.mcmc.compile import CompiledStep
from inference.mcmc.metric import identity_metric
from inference.mcmc.potential import Potential
from inference.mcmc.state import init_state
from inference.write_back import hand_out, write_back

__all__ = ["HamiltonianSampler", "HMCInfo"]

# Per-transition statistics `iterate` returns (those of `TransitionInfo`, and the step size).
_RECORDED = ("accept_prob", "step_size", "diverging", "tree_depth", "n_steps", "energy")


@dataclass
class HMCInfo:
    """What one `.sample()` call did, per chain (tensors of the chain shape).

    ZhuSuan's fields: samples, acceptance_rate, updated_step_size,
    init_momentum (name -> the momentum the transition started from, in the
    unconstrained space, chain axes first; None for NUTS), orig_hamiltonian,
    hamiltonian, orig_log_prob, log_prob (the model's log joint before and
    after); plus diverging, n_steps and tree_depth.
    """

    samples: dict
    acceptance_rate: torch.Tensor
    updated_step_size: torch.Tensor
    init_momentum: dict
    orig_hamiltonian: torch.Tensor
    hamiltonian: torch.Tensor
    orig_log_prob: torch.Tensor
    log_prob: torch.Tensor
    diverging: torch.Tensor
    n_steps: torch.Tensor
    tree_depth: torch.Tensor

    @property
    def step_size(self):
        return self.updated_step_size


def _mass_kind(adapt_mass):
    if adapt_mass is None or adapt_mass is False:
        return None
    if adapt_mass is True:
        return "diag"
    if adapt_mass in ("diag", "dense"):
        return adapt_mass
    raise ValueError(f"`adapt_mass` must be None, False, True, 'diag' or 'dense'; "
                     f"got {adapt_mass!r}")


def _check_positive(name, value, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number, got {value!r}")


class HamiltonianSampler:
    """Shared configuration and the stateful `.sample()` of HMC and NUTS."""

    def __init__(self, step_size, adapt_step_size, target_acceptance_rate, gamma, t0, kappa,
                 adapt_mass, mass_collect_iters, mass_decay, max_energy_error, jit_compile=False):
        _check_positive("step_size", step_size, allow_none=True)
        if not 0. < target_acceptance_rate < 1.:
            raise ValueError(f"`target_acceptance_rate` must be in (0, 1), got "
                             f"{target_acceptance_rate!r}")
        for name, value in [("gamma", gamma), ("t0", t0), ("kappa", kappa),
                            ("max_energy_error", max_energy_error)]:
            _check_positive(name, value)
        if not 0. < mass_decay < 1.:
            raise ValueError(f"`mass_decay` must be in (0, 1), got {mass_decay!r}")
        self.adapt_mass = _mass_kind(adapt_mass)
        if self.adapt_mass and not adapt_step_size:
            raise ValueError("adapting the mass needs `adapt_step_size=True` (a new metric "
                             "needs a new step size)")
        self.step_size = step_size
        self.adapt_step_size = adapt_step_size
        self.target_acceptance_rate = target_acceptance_rate
        self.gamma, self.t0, self.kappa = gamma, t0, kappa
        self.mass_collect_iters = int(mass_collect_iters)
        self.mass_decay = mass_decay
        self.max_energy_error = max_energy_error
        if not isinstance(jit_compile, bool):
            raise ValueError(f"`jit_compile` must be True or False, got {jit_compile!r}")
        self.jit_compile = jit_compile
        self._online = None
        self._steps = {}  # (kind, metric type) -> step function, for `_step_function`
        self._steps_for = None  # the (potential, version) they were made for

    def transition(self, state, potential, step_size, metric):
        """One kernel step: (state, TransitionInfo). Implemented by HMC and NUTS."""
        raise NotImplementedError

    def iterate(self, state, potential, step_size, metric, n_iterations, dual_averaging=None,
                progress=None, out=None):
        """`n_iterations` transitions of every chain (what `inference.mcmc.run` calls).

        dual_averaging: a `DualAveraging` updated after each transition (warm-up),
        or None. progress: called with the number of transitions just made.
        out: None, or a callable out(iteration [m], chain [m], position [m, D],
        stats name -> [m]) given the transitions as they are made (iteration
        counted from 0 in this call), so that nothing is kept here.
        Returns (state, positions [k, n, D] after each transition, statistics
        name -> [k, n], step_size [n] after the last update); positions and
        statistics are None with `out`.
        """
        positions, stats = [], {name: [] for name in _RECORDED}
        chains = torch.arange(state.position.shape[0], device=state.position.device)
        for i in range(n_iterations):
            state, info = self.transition(state, potential, step_size, metric)
            made = {name: step_size if name == "step_size" else getattr(info, name)
                    for name in _RECORDED}
            if out is None:
                positions.append(state.position)
                for name in _RECORDED:
                    stats[name].append(made[name])
            else:
                out(torch.full_like(chains, i), chains, state.position, made)
            if dual_averaging is not None:
                step_size = dual_averaging.update(info.accept_prob)
            if progress is not None:
                progress(1)
        if out is not None:
            return state, None, None, step_size
        return (state, torch.stack(positions), {k: torch.stack(v) for k, v in stats.items()},
                step_size)

    def _step_function(self, kind, potential, metric, build, perturb):
        """The kernel's inner step, `build(value_and_grad)`, on `potential`.

        Eager unless `jit_compile`: then traced and compiled at its first call
        (`inference.mcmc.compile.CompiledStep`), once per potential and metric
        type, and kept while the kernel is used with that potential.
        """
        if not self.jit_compile:
            return build(potential)
        if self._steps_for != (potential, potential.version):
            self._steps, self._steps_for = {}, (potential, potential.version)
        key = (kind, type(metric))
        if key not in self._steps:
            self._steps[key] = CompiledStep(build(potential.traceable), build(potential),
                                            perturb, name=f"{type(self).__name__} {kind}")
        return self._steps[key]

    def initial_step_size(self, state, potential, metric):
        """The step size to start from, [n_chains] (heuristic search if none was given)."""
        n = state.position.shape[0]
        start = torch.full((n,), 1. if self.step_size is None else float(self.step_size),
                           dtype=state.position.dtype, device=state.position.device)
        if self.step_size is None or self.adapt_step_size:
            return find_initial_step_size(state, potential, metric, start)
        return start

    def reset(self):
        """Forget the chains' step sizes, metrics and adaptation kept by `.sample()`."""
        self._online = None

    # -- ZhuSuan's interface -----------------------------------------------
    def sample(self, meta_bn, observed, latent, *, supports=None):
        """Advance every chain by one transition from `latent` (constrained, chain axes first).

        Returns (samples, info): samples is a dict name -> new value (same shapes
        as `latent`; also `info.samples`), info an `HMCInfo`. As ZhuSuan assigns
        its latent Variables, the samples are also written into the caller's
        `latent` tensors (`inference.write_back`). Adaptation runs while
        `adapt_step_size` (and `adapt_mass`) are true: set them false after
        burn-in, as ZhuSuan users feed False to its placeholders.
        """
        online = self._online
        layout = tuple((k, tuple(v.shape), v.dtype) for k, v in latent.items()) \
            if isinstance(latent, dict) else None
        if online is None or online.layout != layout:
            online = self._online = _OnlineChains(self, meta_bn, observed, latent, supports,
                                                  layout)
        else:
            online.potential.rebind(meta_bn, observed)
        samples, info = online.step(self, latent)
        info.samples = hand_out(samples)
        write_back(latent, info.samples)
        return info.samples, info


class _OnlineChains:
    """State `.sample()` keeps between calls: potential, step sizes, metric, adaptation."""

    def __init__(self, sampler, meta_bn, observed, latent, supports, layout):
        self.layout = layout
        self.potential = Potential(meta_bn, observed, latent, supports)
        p = self.potential
        self.metric = identity_metric(p.n_chains, p.dim, dense=sampler.adapt_mass == "dense",
                                      dtype=p.dtype, device=p.device)
        self.iteration = 0
        self.step_size = None
        self.dual_averaging = None
        self.mass = (ExponentialMovingVariance(sampler.mass_decay, sampler.adapt_mass == "dense")
                     if sampler.adapt_mass else None)

    def _model_log_prob(self, x, log_prob):
        """Remove the log|det J| of the transforms: the model's own log joint."""
        space = self.potential.space
        if not space.has_transforms:
            return log_prob
        with torch.no_grad():
            _, log_det = space.constrain(x, with_log_det=True)
        return log_prob - log_det

    def step(self, sampler, latent):
        p = self.potential
        x = p.unconstrain(latent)
        state = init_state(p, x)
        if not bool(torch.isfinite(state.log_prob).all()):
            bad = torch.nonzero(~torch.isfinite(state.log_prob)).flatten().tolist()
            raise ValueError(f"the log joint is not finite at the given latent values "
                             f"(flattened chains {bad})")
        self.iteration += 1
        adapt_step = bool(sampler.adapt_step_size)
        reinit = False
        if self.mass is not None and sampler.adapt_mass and adapt_step:
            self.mass.update(state.position)
            if self.iteration >= sampler.mass_collect_iters:
                self.metric = make_metric(self.mass.covariance())
                reinit = self.iteration == sampler.mass_collect_iters
        if self.step_size is None:
            self.step_size = sampler.initial_step_size(state, p, self.metric)
            if adapt_step:
                self.dual_averaging = self._dual_averaging(sampler, self.step_size)
        elif reinit:
            self.step_size = find_initial_step_size(state, p, self.metric, self.step_size)
            self.dual_averaging = self._dual_averaging(sampler, self.step_size)
        elif adapt_step and self.dual_averaging is None:
            self.dual_averaging = self._dual_averaging(sampler, self.step_size)
        step_size = self.step_size
        new_state, info = sampler.transition(state, p, step_size, self.metric)
        if adapt_step:
            self.step_size = self.dual_averaging.update(info.accept_prob)
        elif self.dual_averaging is not None:
            self.step_size = self.dual_averaging.final_step_size
            self.dual_averaging = None
        shape = p.chain_shape
        samples = p.constrain(new_state.position)
        info = HMCInfo(
            samples=samples,
            acceptance_rate=info.accept_prob.reshape(shape),
            updated_step_size=self.step_size.reshape(shape),
            init_momentum=None if info.init_momentum is None else p.space.split(
                info.init_momentum.reshape(shape + (p.dim,))),
            orig_hamiltonian=info.orig_energy.reshape(shape),
            hamiltonian=info.energy.reshape(shape),
            orig_log_prob=self._model_log_prob(x, state.log_prob).reshape(shape),
            log_prob=self._model_log_prob(new_state.position, new_state.log_prob).reshape(shape),
            diverging=info.diverging.reshape(shape),
            n_steps=info.n_steps.reshape(shape),
            tree_depth=info.tree_depth.reshape(shape))
        return samples, info

    @staticmethod
    def _dual_averaging(sampler, step_size):
        return DualAveraging(step_size, sampler.target_acceptance_rate, sampler.gamma,
                             sampler.t0, sampler.kappa)
