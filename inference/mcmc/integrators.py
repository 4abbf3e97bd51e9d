"""The leapfrog (velocity Verlet) integrator, batched over chains.

A leapfrog step of size h is a half kick p += h/2 grad, a drift x += h M^-1 p, the
model's gradient at the new x, and a second half kick. Every chain has its own step
size (negative to integrate backward in time, as NUTS does), a column [n_chains, 1]
that broadcasts over the coordinates; one gradient call serves all chains.

`kick_drift` and `kick` are the halves on either side of the gradient, so that a
kernel can hand the gradient to whoever evaluates it (compiled or not, batched with
other chains' bookkeeping); `leapfrog` is the whole step.
"""
from typing import NamedTuple

import torch

__all__ = ["IntegratorState", "kick_drift", "kick", "leapfrog"]


class IntegratorState(NamedTuple):
    """A point of a trajectory, per chain: position, momentum, grad [n, D] (grad of the log
    density at position) and velocity [n, D] (M^-1 momentum, kept for the U-turn checks)."""

    position: torch.Tensor
    momentum: torch.Tensor
    grad: torch.Tensor
    velocity: torch.Tensor


def kick_drift(position, momentum, grad, step_size, velocity_from, inverse_mass,
               half_step=None):
    """The first half of a leapfrog step: (new position, half-kicked momentum), [n, D] each.

    step_size: [n, 1] (signed); velocity_from: the metric's static M^-1 p function;
    half_step: 0.5 * step_size, where a loop of steps has it already."""
    half_step = 0.5 * step_size if half_step is None else half_step
    momentum = torch.addcmul(momentum, half_step, grad)
    return torch.addcmul(position, step_size, velocity_from(inverse_mass, momentum)), momentum


def kick(momentum, grad, step_size, half_step=None):
    """The second half of a leapfrog step: the momentum after the last half kick."""
    return torch.addcmul(momentum, 0.5 * step_size if half_step is None else half_step, grad)


def leapfrog(potential, metric, position, momentum, grad, step_size):
    """One leapfrog step of all chains.

    position, momentum, grad: [n_chains, D]; step_size: [n_chains, 1] (signed).
    Returns (position, momentum, log_prob, grad) after the step.
    """
    position, momentum = kick_drift(position, momentum, grad, step_size,
                                    type(metric).velocity_from, metric.inverse_mass)
    log_prob, grad = potential(position)
    return position, kick(momentum, grad, step_size), log_prob, grad
