"""Warm-up adaptation of step size and mass matrix, separate from the kernels; per chain.

- `find_initial_step_size`: Hoffman & Gelman's (2014, Alg. 4) heuristic:
  double or halve the step until one leapfrog step's acceptance crosses 1/2.
- Dual averaging, Hoffman & Gelman's (2014, Alg. 5) step size adaptation
  towards a target acceptance rate (parameters gamma, t0, kappa as in ZhuSuan
  and Stan): pure (`dual_averaging_init`, `dual_averaging_update`) on a
  `DualAveragingState`, which NUTS runs inside its leaf step (`dual_averaging`),
  and `DualAveraging`, the same with its state kept.
- Welford's streaming (co)variance of the positions, regularized as Stan does
  (shrunk with weight 5 / (n + 5)): pure (`welford_init`, `welford_update`,
  `welford_covariance`) on a `WelfordState`, and `WelfordCovariance`, the same
  with its state kept.
- `ExponentialMovingVariance`: ZhuSuan's moving (co)variance for `.sample()`.
- `window_schedule`, `WindowedAdaptation`: Stan's warm-up: a fast initial
  buffer (75 iterations), slow windows of doubling size (25, 50, ...) at the
  end of which the metric is set to the windows' regularized covariance and the
  step size is searched again, and a fast final buffer (50 iterations).
"""
import math
from typing import NamedTuple

import torch

from inference.mcmc.integrators import leapfrog
from inference.mcmc.metric import DenseMetric, DiagonalMetric
from inference.mcmc.nuts import Adaptation
from inference.mcmc.streams import normals

__all__ = ["find_initial_step_size", "DualAveragingState", "dual_averaging_init",
           "dual_averaging_update", "dual_averaging_final", "dual_averaging", "DualAveraging",
           "WelfordState", "welford_init", "welford_update", "welford_covariance",
           "WelfordCovariance", "ExponentialMovingVariance", "window_schedule",
           "WindowedAdaptation", "make_metric"]


def make_metric(covariance):
    """Metric with inverse mass = `covariance` ([n, D] diagonal or [n, D, D] dense)."""
    return DenseMetric(covariance) if covariance.dim() == 3 else DiagonalMetric(covariance)


def find_initial_step_size(state, potential, metric, step_size, max_doublings=60, *,
                           noise=None):
    """Per-chain step size where one leapfrog step's acceptance is about 1/2.

    step_size: [n_chains] starting values. With a fixed momentum draw, a chain
    whose acceptance exceeds 1/2 doubles its step until it falls below, the
    others halve it until it rises above (Hoffman & Gelman 2014, Alg. 4).
    noise: the standard normal [n_chains, D] behind that momentum (default: drawn
    from torch's generator); chains whose noise is their own give step sizes
    that do not depend on the other chains.
    """
    momentum = (metric.sample_momentum() if noise is None
                else metric.momentum_from(noise, metric.momentum_factor))
    orig_energy = metric.kinetic_energy(momentum) - state.log_prob

    def log_accept(step):
        _, new_momentum, log_prob, _ = leapfrog(potential, metric, state.position, momentum,
                                                state.grad, step[:, None])
        value = orig_energy - (metric.kinetic_energy(new_momentum) - log_prob)
        return torch.where(torch.isnan(value), -torch.inf, value)

    step_size = step_size.clone()
    current = log_accept(step_size)
    direction = torch.where(current > math.log(0.5), 1., -1.).to(step_size.dtype)
    searching = torch.ones_like(step_size, dtype=torch.bool)
    for _ in range(max_doublings):
        searching = searching & (direction * current > -direction * math.log(2.))
        if not bool(searching.any()):
            break
        step_size = torch.where(searching, step_size * 2. ** direction, step_size)
        current = torch.where(searching, log_accept(step_size), current)
    return step_size


class DualAveragingState(NamedTuple):
    """Per-chain dual averaging state, [n_chains] each: mu (the log step size the iterates
    are pulled towards), count (updates so far, as a float), error_avg, log_step_avg, and
    the current step_size."""

    mu: torch.Tensor
    count: torch.Tensor
    error_avg: torch.Tensor
    log_step_avg: torch.Tensor
    step_size: torch.Tensor


def dual_averaging_init(step_size, explore=10.):
    """Start from `step_size` [n]; the iterates are pulled towards `explore` times it (Stan's
    10: try larger steps first)."""
    zeros = torch.zeros_like(step_size)
    return DualAveragingState(torch.log(explore * step_size), zeros, zeros, zeros, step_size)


def dual_averaging_update(state, accept_prob, target=0.8, gamma=0.05, t0=10, kappa=0.75):
    """One step of dual averaging per chain (pure): the state after a transition with
    acceptance statistic `accept_prob` [n] (Hoffman & Gelman 2014, Alg. 5)."""
    accept_prob = torch.nan_to_num(accept_prob, nan=0.).clamp(0., 1.)
    count = state.count + 1.
    eta = 1. / (count + t0)
    error_avg = (1. - eta) * state.error_avg + eta * (target - accept_prob)
    log_step = state.mu - count.sqrt() / gamma * error_avg
    weight = count.pow(-kappa)
    log_step_avg = weight * log_step + (1. - weight) * state.log_step_avg
    return DualAveragingState(state.mu, count, error_avg, log_step_avg, log_step.exp())


def dual_averaging_final(state):
    """The averaged step size used after warm-up [n] (the current one where no update ran)."""
    return torch.where(state.count > 0, state.log_step_avg.exp(), state.step_size)


def dual_averaging(target=0.8, gamma=0.05, t0=10, kappa=0.75):
    """Dual averaging as the (init, update, settings) a NUTS leaf step runs after each
    transition of a chain (`inference.mcmc.nuts.Adaptation`)."""
    return Adaptation(dual_averaging_init, dual_averaging_update, (target, gamma, t0, kappa))


class DualAveraging:
    """Dual averaging with its state kept: `update(accept_prob)` returns the next step size
    [n_chains] (`dual_averaging_update`); `final_step_size` is the averaged one used after
    warm-up. Each chain counts its own updates: NUTS chains run their transitions
    unsynchronized (`inference.mcmc.nuts`)."""

    def __init__(self, step_size, target_acceptance_rate=0.8, gamma=0.05, t0=10, kappa=0.75):
        self.target = target_acceptance_rate
        self.gamma, self.t0, self.kappa = gamma, t0, kappa
        self.restart(step_size)

    def restart(self, step_size, explore=10.):
        """Start again from `step_size` (see `dual_averaging_init`)."""
        self.state = dual_averaging_init(step_size, explore)

    @property
    def settings(self):
        """(target, gamma, t0, kappa) for `dual_averaging_update`."""
        return self.target, self.gamma, self.t0, self.kappa

    def update(self, accept_prob):
        self.state = dual_averaging_update(self.state, accept_prob, *self.settings)
        return self.state.step_size

    def __getattr__(self, name):  # the state's fields: mu, count, error_avg, ...
        if name != "state" and name in DualAveragingState._fields:
            return getattr(self.state, name)
        raise AttributeError(name)

    @property
    def final_step_size(self):
        return dual_averaging_final(self.state)

    def state_dict(self):
        return self.state._asdict()

    def load_state_dict(self, state):
        self.state = DualAveragingState(**state)


class WelfordState(NamedTuple):
    """Streaming (co)variance per chain: count (an int), mean [n, D] and the sum of squared
    deviations m2 ([n, D], or [n, D, D] when dense); mean and m2 are None before a draw."""

    count: int
    mean: torch.Tensor
    m2: torch.Tensor


def welford_init():
    return WelfordState(0, None, None)


def welford_update(state, x, dense=False):
    """The state with one more draw per chain, x: [n, D] (Welford's algorithm)."""
    count = state.count + 1
    mean = torch.zeros_like(x) if state.mean is None else state.mean
    m2 = state.m2
    if m2 is None:
        m2 = x.new_zeros(x.shape + x.shape[-1:]) if dense else torch.zeros_like(x)
    delta = x - mean
    mean = mean + delta / count
    if dense:
        m2 = m2 + delta[:, :, None] * (x - mean)[:, None, :]
    else:
        m2 = m2 + delta * (x - mean)
    return WelfordState(count, mean, m2)


def welford_covariance(state, regularize=True):
    """Sample (co)variance of each chain, regularized unless `regularize=False`.

    As Stan: the estimate S from n draws becomes n/(n+5) S + 5/(n+5) 1e-3 I,
    a shrinkage small enough to keep the small eigenvalues of a strongly
    correlated posterior (shrinking towards diag(S) instead added 1% of the
    marginal variances to them: on posteriordb's diamonds, an 8x smaller
    step size and 8x longer trajectories).

    A dense S from no more draws than dimensions (Stan's first 25-draw window) is
    singular: the n - 1 centred draws span only part of the space. There Stan's rule
    gives the other directions a variance of about 2e-4, whatever the posterior's
    scale, and S's diagonal drops the correlations. Here those directions get the
    smallest variance the draws did see (`_fill_unspanned`), then the same shrinkage.
    Measured: on posteriordb's diamonds (26 dimensions) S's diagonal gave the next
    window 11 times longer trajectories; on a 50-dimensional Gaussian with variances
    0.1 to 10, Stan's rule left static HMC's draws off by 9 standard errors.
    """
    if state.count < 2:
        raise ValueError("WelfordCovariance: need at least 2 draws")
    n = state.count
    cov = state.m2 / (n - 1)
    if not regularize:
        return cov
    weight = 5. / (n + 5.)
    if cov.dim() == 3:
        dim = cov.shape[-1]
        if n <= dim:
            cov = _fill_unspanned(cov)
        eye = torch.eye(dim, dtype=cov.dtype, device=cov.device)
        return (1. - weight) * cov + weight * 1e-3 * eye
    return (1. - weight) * cov + weight * 1e-3


def _fill_unspanned(cov):
    """A singular covariance [n, D, D] with its null directions given the smallest variance
    it does have: each chain's eigenvalues are raised to its smallest one above round-off
    (sqrt(eps) times the largest; 0 for a chain whose draws never moved)."""
    values, vectors = torch.linalg.eigh(cov)
    seen = values > values[..., -1:] * torch.finfo(cov.dtype).eps ** 0.5
    floor = torch.where(seen, values, torch.inf).amin(-1, keepdim=True)
    values = torch.maximum(values, torch.where(seen.any(-1, keepdim=True), floor, 0.))
    return (vectors * values[..., None, :]) @ vectors.mT


class WelfordCovariance:
    """Streaming per-chain variance [n, D] (or covariance [n, D, D] if `dense`): the
    `welford_*` functions with their state kept."""

    def __init__(self, dense=False):
        self.dense = dense
        self.reset()

    def reset(self):
        self.state = welford_init()

    @property
    def count(self):
        return self.state.count

    def state_dict(self):
        return self.state._asdict()

    def load_state_dict(self, state):
        self.state = WelfordState(**state)

    def update(self, x):
        """Add one draw per chain, x: [n, D]."""
        self.state = welford_update(self.state, x, self.dense)
        return self

    def covariance(self, regularize=True):
        """See `welford_covariance`."""
        return welford_covariance(self.state, regularize)


class ExponentialMovingVariance:
    """ZhuSuan's exponentially weighted (co)variance per chain, bias-corrected."""

    def __init__(self, decay=0.99, dense=False):
        self.decay = decay
        self.dense = dense
        self.count = 0
        self.mean = None
        self.var = None

    def update(self, x):
        self.count += 1
        weight = (1. - self.decay) / (1. - self.decay ** self.count)
        if self.mean is None:
            self.mean = torch.zeros_like(x)
            self.var = x.new_zeros(x.shape + x.shape[-1:]) if self.dense else torch.zeros_like(x)
        increment = weight * (x - self.mean)
        self.mean = self.mean + increment
        if self.dense:
            self.var = (1. - weight) * self.var + increment[:, :, None] * (x - self.mean)[:, None]
        else:
            self.var = (1. - weight) * self.var + increment * (x - self.mean)
        return self

    def covariance(self):
        """The moving (co)variance, floored so that it stays a valid inverse mass."""
        if self.dense:
            eye = torch.eye(self.var.shape[-1], dtype=self.var.dtype, device=self.var.device)
            return self.var + 1e-6 * eye
        return self.var.clamp(min=1e-6)


def window_schedule(n_warmup, init_buffer=75, term_buffer=50, base_window=25):
    """Stan's slow adaptation windows for `n_warmup` iterations: list of (start, end).

    Too short a warm-up for the defaults uses 15% / 75% / 10%; under 20
    iterations there is no mass adaptation.
    """
    if n_warmup < 20:
        return []
    if init_buffer + base_window + term_buffer > n_warmup:
        init_buffer = int(0.15 * n_warmup)
        term_buffer = int(0.1 * n_warmup)
        base_window = n_warmup - init_buffer - term_buffer
    windows = []
    start, size, last = init_buffer, base_window, n_warmup - term_buffer
    while start < last:
        end = start + size
        if end + 2 * size > last:  # the next window would not fit: stretch this one
            end = last
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


class WindowedAdaptation:
    """Stan-style warm-up over `n_warmup` iterations, every chain on its own.

        adapt = WindowedAdaptation(n_warmup, adapt_step_size=True, adapt_mass="diag")
        step_size = find_initial_step_size(state, potential, metric, step_size)
        step_size, metric = adapt.start(state, potential, metric, step_size)
        start = 0
        for end in adapt.boundaries():
            # end - start transitions, each followed by adapt.dual_averaging.update
            state, positions, ... = sampler.iterate(..., end - start, adapt.dual_averaging)
            step_size, metric = adapt.update(start, positions, state)
            start = end
        # after the last update: the averaged step size and the final metric
    """

    def __init__(self, n_warmup, adapt_step_size=True, adapt_mass="diag",
                 target_acceptance_rate=0.8, gamma=0.05, t0=10, kappa=0.75, init_buffer=75,
                 term_buffer=50, base_window=25):
        self.n_warmup = n_warmup
        self.adapt_step_size = bool(adapt_step_size)
        self.adapt_mass = adapt_mass
        self.dual_averaging_args = dict(target_acceptance_rate=target_acceptance_rate,
                                        gamma=gamma, t0=t0, kappa=kappa)
        self.windows = (window_schedule(n_warmup, init_buffer, term_buffer, base_window)
                        if adapt_mass else [])
        self.estimator = WelfordCovariance(dense=adapt_mass == "dense")

    def start(self, state, potential, metric, step_size):
        """Begin from `metric` and `step_size` [n_chains] (e.g. `find_initial_step_size`'s)."""
        self.potential = potential
        self.metric = metric
        self.step_size = step_size
        if self.adapt_step_size:
            self.dual_averaging = DualAveraging(step_size, **self.dual_averaging_args)
        return self.step_size, self.metric

    def state_dict(self):
        """Everything needed to resume the warm-up (tensors and numbers)."""
        return {"step_size": self.step_size, "inverse_mass": self.metric.inverse_mass,
                "estimator": self.estimator.state_dict(),
                "dual_averaging": (self.dual_averaging.state_dict() if self.adapt_step_size
                                   else None)}

    def load_state_dict(self, state):
        self.step_size = state["step_size"]
        self.metric = make_metric(state["inverse_mass"])
        self.estimator.load_state_dict(state["estimator"])
        if self.adapt_step_size:
            self.dual_averaging.load_state_dict(state["dual_averaging"])
        return self.step_size, self.metric

    def boundaries(self):
        """Iterations after which the chains must meet (a new metric for all): window ends
        and the end of warm-up. Between them the kernel adapts the step sizes itself."""
        return sorted({end for _, end in self.windows} | {self.n_warmup})

    def _window_at(self, iteration):
        for start, end in self.windows:
            if start <= iteration < end:
                return start, end
        return None

    def update(self, start, positions, state):
        """Adapt after warm-up iterations start, start + 1, ... (no boundary inside).

        positions: [k, n_chains, D], the chains' points after each of the k
        iterations; state: the last ones. The kernel has updated the step sizes
        (`self.dual_averaging`) on the way. Returns (step_size, metric).
        """
        if self.adapt_step_size:
            self.step_size = self.dual_averaging.step_size
        end = start + len(positions)
        for iteration, position in enumerate(positions, start):
            window = self._window_at(iteration)
            if window is None:
                continue
            self.estimator.update(position)
            if iteration + 1 == window[1]:
                if iteration + 1 != end:
                    raise ValueError(f"warm-up segment {start}..{end} crosses the end of an "
                                     f"adaptation window ({window[1]})")
                self._new_metric(state, iteration)
        if end == self.n_warmup and self.adapt_step_size:
            self.step_size = self.dual_averaging.final_step_size
        return self.step_size, self.metric

    def _new_metric(self, state, iteration):
        """End of a slow window: the metric from its draws, and a new step size search."""
        self.metric = make_metric(self.estimator.covariance())
        self.estimator.reset()
        if self.adapt_step_size:
            step = find_initial_step_size(state, self.potential, self.metric, self.step_size,
                                          noise=_window_noise(state, iteration))
            # Too few iterations left for the average to move far from where it
            # starts (t0 of them, about): start at the found step itself rather
            # than exploring from ten times it.
            left = self.n_warmup - (iteration + 1)
            explore = 10. if left >= self.dual_averaging.t0 else 1.
            self.dual_averaging.restart(step, explore)
            self.step_size = step


def _window_noise(state, iteration):
    """The momentum noise of the step size search that ends window `iteration`: from each
    chain's own stream where the chains have them (NUTS), at a transition index no
    transition uses (negative), so a chain's warm-up does not depend on the other chains
    or on how they are split between processes; else None (torch's generator)."""
    if state.rng is None:
        return None
    n, dim = state.position.shape
    index = torch.full((1, n), -(iteration + 1), dtype=torch.int64, device=state.rng.device)
    return normals(state.rng[:, 0], index, dim, state.position.dtype)[0]
