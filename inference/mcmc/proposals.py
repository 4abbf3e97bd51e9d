"""NUTS's proposals: multinomial sampling of a trajectory's points by their weights.

Every leaf of a trajectory has weight exp(-H) (relative to the start: log weight
H0 - H). Within a subtree the proposal is sampled progressively (a new leaf replaces it
with probability w_leaf / W_subtree, so that it ends up drawn in proportion to the
weights); a completed subtree replaces the tree's proposal with probability
min(1, W_subtree / W_tree) (Stan's biased progressive sampling, which favours the far
end of the trajectory).
"""
from typing import NamedTuple

import torch

from inference.mcmc.state import select

__all__ = ["Proposal", "sample_proposal", "leaf_log_weight"]


class Proposal(NamedTuple):
    """The point a trajectory proposes, per chain: position, grad [n, D], log_prob [n],
    and the log weight [n] of the leaf it came from."""

    position: torch.Tensor
    grad: torch.Tensor
    log_prob: torch.Tensor
    log_weight: torch.Tensor


def sample_proposal(proposal, candidate, log_ratio, uniform, where=None):
    """`candidate` where log(uniform) < log_ratio (and `where`), else `proposal`.

    log_ratio [n]: log w_leaf - log W_subtree (progressive) or log W_subtree - log W_tree
    (biased); uniform [n]: uniform(0, 1) draws."""
    take = uniform.log() < log_ratio
    if where is not None:
        take = take & where
    return select(take, candidate, proposal)


def leaf_log_weight(log_prob, orig_energy, momentum, velocity, max_energy_error):
    """A leaf's log weight H0 - H = log_prob + H0 - p.v / 2, and whether it counts: (weight,
    finite), [...] each (any leading axes). A leaf whose energy error exceeds
    `max_energy_error`, or is not finite, gets weight -inf (finite False: a divergence)."""
    weight = torch.add(log_prob + orig_energy, torch.linalg.vecdot(momentum, velocity),
                       alpha=-0.5)
    finite = weight >= -max_energy_error  # False for NaN too
    return torch.where(finite, weight, -torch.inf), finite
