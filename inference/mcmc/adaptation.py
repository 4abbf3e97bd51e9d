"""Warm-up adaptation of step size and mass matrix, separate from the kernels; per chain.

- `find_initial_step_size`: Hoffman & Gelman's (2014, Alg. 4) heuristic:
  double or halve the step until one leapfrog step's acceptance crosses 1/2.
- `DualAveraging`: Hoffman & Gelman's (2014, Alg. 5) step size adaptation
  towards a target acceptance rate (parameters gamma, t0, kappa as in ZhuSuan
  and Stan).
- `WelfordCovariance`: streaming (co)variance of the positions, regularized as
  Stan does (shrunk with weight 5 / (n + 5); see `covariance`).
- `ExponentialMovingVariance`: ZhuSuan's moving (co)variance for `.sample()`.
- `window_schedule`, `WindowedAdaptation`: Stan's warm-up: a fast initial
  buffer (75 iterations), slow windows of doubling size (25, 50, ...) at the
  end of which the metric is set to the windows' regularized covariance and the
  step size is searched again, and a fast final buffer (50 iterations).
"""
import math

import torch

from inference.mcmc.integrators import leapfrog
from inference.mcmc.metric import DenseMetric, DiagonalMetric

__all__ = ["find_initial_step_size", "dual_averaging_update", "DualAveraging", "WelfordCovariance",
           "ExponentialMovingVariance", "window_schedule", "WindowedAdaptation", "make_metric"]


def make_metric(covariance):
    """Metric with inverse mass = `covariance` ([n, D] diagonal or [n, D, D] dense)."""
    return DenseMetric(covariance) if covariance.dim() == 3 else DiagonalMetric(covariance)


def find_initial_step_size(state, potential, metric, step_size, max_doublings=60):
    """Per-chain step size where one leapfrog step's acceptance is about 1/2.

    step_size: [n_chains] starting values. With a fixed momentum draw, a chain
    whose acceptance exceeds 1/2 doubles its step until it falls below, the
    others halve it until it rises above (Hoffman & Gelman 2014, Alg. 4).
    """
    momentum = metric.sample_momentum()
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


def dual_averaging_update(mu, count, error_avg, log_step_avg, accept_prob, target, gamma, t0,
                          kappa):
    """One step of dual averaging per chain (pure: compiled NUTS steps run it too).

    mu, count, error_avg, log_step_avg, accept_prob: [n_chains] (count as a
    float, each chain's number of updates so far). Returns the new (count,
    error_avg, log_step_avg, step_size).
    """
    accept_prob = torch.nan_to_num(accept_prob, nan=0.).clamp(0., 1.)
    count = count + 1.
    eta = 1. / (count + t0)
    error_avg = (1. - eta) * error_avg + eta * (target - accept_prob)
    log_step = mu - count.sqrt() / gamma * error_avg
    weight = count.pow(-kappa)
    log_step_avg = weight * log_step + (1. - weight) * log_step_avg
    return count, error_avg, log_step_avg, log_step.exp()


class DualAveraging:
    """Per-chain dual averaging of the log step size (Hoffman & Gelman 2014, Alg. 5).

    After `restart(step_size)`, each `update(accept_prob)` returns the next step
    size [n_chains]; `final_step_size` is the averaged one used after warm-up.
    Each chain counts its own updates (`count`, [n_chains]): NUTS chains run
    their transitions unsynchronized (`inference.mcmc.nuts`).
    """

    def __init__(self, step_size, target_acceptance_rate=0.8, gamma=0.05, t0=10, kappa=0.75):
        self.target = target_acceptance_rate
        self.gamma, self.t0, self.kappa = gamma, t0, kappa
        self.restart(step_size)

    def restart(self, step_size, explore=10.):
        """Start again from `step_size`; the iterates are pulled towards `explore`
        times it (Stan's 10: try larger steps first)."""
        self.mu = torch.log(explore * step_size)
        self.count = torch.zeros_like(step_size)
        self.error_avg = torch.zeros_like(step_size)
        self.log_step_avg = torch.zeros_like(step_size)
        self.step_size = step_size

    @property
    def settings(self):
        """(target, gamma, t0, kappa) for `dual_averaging_update`."""
        return self.target, self.gamma, self.t0, self.kappa

    def update(self, accept_prob):
        self.count, self.error_avg, self.log_step_avg, self.step_size = dual_averaging_update(
            self.mu, self.count, self.error_avg, self.log_step_avg, accept_prob, *self.settings)
        return self.step_size

    @property
    def final_step_size(self):
        return torch.where(self.count > 0, self.log_step_avg.exp(), self.step_size)

    def state_dict(self):
        return {"mu": self.mu, "count": self.count, "error_avg": self.error_avg,
                "log_step_avg": self.log_step_avg, "step_size": self.step_size}

    def load_state_dict(self, state):
        self.mu, self.count, self.error_avg = state["mu"], state["count"], state["error_avg"]
        self.log_step_avg, self.step_size = state["log_step_avg"], state["step_size"]


class WelfordCovariance:
    """Streaming per-chain variance [n, D] (or covariance [n, D, D] if `dense`)."""

    def __init__(self, dense=False):
        self.dense = dense
        self.reset()

    def reset(self):
        self.count = 0
        self.mean = None
        self.m2 = None

    def state_dict(self):
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state):
        self.count, self.mean, self.m2 = state["count"], state["mean"], state["m2"]

    def update(self, x):
        """Add one draw per chain, x: [n, D]."""
        self.count += 1
        if self.mean is None:
            self.mean = torch.zeros_like(x)
            self.m2 = x.new_zeros(x.shape + x.shape[-1:]) if self.dense else torch.zeros_like(x)
        delta = x - self.mean
        self.mean = self.mean + delta / self.count
        if self.dense:
            self.m2 = self.m2 + delta[:, :, None] * (x - self.mean)[:, None, :]
        else:
            self.m2 = self.m2 + delta * (x - self.mean)
        return self

    def covariance(self, regularize=True):
        """Sample (co)variance of each chain, regularized unless `regularize=False`.

        As Stan: the estimate S from n draws becomes n/(n+5) S + 5/(n+5) 1e-3 I,
        a shrinkage small enough to keep the small eigenvalues of a strongly
        correlated posterior (shrinking towards diag(S) instead added 1% of the
        marginal variances to them: on posteriordb's diamonds, an 8x smaller
        step size and 8x longer trajectories). A dense S from no more draws than
        dimensions is singular, with no information about the directions the
        draws did not span: such a window gives the diagonal of S (regularized
        the same way) instead, as a diagonal window would.
        """
        if self.count < 2:
            raise ValueError("WelfordCovariance: need at least 2 draws")
        n = self.count
        cov = self.m2 / (n - 1)
        if not regularize:
            return cov
        weight = 5. / (n + 5.)
        if self.dense:
            if n <= cov.shape[-1]:
                cov = torch.diag_embed(cov.diagonal(dim1=-2, dim2=-1))
            eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
            return (1. - weight) * cov + weight * 1e-3 * eye
        return (1. - weight) * cov + weight * 1e-3


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
            step = find_initial_step_size(state, self.potential, self.metric, self.step_size)
            # Too few iterations left for the average to move far from where it
            # starts (t0 of them, about): start at the found step itself rather
            # than exploring from ten times it.
            left = self.n_warmup - (iteration + 1)
            explore = 10. if left >= self.dual_averaging.t0 else 1.
            self.dual_averaging.restart(step, explore)
            self.step_size = step
