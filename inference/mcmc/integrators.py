"""The leapfrog (velocity Verlet) integrator, batched over chains.

Every chain has its own step size (negative to integrate backward in time, as
NUTS does), given as a column [n_chains, 1] so that it broadcasts over the
coordinates; one call of `potential` gives the new log density and gradient of
all chains at once.
"""
import torch

__all__ = ["leapfrog"]


def leapfrog(potential, metric, position, momentum, grad, step_size, half_step=None):
    """One leapfrog step of all chains.

    position, momentum, grad: [n_chains, D]; step_size: [n_chains, 1] (signed);
    half_step: step_size / 2, when the caller has it already.
    Returns (position, momentum, log_prob, grad) after the step.
    """
    if half_step is None:
        half_step = 0.5 * step_size
    momentum = torch.addcmul(momentum, half_step, grad)
    position = torch.addcmul(position, step_size, metric.velocity(momentum))
    log_prob, grad = potential(position)
    momentum = torch.addcmul(momentum, half_step, grad)
    return position, momentum, log_prob, grad
