"""ZhuSuan's sampler objects, `HMC` and `NUTS`: configuration plus `.sample(meta_bn,
observed, latent)`, around the pure kernels of `inference.mcmc.hmc` and `.nuts`.

`HMC` and `NUTS` subclass `HamiltonianSampler` and supply `transition(state,
potential, step_size, metric)` (their kernel) and `iterate` (many transitions).
`inference.mcmc.run` reads the configuration and drives them with Stan's windowed
warm-up; `.sample()` is ZhuSuan's step-at-a-time interface: it keeps the chains' step
sizes, mass matrices and adaptation state between calls (keyed on the latents' names
and shapes) and adapts online while `adapt_step_size` / `adapt_mass` are true. With
`jit_compile`, the kernels' steps are compiled from outside (`inference.mcmc.jit`).
"""
import functools
import warnings
from dataclasses import dataclass

import torch

from inference.mcmc import jit
from inference.mcmc.adaptation import (DualAveraging, ExponentialMovingVariance,
                                       dual_averaging, find_initial_step_size, make_metric)
from inference.mcmc.batching import run_transitions
from inference.mcmc.compile import compiler_available
from inference.mcmc.doubling import nuts_transition, run_doublings
from inference.mcmc.hmc import hmc_kernel, hmc_step
from inference.mcmc.metric import identity_metric
from inference.mcmc.nuts import eager_leaf_step, nuts_kernel
from inference.mcmc.potential import Potential
from inference.mcmc.shared_compile import NotPrecompiledWarning
from inference.mcmc.state import TransitionInfo, init_state
from inference.mcmc.streams import new_streams
from inference.write_back import hand_out, write_back

__all__ = ["HamiltonianSampler", "HMCInfo", "HMC", "NUTS"]

# Per-transition statistics `iterate` returns (those of `TransitionInfo`, and the step size).
_RECORDED = ("accept_prob", "step_size", "diverging", "tree_depth", "n_steps", "energy")
_SAID_NO_COMPILER = []  # the no-compiler warning is given once per process
_SAID_NOT_BUILT = set()  # (dtype, metric type) whose tree step was said to be missing
# The most memory an uncompiled NUTS doubling may keep its leaves in (six [2^d, n, D]
# tensors), counted at the deepest tree: beyond it the leaf step runs instead.
DOUBLING_MEMORY = 2 ** 29


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

    # Whether `iterate` takes `target` and `at_target` (`run_transitions`), so that each chain
    # ends its warm-up windows on its own instead of waiting for the others there.
    windows_per_chain = False

    def __init__(self, step_size, adapt_step_size, target_acceptance_rate, gamma, t0, kappa,
                 adapt_mass, mass_collect_iters, mass_decay, max_energy_error, jit_compile=None):
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
        if jit_compile is not None and not isinstance(jit_compile, bool):
            raise ValueError(f"`jit_compile` must be None (compile in `inference.mcmc.run` "
                             f"where a C++ compiler is found), True or False, got "
                             f"{jit_compile!r}")
        self.jit_compile = jit_compile
        self._in_run = False  # whether `iterate` runs (jit_compile=None compiles there)
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
        self._in_run = True
        try:
            return self._iterate(state, potential, step_size, metric, n_iterations,
                                 dual_averaging, progress, out)
        finally:
            self._in_run = False

    def _iterate(self, state, potential, step_size, metric, n_iterations, dual_averaging,
                 progress, out):
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

    def _how(self, potential):
        """How this call runs the kernel's steps: 'compile' (`jit_compile=True`; by default
        (None) within `iterate`, a run of many transitions (`inference.mcmc.run`), of a
        `Potential` on the CPU where a C++ compiler is found), 'record' (the same by
        default where no compiler is found, said once per process: the model's gradient
        is recorded once and replayed, see `jit.recorded_function`) or 'eager'."""
        if self.jit_compile is not None:
            return "compile" if self.jit_compile else "eager"
        if not (self._in_run and isinstance(potential, Potential)
                and potential.device.type == "cpu"):
            return "eager"
        if compiler_available():
            return "compile"
        if not _SAID_NO_COMPILER:
            _SAID_NO_COMPILER.append(True)
            warnings.warn("HMC/NUTS: no C++ compiler found (g++, c++, clang++ or $CXX), so "
                          "their steps run uncompiled, several times slower than compiled; "
                          "install one (e.g. `apt install g++`) for the fast path, or pass "
                          "jit_compile=False to run eagerly without this warning",
                          RuntimeWarning, stacklevel=2)
        return "record"

    def _step_function(self, kind, potential, metric, build, rows=False):
        """The kernel's inner step, `build(value_and_grad)`, on `potential`.

        Eager unless `_how` says 'compile' or 'record': then traced at its first call and
        compiled (`inference.mcmc.compile.CompiledStep`, with `rows` where the step works
        chain by chain) or replayed as recorded, once per potential and metric type, and
        kept while the kernel is used with that potential.
        """
        how = self._how(potential)
        if how == "eager":
            return build(potential)
        if self._steps_for != (potential, potential.version):
            self._steps, self._steps_for = {}, (potential, potential.version)
        key = (kind, type(metric), how)
        if key not in self._steps:
            name = f"{type(self).__name__} {kind}"
            self._steps[key] = (
                jit.compiled_function(build(potential.traceable), build(potential), name, rows)
                if how == "compile" else
                jit.recorded_function(build(potential.traceable), build(potential), name))
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


class HMC(HamiltonianSampler):
    """Hamiltonian Monte Carlo with ZhuSuan's `zs.HMC` signature, chains batched.

        hmc = inference.HMC(step_size=0.1, n_leapfrogs=10, adapt_step_size=True)
        x = torch.zeros(n_chains, n_x)
        for it in range(n_iters):
            hmc.adapt_step_size = it < n_warmup      # ZhuSuan feeds this placeholder
            _, info = hmc.sample(model, observed, {"x": x})   # x holds the new sample
            kept.append(info.samples["x"])

    `.sample` returns (samples, info) and writes the samples into the
    caller's latent tensors, as ZhuSuan assigns its Variables
    (`inference.write_back`; `latent, info = hmc.sample(model, observed,
    latent)` works too). info: ZhuSuan's `HMCInfo` fields (samples,
    acceptance_rate, updated_step_size, orig_hamiltonian, hamiltonian,
    orig_log_prob, log_prob) and more (see `inference.mcmc.sampler.HMCInfo`).
    Every chain (the leading axes of the latents, i.e. the shape of the log
    joint) has its own step size, momentum, acceptance and adaptation.

    ZhuSuan's arguments, in its order:

    step_size: initial step size (the start of the heuristic search when adapting).
    n_leapfrogs: leapfrog steps per transition.
    adapt_step_size: None/False (off) or True: dual averaging (Hoffman & Gelman
        2014) towards `target_acceptance_rate` with `gamma`, `t0`, `kappa`.
    adapt_mass: None/False, True or 'diag', or 'dense'. In `.sample()`, the mass
        follows ZhuSuan: an exponential moving variance (decay `mass_decay`) used
        from iteration `mass_collect_iters` on; `inference.mcmc.run` uses Stan's
        windowed warm-up instead.

    Keyword only (this library's):
    trajectory_length: instead of `n_leapfrogs`, each chain takes
        ceil(trajectory_length / its step size) steps (at most `max_leapfrogs`).
    jitter: each transition multiplies every chain's step size by a uniform
        factor in [1 - jitter, 1 + jitter] (the number of steps is set from the
        unjittered one), so the trajectory length varies: with a fixed length,
        HMC can return to where it started on near-Gaussian targets (Neal 2011,
        sec. 5.4.5). 0 (the default) keeps ZhuSuan's behaviour.
    max_energy_error: energy error above which a transition counts as divergent.
    jit_compile: compile the leapfrog step (model gradient included) into one
        native function at the first transition (`inference.mcmc.jit`). None (the
        default): compile within `inference.mcmc.run` where a C++ compiler is
        found (else run eagerly, saying so once), and run `.sample()` eagerly;
        True / False: always / never.
    """

    def __init__(self, step_size=1., n_leapfrogs=10, adapt_step_size=None,
                 target_acceptance_rate=0.8, gamma=0.05, t0=100, kappa=0.75, adapt_mass=None,
                 mass_collect_iters=10, mass_decay=0.99, *, trajectory_length=None, jitter=0.,
                 max_leapfrogs=1000, max_energy_error=1000., jit_compile=None):
        super().__init__(step_size=step_size, adapt_step_size=adapt_step_size,
                         target_acceptance_rate=target_acceptance_rate, gamma=gamma, t0=t0,
                         kappa=kappa, adapt_mass=adapt_mass,
                         mass_collect_iters=mass_collect_iters, mass_decay=mass_decay,
                         max_energy_error=max_energy_error, jit_compile=jit_compile)
        if trajectory_length is None:
            if not isinstance(n_leapfrogs, int) or isinstance(n_leapfrogs, bool) \
                    or n_leapfrogs < 1:
                raise ValueError(f"HMC: `n_leapfrogs` must be a positive int, got "
                                 f"{n_leapfrogs!r}")
        elif not trajectory_length > 0:
            raise ValueError(f"HMC: `trajectory_length` must be positive, got "
                             f"{trajectory_length!r}")
        self.n_leapfrogs = n_leapfrogs
        if not 0. <= jitter < 1.:
            raise ValueError(f"HMC: `jitter` must be in [0, 1), got {jitter!r}")
        self.trajectory_length = trajectory_length
        self.jitter = jitter
        self.max_leapfrogs = int(max_leapfrogs)

    def transition(self, state, potential, step_size, metric):
        if self.trajectory_length is None:
            n_leapfrogs = self.n_leapfrogs
        else:
            n_leapfrogs = torch.ceil(self.trajectory_length / step_size).long()
            n_leapfrogs = n_leapfrogs.clamp(1, self.max_leapfrogs)
        if self.jitter:
            step_size = step_size * (1. + self.jitter * (2. * torch.rand_like(step_size) - 1.))
        velocity_from = type(metric).velocity_from
        step_fn = self._step_function(
            "leapfrog", potential, metric,
            lambda value_and_grad: functools.partial(hmc_step, value_and_grad, velocity_from))
        return hmc_kernel(state, potential, step_size, metric, n_leapfrogs,
                          self.max_energy_error, step_fn)

    def __repr__(self):
        steps = (f"n_leapfrogs={self.n_leapfrogs}" if self.trajectory_length is None
                 else f"trajectory_length={self.trajectory_length}")
        jit = ", jit_compile=True" if self.jit_compile else ""
        return (f"HMC({steps}, adapt_step_size={self.adapt_step_size}, "
                f"adapt_mass={self.adapt_mass!r}{jit})")


class NUTS(HamiltonianSampler):
    """The No-U-Turn sampler with the same interface as `inference.HMC`.

    step_size: initial step size; None finds one with Hoffman's heuristic.
    max_tree_depth: at most 2^max_tree_depth - 1 leapfrog steps per transition.
    adapt_step_size, target_acceptance_rate, gamma, t0, kappa: dual averaging
        (Stan's defaults: gamma=0.05, t0=10, kappa=0.75).
    adapt_mass: 'diag' (default), 'dense', or None.
    jit_compile: compile the step into native code at the first transition
        (`inference.mcmc.jit`): the model's gradient for this model (seconds),
        the tree bookkeeping and step size adaptation once per machine and
        metric type, for every model, chain count, dimension and max_tree_depth
        (`inference.mcmc.shared_compile`: tens of seconds the first time, then
        loaded from disk). Several times faster than eager on small and medium
        models. Falls back to eager, with a warning, where the model cannot be
        traced. None (the default): compile within `inference.mcmc.run` where
        a C++ compiler is found (else run eagerly, saying so once), and run
        `.sample()` eagerly; True / False: always / never.
    """

    windows_per_chain = True

    def __init__(self, step_size=None, max_tree_depth=10, adapt_step_size=True,
                 target_acceptance_rate=0.8, gamma=0.05, t0=10, kappa=0.75, adapt_mass="diag",
                 mass_collect_iters=10, mass_decay=0.99, max_energy_error=1000.,
                 jit_compile=None):
        super().__init__(step_size=step_size, adapt_step_size=adapt_step_size,
                         target_acceptance_rate=target_acceptance_rate, gamma=gamma, t0=t0,
                         kappa=kappa, adapt_mass=adapt_mass,
                         mass_collect_iters=mass_collect_iters, mass_decay=mass_decay,
                         max_energy_error=max_energy_error, jit_compile=jit_compile)
        if not isinstance(max_tree_depth, int) or isinstance(max_tree_depth, bool) \
                or max_tree_depth < 1:
            raise ValueError(f"NUTS: `max_tree_depth` must be a positive int, got "
                             f"{max_tree_depth!r}")
        self.max_tree_depth = max_tree_depth
        self._built = {}  # the compiled tree steps this kernel loaded or built
        self._shared = {}  # metric type -> the last SharedCompiledStep used

    def _leaf_step(self, potential, metric, adapting=False):
        """The `LeafStep` on `potential` (with dual averaging when `adapting`). With
        `jit_compile`, the model's gradient is compiled for this model and the tree step's
        model-independent part once per machine, for every model (`inference.mcmc.jit`)."""
        metric_type = type(metric)
        adaptation = self._adaptation()
        gradient = self._gradient(potential, metric)
        if self._how(potential) != "compile":
            return eager_leaf_step(gradient, metric_type, self.max_energy_error, adaptation)
        step, shared = jit.nuts_leaf_step(gradient, metric_type, self.max_energy_error,
                                          adaptation, metric.inverse_mass.dtype,
                                          metric.inverse_mass.device, self._built)
        self._shared[metric_type] = shared
        return step

    def _adaptation(self):
        """The step size adaptation a transition ends with (dual averaging)."""
        return dual_averaging(self.target_acceptance_rate, self.gamma, self.t0, self.kappa)

    def _gradient(self, potential, metric, masked=True):
        """The model's log density and gradient, compiled, recorded or eager (`_how`);
        unless `masked`, with non-finite values left as they are (a `Potential`'s
        `mask_nonfinite`: `run_doublings` stops at them itself, and a recorded gradient
        without the masks makes about a third fewer operations)."""
        if masked or not isinstance(potential, Potential):
            kind, build = "gradient", lambda value_and_grad: lambda x: value_and_grad(x)
        else:
            kind, build = "gradient, unmasked", lambda value_and_grad: \
                lambda x: value_and_grad(x, mask_nonfinite=False)
        return self._step_function(kind, potential, metric, build,
                                   rows=getattr(potential, "chains_are_rows", False))

    def _by_doublings(self, potential, state, metric):
        """Whether the transitions run a doubling at a time (`inference.mcmc.doubling`), which
        they do where a doubling of the deepest tree keeps its leaves within
        `DOUBLING_MEMORY` bytes (else the leaf step: a large model's gradient outweighs its
        operations anyway) and either the steps are not compiled, or, by default
        (`jit_compile=None`), NUTS's compiled tree step is not built on this machine: the
        run then compiles the model's gradient alone, rather than pause 20-30 s to build
        the tree step, and says once how to build it (`_tree_step_built`)."""
        position = state.position
        leaves = 2 ** (self.max_tree_depth - 1) * position.numel() * position.element_size()
        if 6 * leaves > DOUBLING_MEMORY:
            return False
        return self._how(potential) != "compile" or (
            self.jit_compile is None and not self._tree_step_built(position.dtype, type(metric)))

    def _tree_step_built(self, dtype, metric_type):
        """Whether NUTS's compiled tree step for `dtype` and `metric_type` is built (loaded,
        or on disk); where not, says so once per process, naming the command that builds it
        (`python -m inference.mcmc.precompile`, the install's build step)."""
        if jit.nuts_tree_step_on_disk(metric_type, self._adaptation(), dtype, self._built):
            return True
        if (dtype, metric_type) not in _SAID_NOT_BUILT:
            _SAID_NOT_BUILT.add((dtype, metric_type))
            warnings.warn(
                f"NUTS: its compiled tree step ({str(dtype).removeprefix('torch.')}, "
                f"{'dense' if metric_type.dense else 'diagonal'} metric) is not built on this "
                f"machine, so this run compiles the model's gradient alone and runs the tree "
                f"uncompiled, a doubling at a time (slower on small models). "
                f"`{jit.precompile_command(dtype, metric_type)}` builds it once (20-30 s; the "
                f"install's build step), or pass jit_compile=True to build it in a run",
                NotPrecompiledWarning, stacklevel=4)
        return False

    def transition(self, state, potential, step_size, metric):
        if not self._by_doublings(potential, state, metric):
            return nuts_kernel(state, potential, step_size, metric, self.max_tree_depth,
                               self.max_energy_error, self._leaf_step(potential, metric))
        # uncompiled: the same transition, a doubling at a time (`inference.mcmc.doubling`)
        n = state.position.shape[0]
        if state.rng is None:
            state = state._replace(rng=new_streams(n, state.position.device))
        new_state, stats = nuts_transition(
            self._gradient(potential, metric, masked=False), type(metric), state,
            step_size.to(state.position.dtype), metric.inverse_mass, metric.momentum_factor,
            torch.ones(n, dtype=torch.bool, device=state.position.device), self.max_tree_depth,
            self.max_energy_error)
        return new_state, TransitionInfo(
            accept_prob=stats.accept_prob,
            is_accepted=(new_state.position != state.position).any(-1),
            diverging=stats.diverging, energy=stats.energy, orig_energy=stats.orig_energy,
            n_steps=stats.n_steps, tree_depth=stats.tree_depth)

    def iterate(self, state, potential, step_size, metric, n_iterations, dual_averaging=None,
                progress=None, out=None, target=None, at_target=None):
        """`n_iterations` transitions of every chain: compiled, each chain at its own pace
        (`inference.mcmc.batching`), else all in lock-step, a doubling at a time
        (`inference.mcmc.doubling`: the same draws, with far fewer operations); with
        `dual_averaging` (a `DualAveraging`, updated in place), each chain adapts its step
        size after each of its transitions. Returns
        (state, positions [k, n, D], stats, step_size); with `out`, positions and stats go
        there as they are made (see `HamiltonianSampler.iterate`) and come back None.
        target, at_target: where each chain pauses on its way, and the hook that restarts
        it there (see `run_transitions`)."""
        if state.rng is None:
            state = state._replace(rng=new_streams(state.position.shape[0],
                                                   state.position.device))
        self._in_run, adapting = True, dual_averaging is not None
        store = None if out is None else \
            lambda index, which, points, stats: out(index, which, points, _stats_dict(stats))
        settings = dict(adaptation=dual_averaging.state if adapting else None,
                        adapting=adapting, progress=progress, out=store, target=target,
                        at_target=at_target)
        try:
            doublings = self._by_doublings(potential, state, metric)
            if doublings:
                gradient = self._gradient(potential, metric, masked=False)
            else:
                step = self._leaf_step(potential, metric)
        finally:
            self._in_run = False
        if not doublings:
            state, adapted, positions, stats = run_transitions(
                step, state, step_size, metric, self.max_tree_depth, n_iterations, **settings)
        else:
            state, adapted, positions, stats = run_doublings(
                gradient, type(metric), state, step_size, metric, self.max_tree_depth,
                n_iterations, self._adaptation(), self.max_energy_error, **settings)
        if adapting:
            dual_averaging.state = adapted
        return state, positions, None if out else _stats_dict(stats), adapted.step_size

    def __repr__(self):
        return (f"NUTS(max_tree_depth={self.max_tree_depth}, adapt_step_size="
                f"{self.adapt_step_size}, adapt_mass={self.adapt_mass!r}"
                f"{', jit_compile=True' if self.jit_compile else ''})")


def _stats_dict(stats):
    """The runner's statistics from a `LeafStats` of [...] tensors: name -> [...]."""
    return {"accept_prob": stats.accept_prob, "step_size": stats.step_size,
            "diverging": stats.diverging, "tree_depth": stats.tree_depth,
            "n_steps": stats.n_steps, "energy": stats.energy,
            "orig_energy": stats.orig_energy}
