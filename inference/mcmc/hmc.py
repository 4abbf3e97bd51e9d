"""Hamiltonian Monte Carlo's kernel: a fixed number of leapfrog steps (Neal 2011).

`hmc_kernel` is the transition (state in, state out), `hmc_step` its pure leapfrog
step, which a caller may hand in compiled (`inference.mcmc.jit`); `inference.HMC` is
ZhuSuan's sampler object around them (`inference.mcmc.sampler`).
"""
import functools
from typing import NamedTuple

import torch

from inference.mcmc.integrators import kick, kick_drift
from inference.mcmc.state import HMCState, TransitionInfo, select

__all__ = ["LeapfrogState", "hmc_step", "hmc_kernel"]


class LeapfrogState(NamedTuple):
    """Every chain's point along its HMC trajectory: position, momentum, grad [n, D],
    log_prob [n], and whether the trajectory diverged [n] (bool)."""

    position: torch.Tensor
    momentum: torch.Tensor
    grad: torch.Tensor
    log_prob: torch.Tensor
    diverging: torch.Tensor


def hmc_step(value_and_grad, velocity_from, position, momentum, grad, log_prob, diverging, step,
             inverse_mass, moving):
    """One leapfrog step of every chain: a pure function of tensors (it can be compiled).

    position .. diverging: the fields of a `LeapfrogState`, returned updated as a plain
    tuple (a compiled function returns tensors, not named tuples);
    step [n, 1]; inverse_mass: the metric's; moving [n] bool: chains still integrating
    (a chain with fewer leapfrog steps than the others stops early). A chain whose new
    point has a non-finite density is marked diverging and stays where it was, as do
    chains that diverged before.
    """
    new_position, new_momentum = kick_drift(position, momentum, grad, step, velocity_from,
                                            inverse_mass)
    new_log_prob, new_grad = value_and_grad(new_position)
    new_momentum = kick(new_momentum, new_grad, step)
    failed = moving & ~torch.isfinite(new_log_prob)
    moved = select(moving & ~diverging & ~failed,
                   LeapfrogState(new_position, new_momentum, new_grad, new_log_prob, diverging),
                   LeapfrogState(position, momentum, grad, log_prob, diverging))
    return tuple(moved._replace(diverging=diverging | failed))


def hmc_kernel(state, potential, step_size, metric, n_leapfrogs, max_energy_error=1000.,
               step_fn=None):
    """One HMC transition of every chain (lock-step, per-chain step sizes).

    step_size: [n_chains]. n_leapfrogs: an int, or a long tensor [n_chains]
    (chains with fewer steps stop early and wait for the others). A chain whose
    trajectory reaches a non-finite density, or whose final energy error
    exceeds `max_energy_error`, is marked diverging and stays where it was.
    step_fn: `hmc_step` with (value_and_grad, velocity_from) bound, e.g.
    compiled (see `HMC`); by default the eager one on `potential`.
    Returns (state, TransitionInfo).
    """
    if step_fn is None:
        step_fn = functools.partial(hmc_step, potential, type(metric).velocity_from)
    n_chains = state.position.shape[0]
    momentum = init_momentum = metric.sample_momentum()
    orig_energy = -state.log_prob + metric.kinetic_energy(momentum)
    per_chain = isinstance(n_leapfrogs, torch.Tensor)
    n_max = int(n_leapfrogs.max()) if per_chain else int(n_leapfrogs)
    step_column = step_size[:, None]
    moving = torch.ones(n_chains, dtype=torch.bool, device=state.position.device)
    point = LeapfrogState(state.position, momentum, state.grad, state.log_prob, ~moving)
    for i in range(n_max):
        if per_chain:
            moving = i < n_leapfrogs
        point = LeapfrogState(*step_fn(*point, step_column, metric.inverse_mass, moving))
    position, momentum, grad, log_prob, diverging = point
    energy = -log_prob + metric.kinetic_energy(momentum)
    log_accept = orig_energy - energy
    diverging = diverging | ~(log_accept >= -max_energy_error)
    accept_prob = torch.where(diverging, torch.zeros_like(log_accept),
                              log_accept.clamp(max=0.).exp())
    accepted = torch.rand_like(accept_prob) < accept_prob
    accepted_column = accepted[:, None]
    new_state = HMCState(torch.where(accepted_column, position, state.position),
                         torch.where(accepted, log_prob, state.log_prob),
                         torch.where(accepted_column, grad, state.grad))
    steps = n_leapfrogs if per_chain else torch.full_like(state.log_prob, n_max,
                                                          dtype=torch.long)
    info = TransitionInfo(accept_prob=accept_prob, is_accepted=accepted, diverging=diverging,
                          energy=torch.where(accepted, energy, orig_energy),
                          orig_energy=orig_energy, n_steps=steps,
                          tree_depth=torch.zeros_like(steps), init_momentum=init_momentum)
    return new_state, info
