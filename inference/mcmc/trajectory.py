"""Building NUTS trajectories leaf by leaf: the tree so far and the subtree being added.

A transition's tree is doubled `depth = 0, 1, ...` times, each doubling adding a
subtree of 2^depth leapfrog steps at one end (random direction). `Trajectory` is the
tree built so far (its two ends, momentum sum and total log weight), `Subtree` the one
being built (its last leaf, momentum sum, log weight, proposal, and its first leaf's
momentum and velocity for Stan's extra U-turn checks). Every function here is pure and
batched over chains, with a per-chain mask saying which chains it applies to.
"""
from typing import NamedTuple

import torch

from inference.mcmc.integrators import IntegratorState
from inference.mcmc.proposals import Proposal, sample_proposal
from inference.mcmc.state import select
from inference.mcmc.termination import turning

__all__ = ["Trajectory", "Subtree", "start_subtree", "add_leaf", "merge", "turned_when_merged"]


class Trajectory(NamedTuple):
    """The tree built so far, per chain: its left and right ends, momentum sum [n, D] and
    log of its total weight [n]."""

    left: IntegratorState
    right: IntegratorState
    momentum_sum: torch.Tensor
    log_weight: torch.Tensor


class Subtree(NamedTuple):
    """The subtree being built, per chain: its last leaf (`end`, where the next leapfrog
    step starts), momentum sum, log weight, proposal, and its first leaf's momentum and
    velocity."""

    end: IntegratorState
    momentum_sum: torch.Tensor
    log_weight: torch.Tensor
    proposal: Proposal
    first_momentum: torch.Tensor
    first_velocity: torch.Tensor


def start_subtree(subtree, trajectory, forward, where):
    """Where `where` [n]: an empty subtree growing from the tree's end in the direction
    `forward` [n] (bool)."""
    end = select(where & forward, trajectory.right,
                 select(where & ~forward, trajectory.left, subtree.end))
    return subtree._replace(
        end=end, momentum_sum=torch.where(where[:, None], 0., subtree.momentum_sum),
        log_weight=torch.where(where, -torch.inf, subtree.log_weight))


def add_leaf(subtree, end, log_prob, leaf_weight, first, uniform):
    """The subtree with one more leaf, its new `end`.

    end: IntegratorState of the new leaf; log_prob [n]: its log density; leaf_weight
    [n]: its log weight (-inf for a divergent leaf, which ends the transition);
    first [n]: whether it is the subtree's first leaf; uniform [n]: for the multinomial
    sampling of the subtree's proposal."""
    log_weight = torch.logaddexp(subtree.log_weight, leaf_weight)
    candidate = Proposal(end.position, end.grad, log_prob, leaf_weight)
    return Subtree(end, subtree.momentum_sum + end.momentum, log_weight,
                   sample_proposal(subtree.proposal, candidate, leaf_weight - log_weight,
                                   uniform),
                   torch.where(first[:, None], end.momentum, subtree.first_momentum),
                   torch.where(first[:, None], end.velocity, subtree.first_velocity))


def turned_when_merged(trajectory, subtree, forward):
    """Stan's U-turn checks of a completed subtree joining the tree, [n]: the merged tree,
    the old tree plus the subtree's first leaf, and the subtree plus the tree's end it
    grew from."""
    column = forward[:, None]
    left, right = trajectory.left, trajectory.right
    far = torch.where(column, left.velocity, right.velocity)
    start_velocity = torch.where(column, right.velocity, left.velocity)
    start_momentum = torch.where(column, right.momentum, left.momentum)
    velocity = subtree.end.velocity
    return turning(
        torch.stack((far, far, start_velocity)),
        torch.stack((velocity, subtree.first_velocity, velocity)),
        torch.stack((trajectory.momentum_sum + subtree.momentum_sum,
                     trajectory.momentum_sum + subtree.first_momentum,
                     subtree.momentum_sum + start_momentum))).any(0)


def merge(trajectory, subtree, forward, where):
    """Where `where` [n]: the tree with the completed subtree joined at its end `forward`."""
    return Trajectory(
        select(where & ~forward, subtree.end, trajectory.left),
        select(where & forward, subtree.end, trajectory.right),
        torch.where(where[:, None], trajectory.momentum_sum + subtree.momentum_sum,
                    trajectory.momentum_sum),
        torch.where(where, torch.logaddexp(trajectory.log_weight, subtree.log_weight),
                    trajectory.log_weight))
