"""What the kernels pass around: the chains' state and what one transition did.

Kernels are functions `kernel(state, potential, step_size, metric, ...) ->
(state, info)`; step size and metric come from the caller (adaptation), so a
kernel holds nothing between calls. States and infos are named tuples of
tensors (chains first); `select` picks per chain between two of them.
"""
from typing import NamedTuple

import torch

__all__ = ["HMCState", "TransitionInfo", "init_state", "select"]


class HMCState(NamedTuple):
    """Current point of every chain, in the flat unconstrained space.

    position: [n_chains, D]; log_prob: [n_chains] (log density incl. log|det J|);
    grad: [n_chains, D] (gradient of log_prob). All three have the latents'
    dtype (a float32 model with float64 data still samples in float32).
    rng: NUTS's per-chain random streams, int64 [n_chains, 3]
    (`inference.mcmc.streams.new_streams`), carried so that a run split into
    several calls draws what one call would; None until NUTS first moves.
    """

    position: torch.Tensor
    log_prob: torch.Tensor
    grad: torch.Tensor
    rng: torch.Tensor = None


class TransitionInfo(NamedTuple):
    """Per-chain statistics of one transition, all [n_chains].

    accept_prob: Metropolis acceptance probability (HMC) or Stan's mean
        acceptance statistic over the trajectory (NUTS), used by adaptation.
    is_accepted: whether the chain moved to a new point.
    diverging: the trajectory hit an energy error above the limit or a
        non-finite energy (such moves are rejected, never propagated).
    energy: the Hamiltonian at the new point (for E-BFMI).
    orig_energy: the Hamiltonian at the start of the transition.
    n_steps: leapfrog steps taken; tree_depth: NUTS doublings (0 for HMC).
    init_momentum: the momentum the transition started from [n_chains, D] (HMC;
        None for NUTS, which draws it inside its tree step).
    """

    accept_prob: torch.Tensor
    is_accepted: torch.Tensor
    diverging: torch.Tensor
    energy: torch.Tensor
    orig_energy: torch.Tensor
    n_steps: torch.Tensor
    tree_depth: torch.Tensor
    init_momentum: torch.Tensor = None


def init_state(potential, position):
    """The state at `position` [n_chains, D], in the position's dtype."""
    log_prob, grad = potential(position)
    return HMCState(position.detach(), log_prob.to(position.dtype), grad)


def select(condition, new, old):
    """Per chain, `new` where `condition` [n] else `old`: tensors (chains first, the
    condition broadcast over their trailing axes) or named tuples of them, field by field."""
    columns = [condition]
    return _select(columns, new, old)


def _select(columns, new, old):
    if isinstance(old, tuple):
        return type(old)(*(_select(columns, a, b) for a, b in zip(new, old)))
    while len(columns) < old.dim():
        columns.append(columns[-1][..., None])
    return torch.where(columns[max(old.dim(), 1) - 1], new, old)
