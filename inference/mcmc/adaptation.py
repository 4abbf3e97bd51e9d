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
from inference.mcmc.state import select
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

    A chain's slow window depends on its own draws only, so chains need not meet at
    window ends: a driver that runs each chain to its own next boundary
    (`next_boundary`) hands on its draws as they come (`record`) and renews the metric
    and step size of the chains that reached a window end (`end_window`); at the end of
    warm-up, a chain's averaged step size is `dual_averaging_final` of its row.
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
        self.points = None  # [longest window, n, D]: each chain's draws in its slow window

    def start(self, state, potential, metric, step_size):
        """Begin from `metric` and `step_size` [n_chains] (e.g. `find_initial_step_size`'s)."""
        self.potential = potential
        self.metric = metric
        self.step_size = step_size
        if self.adapt_step_size:
            self.dual_averaging = DualAveraging(step_size, **self.dual_averaging_args)
        longest = max((end - start for start, end in self.windows), default=0)
        self.points = state.position.new_zeros((longest,) + tuple(state.position.shape))
        rows = torch.full((max(self.n_warmup, 1),), -1, dtype=torch.long)
        for start, end in self.windows:
            rows[start:end] = torch.arange(end - start)
        self._row = rows.to(state.position.device)  # iteration -> row in `points` (-1: none)
        return self.step_size, self.metric

    def state_dict(self):
        """Everything needed to resume the warm-up (tensors and numbers)."""
        return {"step_size": self.step_size, "inverse_mass": self.metric.inverse_mass,
                "window_points": self.points,
                "dual_averaging": (self.dual_averaging.state_dict() if self.adapt_step_size
                                   else None)}

    def load_state_dict(self, state):
        self.step_size = state["step_size"]
        self.metric = make_metric(state["inverse_mass"])
        self.points = state["window_points"]
        if self.adapt_step_size:
            self.dual_averaging.load_state_dict(state["dual_averaging"])
        return self.step_size, self.metric

    def boundaries(self):
        """Iterations after which the chains must meet (a new metric for all): window ends
        and the end of warm-up. Between them the kernel adapts the step sizes itself."""
        return sorted({end for _, end in self.windows} | {self.n_warmup})

    def next_boundary(self, iteration):
        """The first boundary after `iteration` transitions (`n_warmup` at the latest)."""
        return min((b for b in self.boundaries() if b > iteration), default=self.n_warmup)

    def is_window_end(self, iteration):
        return any(end == iteration for _, end in self.windows)

    def record(self, iteration, chain, points):
        """Keep the draws points [m, D] that chains [m] made at iterations [m] (counted from
        0) where these lie in a slow window."""
        if not self.windows:
            return
        row = self._row[iteration.clamp(max=len(self._row) - 1)]
        inside = (row >= 0) & (iteration < self.n_warmup)
        self.points[row[inside], chain[inside]] = points[inside]

    def update(self, start, positions, state):
        """Adapt after warm-up iterations start, start + 1, ... (no boundary inside).

        positions: [k, n_chains, D], the chains' points after each of the k
        iterations; state: the last ones. The kernel has updated the step sizes
        (`self.dual_averaging`) on the way. Returns (step_size, metric).
        """
        k, n, dim = positions.shape
        end = start + k
        for _, window_end in self.windows:
            if start < window_end < end:
                raise ValueError(f"warm-up segment {start}..{end} crosses the end of an "
                                 f"adaptation window ({window_end})")
        iterations = torch.arange(start, end, device=positions.device)
        self.record(iterations.repeat_interleave(n),
                    torch.arange(n, device=positions.device).repeat(k),
                    positions.reshape(k * n, dim))
        return self.reached(end, state)

    def reached(self, end, state, end_window=True):
        """Every chain has made `end` warm-up iterations (their draws recorded, the step
        sizes in `self.dual_averaging` adapted on the way), at the points `state`: end the
        slow window that ends there, if any (unless `end_window` is False: the caller ends
        it). Returns (step_size, metric)."""
        if self.adapt_step_size:
            self.step_size = self.dual_averaging.step_size
        if end_window and self.is_window_end(end):
            every = torch.ones(len(state.position), dtype=torch.bool,
                               device=state.position.device)
            steps = self.dual_averaging.state if self.adapt_step_size else None
            self.metric, steps = self.end_window(end, every, state, self.metric, steps)
            if self.adapt_step_size:
                self.dual_averaging.state = steps
                self.step_size = steps.step_size
        if end == self.n_warmup and self.adapt_step_size:
            self.step_size = self.dual_averaging.final_step_size
        return self.step_size, self.metric

    def end_window(self, end, chains, state, metric, steps=None, potential=None):
        """The slow window that ends after `end` iterations, for the chains [n] (bool) that
        made them: their metric from the window's draws and, where the step size adapts,
        a new step size search and their dual averaging restarted.

        state: the chains' points (HMCState [n, D], every chain: the search runs on all
        and keeps these chains' results, each from its own noise); metric: the current
        one; steps: the chains' `DualAveragingState` [n] (None: the step size does not
        adapt); potential: x -> (log_prob, grad) for the search (default: the one `start`
        was given; a kernel's compiled gradient is faster). Returns (metric, steps), the
        other chains' rows unchanged.
        """
        start = next(s for s, e in self.windows if e == end)
        which = chains.nonzero()[:, 0]
        means, m2s = [], []
        for chain in which.tolist():  # one at a time: the same sums whichever chains end here
            points = self.points[:end - start, chain]  # [k, D]
            mean = points.mean(0)
            centred = points - mean
            means.append(mean)
            m2s.append(centred.T @ centred if self.adapt_mass == "dense"
                       else centred.square().sum(0))
        inverse_mass = metric.inverse_mass.clone()
        inverse_mass[which] = welford_covariance(
            WelfordState(end - start, torch.stack(means), torch.stack(m2s)))
        metric = make_metric(inverse_mass)
        if steps is None:
            return metric, None
        found = find_initial_step_size(state, potential or self.potential, metric, steps.step_size,
                                       noise=_window_noise(state, end - 1))
        # Too few iterations left for the average to move far from where it starts (t0
        # of them, about): start at the found step itself rather than exploring from ten
        # times it.
        left = self.n_warmup - end
        explore = 10. if left >= self.dual_averaging_args["t0"] else 1.
        return metric, select(chains, dual_averaging_init(found, explore), steps)


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
