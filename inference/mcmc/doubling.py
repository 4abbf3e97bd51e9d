"""NUTS transitions of every chain in lock-step, a whole doubling at a time: the path for
runs that are not compiled, where each tensor operation costs microseconds whatever its size.

The leaf step (`inference.mcmc.nuts`) moves each chain one leapfrog step along its own tree
with about 300 bookkeeping operations: compiled, they fuse into one kernel; uncompiled,
they cost over a millisecond a step, several times the gradient of a small model. Here a
doubling's 2^d leapfrog steps run back to back (a few operations each, besides the
gradient), and its bookkeeping runs once, vectorized over its leaves: their weights, the
U-turn checks of every aligned block (the same blocks as `termination`'s checkpoints), the
first leaf where the subtree stops, progressive sampling within it, then the biased
sampling, Stan's checks and the merge (`trajectory`, `proposals`).

Each chain draws the same random numbers from its own stream (`inference.mcmc.streams`,
indexed by its own leapfrog step and transition counts) as the leaf step, and makes the same
leapfrog steps: the draws are the leaf step's, up to the rounding of a few sums taken in
another order. The price: the chains wait for the deepest tree among them at each
transition (a chain whose tree is through stands still, step size 0), and the leaves a
subtree computes after a U-turn inside it are dropped.
"""
import functools
from typing import NamedTuple

import torch

from inference.mcmc.batching import Collected, RunningRowsGradient
from inference.mcmc.integrators import IntegratorState, kick, kick_drift
from inference.mcmc.nuts import LeafStats
from inference.mcmc.proposals import Proposal, leaf_log_weight, sample_proposal
from inference.mcmc.state import HMCState, select
from inference.mcmc.streams import normals, uniforms
from inference.mcmc.termination import turning
from inference.mcmc.trajectory import Subtree, Trajectory, merge, turned_when_merged

__all__ = ["ChainPoints", "nuts_transition", "run_doublings"]


class ChainPoints(NamedTuple):
    """What `run_doublings` hands its `at_target` hook: the chains' points ([n, D], [n],
    [n, D]) and their step size adaptation state (the fields of a `nuts.TreeState` that the
    hook reads)."""

    position: torch.Tensor
    log_prob: torch.Tensor
    grad: torch.Tensor
    adaptation: tuple


_AHEAD = 2 ** 6 - 1  # leaves of a transition whose uniforms are drawn at its start


def _leapfrogs(value_and_grad, velocity_from, inverse_mass, start, step_size, count):
    """`count` leapfrog steps from `start` (IntegratorState [n, D]) with signed step sizes
    [n, 1]: (IntegratorState of [count, n, D], log_prob [count, n], momentum sums after each
    leaf [count, n, D], added in leaf order as the leaf step adds them)."""
    position, momentum, grad = start.position, start.momentum, start.grad
    leaves, log_probs, sums = [], [], []
    running_sum, half_step = torch.zeros_like(momentum), 0.5 * step_size
    for _ in range(count):
        position, momentum = kick_drift(position, momentum, grad, step_size, velocity_from,
                                        inverse_mass, half_step)
        log_prob, grad = value_and_grad(position)
        momentum = kick(momentum, grad, step_size, half_step)
        velocity = velocity_from(inverse_mass, momentum)
        running_sum = running_sum + momentum
        leaves.append((position, momentum, grad, velocity))
        log_probs.append(log_prob.to(position.dtype))
        sums.append(running_sum)
    stacked = IntegratorState(*(torch.stack(field) for field in zip(*leaves)))
    return stacked, torch.stack(log_probs), torch.stack(sums)


@functools.lru_cache(maxsize=64)
def _blocks(count, device):
    """The aligned blocks of 2, 4, ..., count leaves of a subtree: (their first leaves,
    their last leaves), int64 [count - 1] each."""
    firsts, lasts, size = [], [], 2
    while size <= count:
        firsts += range(0, count, size)
        lasts += range(size - 1, count, size)
        size *= 2
    return (torch.tensor(firsts, dtype=torch.long, device=device),
            torch.tensor(lasts, dtype=torch.long, device=device))


def _turned_inside(leaves, sums):
    """[L, n] bool: whether an aligned block of 2, 4, ..., L leaves ending at each leaf
    turned (L = 2^d leaves; `termination.update_checkpoints` checks the same blocks as the
    leaves come). A block from leaf a to e has momentum sum sums[e] - (sums[a] - p[a])."""
    count = sums.shape[0]
    if count < 2:
        return torch.zeros(sums.shape[:2], dtype=torch.bool, device=sums.device)
    first, last = _blocks(count, sums.device)
    before = sums[first] - leaves.momentum[first]  # the checkpoints: the sum before a leaf
    turned = turning(leaves.velocity[first], leaves.velocity[last], sums[last] - before)
    return sums.new_zeros(sums.shape[:2]).index_add_(0, last, turned.to(sums.dtype)) > 0


def _first(flags, default):
    """The index of the first True along axis 0 of flags [L, n], `default` where none."""
    return torch.where(flags.any(0), flags.byte().argmax(0), default)


def _take(stacked, index, chains):
    """stacked [L, n, ...] at row index[c] for each chain c (chains: 0..n-1): [n, ...]."""
    return stacked[index, chains]


def nuts_transition(value_and_grad, metric_type, state, step_size, inverse_mass,
                    momentum_factor, running, max_tree_depth=10, max_energy_error=1000.):
    """One NUTS transition of the `running` chains [n] (bool; the others keep their point):
    (HMCState with the streams advanced, LeafStats [n] of the transition).

    state: HMCState [n, D] with its random streams (`rng`); step_size [n];
    inverse_mass, momentum_factor: the metric's (`metric_type`, e.g. `DiagonalMetric`);
    value_and_grad(position [n, D]) -> (log_prob [n], grad [n, D]). The stats' `iteration`
    counts the chain's transitions made (the streams' third column).
    """
    position, log_prob, grad, rng = state
    key, steps, made = rng.unbind(1)
    dtype, device = position.dtype, position.device
    velocity_from = metric_type.velocity_from
    noise = normals(key, made[None], position.shape[1], dtype)[0]
    momentum = metric_type.momentum_from(noise, momentum_factor)
    velocity = velocity_from(inverse_mass, momentum)
    orig_energy = 0.5 * torch.linalg.vecdot(momentum, velocity) - log_prob
    origin = IntegratorState(position, momentum, grad, velocity)
    zeros = torch.zeros_like(log_prob)
    trajectory = Trajectory(origin, origin, momentum, zeros)
    proposal = Proposal(position, grad, log_prob, zeros)
    no_steps, chains = torch.zeros_like(steps), torch.arange(len(steps), device=device)
    n_steps, tree_depth, sum_accept = no_steps, no_steps, zeros
    diverging, building = zeros > 0, running.clone()
    # the uniforms of the leaves of the first doublings, drawn at once
    ahead = uniforms(key, steps[None] + torch.arange(_AHEAD, device=device)[:, None], dtype)
    for depth in range(max_tree_depth):
        if not bool(building.any()):
            break
        if isinstance(value_and_grad, RunningRowsGradient):  # chains through stand still,
            value_and_grad.rows_for(building)  # and their leaves are dropped: not computed
        count = 2 ** depth
        if 2 * count - 1 <= _AHEAD:
            uniform = ahead[count - 1:2 * count - 1]  # [L, n, 3]
        else:
            leaf = count - 1 + torch.arange(count, device=device)  # in the transition
            uniform = uniforms(key, steps[None] + leaf[:, None], dtype)
        forward = uniform[0, :, 1] < 0.5
        # a chain whose tree is through stands still (step size 0)
        signed = (torch.where(forward, step_size, -step_size) * building)[:, None]
        start = select(forward, trajectory.right, trajectory.left)
        leaves, log_probs, sums = _leapfrogs(value_and_grad, velocity_from, inverse_mass,
                                             start, signed, count)

        # The leaves' weights exp(H0 - H), and where the subtree stops: a leaf whose energy
        # error is too large (or not finite: weight 0) or a block that turned.
        weight, finite = leaf_log_weight(log_probs, orig_energy, leaves.momentum,
                                         leaves.velocity, max_energy_error)
        stop = _first(~finite | _turned_inside(leaves, sums), count)  # [n], count: none
        stopped = building & (stop < count)
        made_here = torch.clamp(stop + 1, max=count) * building
        order = torch.arange(count, device=device)[:, None]
        accepts = weight.clamp(max=0.).exp() * (order < made_here)
        sum_accept = torch.cat((sum_accept[None], accepts)).cumsum(0)[-1]
        n_steps = n_steps + made_here
        diverging = diverging | (stopped & ~_take(finite, stop.clamp(max=count - 1), chains))

        # A completed subtree: its proposal (progressive sampling over its leaves), then
        # the tree's (biased), Stan's U-turn checks of the merged tree, and the merge.
        subtree_weight = torch.logcumsumexp(weight, 0)
        taken = uniform[:, :, 0].log() < weight - subtree_weight
        chosen = (order * taken).amax(0)
        subtree = Subtree(
            IntegratorState(*(field[-1] for field in leaves)), sums[-1], subtree_weight[-1],
            Proposal(*(_take(values, chosen, chains)
                       for values in (leaves.position, leaves.grad, log_probs, weight))),
            leaves.momentum[0], leaves.velocity[0])
        merging = building & ~stopped
        proposal = sample_proposal(proposal, subtree.proposal,
                                   subtree.log_weight - trajectory.log_weight, uniform[-1, :, 2],
                                   merging)
        turned = turned_when_merged(trajectory, subtree, forward)
        trajectory = merge(trajectory, subtree, forward, merging)
        tree_depth = torch.where(building, depth + 1, tree_depth)
        building = merging & ~turned & (depth < max_tree_depth - 1)

    new_state = HMCState(torch.where(running[:, None], proposal.position, position),
                         torch.where(running, proposal.log_prob, log_prob),
                         torch.where(running[:, None], proposal.grad, grad),
                         torch.stack((key, steps + n_steps, made + running.long()), 1))
    stats = LeafStats(made + running.long(), sum_accept / n_steps.clamp(min=1), step_size,
                      diverging, tree_depth, n_steps, orig_energy - proposal.log_weight,
                      orig_energy)
    return new_state, stats


def run_doublings(value_and_grad, metric_type, state, step_size, metric, max_tree_depth,
                  n_iterations, adaptation_kind, max_energy_error=1000., adaptation=None,
                  adapting=False, progress=None, out=None, target=None, at_target=None):
    """`n_iterations` transitions of every chain with `nuts_transition`, under the contract of
    `inference.mcmc.batching.run_transitions` (the same arguments, hook and return value),
    all chains at a time. adaptation_kind: the `nuts.Adaptation` whose `update` runs after
    each transition of the chains `adapting` (a bool, or [n] bools); its state starts from
    `adaptation` (default `adaptation_kind.init(step_size)`) and its `step_size` is the
    chains' step size from their next transition on. The hook gets a `ChainPoints`."""
    position, rng = state.position, state.rng
    n, dtype, device = position.shape[0], position.dtype, position.device
    if adaptation is None:
        adaptation = adaptation_kind.init(step_size.to(dtype))
    step_size = step_size.to(dtype)
    end = torch.full((n,), n_iterations, device=device)
    target = end if target is None else target.to(device=device, dtype=end.dtype)
    if at_target is None and bool((target < end).any()):
        raise ValueError("run_doublings: a `target` below `n_iterations` needs `at_target`, "
                         "the hook that restarts the chains paused there")
    adapting = torch.as_tensor(adapting, device=device).expand(n)
    inverse_mass, factor = metric.inverse_mass, metric.momentum_factor
    collected = None
    if out is None:
        out = collected = Collected(n_iterations, position)
    iterations = torch.zeros(n, dtype=torch.long, device=device)
    chains = torch.arange(n, device=device)
    gradient = RunningRowsGradient(value_and_grad, dtype)  # for the chains still building alone
    state, reported = HMCState(position, state.log_prob.to(dtype), state.grad, rng), 0
    while True:
        running = iterations < target
        if bool(running.any()):
            state, stats = nuts_transition(gradient, metric_type, state, step_size,
                                           inverse_mass, factor, running, max_tree_depth,
                                           max_energy_error)
            updated = adaptation_kind.update(adaptation, stats.accept_prob,
                                             *adaptation_kind.settings)
            adaptation = select(running & adapting, updated, adaptation)
            step_size = adaptation.step_size
            which = chains[running]
            out(iterations[which], which, state.position[which],
                type(stats)(*(s[which] for s in stats)))
            iterations = iterations + running.long()
        paused = (iterations >= target) & (target < end)
        if at_target is not None and bool(paused.any()):
            restart = at_target(ChainPoints(state.position, state.log_prob, state.grad,
                                            adaptation), iterations, target, value_and_grad)
            if not bool((restart.target[paused] > iterations[paused]).all()):
                raise RuntimeError("run_doublings: `at_target` left paused chains without a "
                                   "later target")
            adaptation = restart.adaptation
            step_size = torch.where(restart.chains, adaptation.step_size, step_size)
            inverse_mass, factor = restart.metric.inverse_mass, restart.metric.momentum_factor
            target = restart.target
            if restart.adapting is not None:
                adapting = restart.adapting
        through = int(iterations.min())
        if progress is not None and through > reported:
            progress(through - reported)
            reported = through
        if through >= n_iterations:
            break
    if collected is None:
        return state, adaptation, None, None
    return state, adaptation, collected.positions, collected.stats()
