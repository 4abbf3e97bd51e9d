"""The No-U-Turn sampler's kernel: multinomial NUTS (Hoffman & Gelman 2014; Betancourt
2017; Stan), one leapfrog step of every chain's own tree at a time.

Chains are a batch dimension, and every chain follows its own trajectory: a leaf step
moves every chain one leapfrog step (one gradient of the summed log densities) along its
own tree, and a chain whose transition has ended starts its next one at the next leaf
step (program-counter batching, as in Radul et al. 2020). No chain waits for the longest
tree of the batch: with trees built in lock-step, each transition costs the deepest
chain's steps, about twice the mean on the logistic regression of benchmarks/hmc_blr.py.

The leaf step is pure, fixed-shape and takes its random numbers as inputs (drawn from
each chain's own stream, `inference.mcmc.streams`), so that it can be compiled from
outside (`inference.mcmc.jit`) and gives the same draws compiled or not. It is cut at
the model's gradient into `leaf_begin` (start a transition or subtree where due, then
the first half of the leapfrog step) and `leaf_end` (the second half, the leaf's
multinomial weight, U-turn checks (`termination`), subtree merges (`trajectory`,
`proposals`), and the end of a transition: the chain moves to its proposal and its
adaptation, a pure function given by the caller, updates its step size).
`leaf_end_begin` is what runs between two gradients: the model-independent part of a
step. `nuts_kernel` is one transition of every chain (state in, state out);
`inference.mcmc.batching.run_transitions` runs many, each chain at its own pace.
Uncompiled, where its hundreds of small operations per leaf cost more than most
gradients, runs make the same transitions a doubling at a time instead
(`inference.mcmc.doubling`).
"""
from typing import NamedTuple

import torch

from inference.mcmc.integrators import IntegratorState, kick, kick_drift
from inference.mcmc.proposals import Proposal, leaf_log_weight, sample_proposal
from inference.mcmc.state import HMCState, TransitionInfo, select
from inference.mcmc.streams import new_streams, normals, uniforms
from inference.mcmc.termination import (Checkpoints, init_checkpoints, leaf_table,
                                        update_checkpoints)
from inference.mcmc.trajectory import (Subtree, Trajectory, add_leaf, merge, start_subtree,
                                       turned_when_merged)

__all__ = ["TreeState", "LeafStats", "LeafStep", "Draws", "init_tree", "tree_point", "leaf_begin",
           "leaf_end", "next_numbers", "leaf_end_begin", "Adaptation", "NO_ADAPTATION",
           "eager_leaf_step", "nuts_kernel"]


class TreeState(NamedTuple):
    """Every chain's NUTS state between two leaf steps (tensors, chains first).

    position, log_prob, grad: the chain's current point; step_size [n];
    trajectory, subtree, proposal: its transition in progress; checkpoints: the
    U-turn checkpoints of its subtree; leaf: the next leapfrog step's index in
    the tree (int64, see `leaf_table`); forward: the current subtree's direction;
    orig_energy: the Hamiltonian at the transition's start; diverging, n_steps,
    sum_accept (sum of min(1, exp(H0 - H)) over the leaves), tree_depth: of the
    transition so far; iteration: transitions ended (int64); adaptation: the
    caller's step size adaptation state (a named tuple of [n] tensors), updated by
    its `adapt` function after each transition.
    """

    position: torch.Tensor
    log_prob: torch.Tensor
    grad: torch.Tensor
    step_size: torch.Tensor
    trajectory: Trajectory
    subtree: Subtree
    proposal: Proposal
    checkpoints: Checkpoints
    leaf: torch.Tensor
    forward: torch.Tensor
    orig_energy: torch.Tensor
    diverging: torch.Tensor
    n_steps: torch.Tensor
    sum_accept: torch.Tensor
    tree_depth: torch.Tensor
    iteration: torch.Tensor
    adaptation: tuple


class LeafStats(NamedTuple):
    """What a leaf step reports, [n] each: the chain's transition count after it, and the
    statistics of its last transition (read where the count has just grown)."""

    iteration: torch.Tensor
    accept_prob: torch.Tensor
    step_size: torch.Tensor
    diverging: torch.Tensor
    tree_depth: torch.Tensor
    n_steps: torch.Tensor
    energy: torch.Tensor
    orig_energy: torch.Tensor


class LeafStep(NamedTuple):
    """The pieces a driver calls: `begin` once, then `value_and_grad` and `end_begin` in
    turn (eager functions, or compiled ones from `inference.mcmc.jit`), with the leaf
    step's settings bound; init_adaptation(step_size) -> the adaptation state its
    `end_begin` expects (see `Adaptation`). The tree and stats that `end_begin` returns
    may be kept in the step's own form (e.g. packed): a driver reads them only through
    iteration(stats) -> [n] (transitions ended), point(tree) -> [n, D] (the chains'
    points, holding nothing else of the tree: a driver keeps a block's),
    stack(stats) -> LeafStats of [m, n] and unpack(tree) -> the `TreeState` (which
    `begin` and `end_begin` also take)."""

    begin: object
    value_and_grad: object
    end_begin: object
    init_adaptation: object
    iteration: object = None
    point: object = None
    stack: object = None
    unpack: object = None


class Draws(NamedTuple):
    """Random numbers drawn ahead for the next leaf steps (`inference.mcmc.streams`):
    uniform_block [B, n, 3] holds each chain's uniforms of leapfrog step counts
    uniform_base [n] + 0..B-1; noise_block [W, n, D] its momentum noise, the one for the
    transition after its k-th in this run at row k + noise_offset [n]."""

    uniform_block: torch.Tensor
    uniform_base: torch.Tensor
    noise_block: torch.Tensor
    noise_offset: torch.Tensor


def _pick(block, index):
    """Row index[c] of block [R, n, ...] for each chain c: [n, ...]."""
    index = index.view((1, -1) + (1,) * (block.dim() - 2)).expand((1,) + block.shape[1:])
    return block.gather(0, index)[0]  # (take_along_dim reads fixed sizes: not for symbolic)


def init_tree(state, step_size, max_tree_depth, adaptation):
    """The tree state of chains at `state` (HMCState [n, D]) with step sizes [n], before
    their first leaf step; adaptation: the caller's adaptation state (see `TreeState`)."""
    position, grad = state.position, state.grad
    n = position.shape[0]
    zeros, vector = torch.zeros_like(state.log_prob), torch.zeros_like(position)
    point = IntegratorState(position, vector, grad, vector)
    proposal = Proposal(position, grad, state.log_prob, zeros)
    long, false = torch.zeros(n, dtype=torch.long, device=position.device), zeros > 0
    return TreeState(position, state.log_prob, grad, step_size.to(position.dtype),
                     Trajectory(point, point, vector, zeros),
                     Subtree(point, vector, zeros, proposal, vector, vector), proposal,
                     init_checkpoints(max_tree_depth, position), long, false, zeros, false, long,
                     zeros, long, long, adaptation)


def tree_point(tree, rng=None):
    """The chains' points as an HMCState (with random streams `rng`)."""
    return HMCState(tree.position, tree.log_prob, tree.grad, rng)


def _place(leaf, table):
    """Where each chain's next leaf sits in its tree (`leaf_table`): depth [n], first, last,
    deepest [n] (bool), and the checkpoint slots it writes and checks [n] (bit masks)."""
    depth, flags, write_bits, check_bits = table[leaf].split((1, 3, 1, 1), 1)
    first, last, deepest = (flags > 0).unbind(1)
    return depth[:, 0], first, last, deepest, write_bits[:, 0], check_bits[:, 0]


def _signed_step(tree):
    return torch.where(tree.forward, tree.step_size, -tree.step_size)[:, None]


def leaf_begin(metric_type, tree, inverse_mass, momentum_factor, noise, uniform, table, target):
    """The part of a leaf step before the model's gradient (pure).

    A chain at leaf 0 starts a transition at its point with momentum from
    `noise` [n, D] (standard normal); one at the first leaf of a subtree picks
    its direction (uniform [n, 3], column 1) and starts from that end. (A chain
    with its `target` [n] of transitions stays at leaf 0: it starts again at every step,
    and `leaf_end` keeps its point.) Returns (tree, position, momentum): the
    leapfrog step's new position and half-kicked momentum [n, D].
    """
    velocity_from = metric_type.velocity_from
    starting = tree.leaf == 0
    momentum = metric_type.momentum_from(noise, momentum_factor)
    velocity = velocity_from(inverse_mass, momentum)
    origin = IntegratorState(tree.position, momentum, tree.grad, velocity)
    zeros = torch.zeros_like(tree.log_prob)
    tree = tree._replace(
        trajectory=select(starting, Trajectory(origin, origin, momentum, zeros), tree.trajectory),
        proposal=select(starting, Proposal(tree.position, tree.grad, tree.log_prob, zeros),
                        tree.proposal),
        orig_energy=torch.where(starting,
                                0.5 * torch.linalg.vecdot(momentum, velocity) - tree.log_prob,
                                tree.orig_energy),
        diverging=tree.diverging & ~starting, n_steps=torch.where(starting, 0, tree.n_steps),
        sum_accept=torch.where(starting, 0., tree.sum_accept))

    first = table[tree.leaf, 1] > 0  # (`_place`'s second column)
    forward = torch.where(first, uniform[:, 1] < 0.5, tree.forward)
    tree = tree._replace(forward=forward,
                         subtree=start_subtree(tree.subtree, tree.trajectory, forward, first))
    end = tree.subtree.end
    position, momentum = kick_drift(end.position, end.momentum, end.grad, _signed_step(tree),
                                    velocity_from, inverse_mass)
    return tree, position, momentum


def leaf_end(metric_type, adapt, tree, position, momentum, log_prob, grad, inverse_mass, uniform,
             table, target, adapting, max_energy_error, adapt_settings):
    """The part of a leaf step after the model's gradient (pure).

    position, momentum: from `leaf_begin`; log_prob [n], grad [n, D]: the
    model's at position; uniform [n, 3]: columns 0 and 2 sample the subtree's
    and the tree's proposals. A chain ends its transition when its tree turns, a
    leaf diverges (energy error above `max_energy_error` (0-d), or not finite:
    that leaf gets weight 0, so that no chain moves to a non-finite point) or the
    tree reaches its maximum depth; it then moves to its proposal, counts an
    iteration and, where `adapting` (a bool, or [n] bools), updates its adaptation:
    adapt(adaptation, accept_prob [n], *adapt_settings) -> adaptation, whose
    `step_size` the chain uses from then on. Chains with their `target` [n] of transitions
    keep their point, step size and adaptation. Returns (tree, LeafStats).
    """
    running = tree.iteration < target
    depth, first, last, deepest, write_bits, check_bits = _place(tree.leaf, table)

    # The leaf: the second half kick, and its multinomial weight exp(H0 - H).
    momentum = kick(momentum, grad, _signed_step(tree))
    velocity = metric_type.velocity_from(inverse_mass, momentum)
    leaf_weight, finite = leaf_log_weight(log_prob, tree.orig_energy, momentum, velocity,
                                          max_energy_error)
    subtree = add_leaf(tree.subtree, IntegratorState(position, momentum, grad, velocity),
                       log_prob, leaf_weight, first, uniform[:, 0])
    checkpoints, turned_inside = update_checkpoints(
        tree.checkpoints, write_bits, check_bits, subtree.end.velocity, subtree.end.momentum,
        subtree.momentum_sum)
    stopped = ~finite | turned_inside

    # A completed subtree joins the tree: biased progressive sampling, then the U-turn
    # checks of the merged tree.
    merging = last & ~stopped
    trajectory, forward = tree.trajectory, tree.forward
    proposal = sample_proposal(tree.proposal, subtree.proposal,
                               subtree.log_weight - trajectory.log_weight, uniform[:, 2],
                               merging)
    turned = turned_when_merged(trajectory, subtree, forward)
    trajectory = merge(trajectory, subtree, forward, merging)
    n_steps = tree.n_steps + 1
    sum_accept = tree.sum_accept + leaf_weight.clamp(max=0.).exp()

    # A chain whose tree is complete moves to its proposal (and adapts its step size).
    through = running & (stopped | (last & (turned | deepest)))
    accept_prob = sum_accept / n_steps
    adaptation = tree.adaptation
    if adapting is not False:  # a Python False (eager, sampling) skips the update
        adaptation = select(through & adapting, adapt(adaptation, accept_prob, *adapt_settings),
                            adaptation)
    iteration = tree.iteration + through.long()
    diverging = tree.diverging | ~finite
    stats = LeafStats(iteration, accept_prob, tree.step_size, diverging, depth + 1, n_steps,
                      tree.orig_energy - proposal.log_weight, tree.orig_energy)
    tree = TreeState(
        torch.where(through[:, None], proposal.position, tree.position),
        torch.where(through, proposal.log_prob, tree.log_prob),
        torch.where(through[:, None], proposal.grad, tree.grad),
        adaptation.step_size, trajectory, subtree, proposal, checkpoints,
        torch.where(through | ~running, 0, tree.leaf + 1), forward, tree.orig_energy,
        diverging, n_steps, sum_accept, depth + 1, iteration, adaptation)
    return tree, stats


def next_numbers(iteration, target, steps, draws):
    """The next leaf step's random numbers (pure): (steps [n], the leapfrog steps each chain
    has made after this one; next_noise [n, D], the momentum noise of the transition after
    its `iteration`-th (used where this one ends); next_uniform [n, 3])."""
    steps = steps + (iteration < target).long()
    return (steps, _pick(draws.noise_block, iteration + draws.noise_offset),
            _pick(draws.uniform_block, steps - draws.uniform_base))


def leaf_end_begin(metric_type, adapt, tree, position, momentum, log_prob, grad, inverse_mass,
                   momentum_factor, uniform, steps, draws, table, target, adapting,
                   max_energy_error, adapt_settings):
    """`leaf_end` of this leaf step, then `leaf_begin` of the next (pure): what runs between
    two gradients. steps [n]: leapfrog steps each chain has made; draws: `Draws` holding
    the next step's random numbers (`next_numbers`). Returns (tree, position, momentum,
    LeafStats of this step, steps, the next step's uniform [n, 3])."""
    steps, next_noise, next_uniform = next_numbers(tree.iteration, target, steps, draws)
    tree, stats = leaf_end(metric_type, adapt, tree, position, momentum, log_prob, grad,
                           inverse_mass, uniform, table, target, adapting, max_energy_error,
                           adapt_settings)
    tree, position, momentum = leaf_begin(metric_type, tree, inverse_mass, momentum_factor,
                                          next_noise, next_uniform, table, target)
    return tree, position, momentum, stats, steps, next_uniform


class Adaptation(NamedTuple):
    """How chains adapt their step size after each transition, inside the leaf step:
    init(step_size [n]) -> state (a named tuple of [n] tensors with a `step_size` field);
    update(state, accept_prob [n], *settings) -> state; settings: a tuple of numbers (or
    0-d tensors). `inference.mcmc.adaptation.dual_averaging` is one."""

    init: object
    update: object
    settings: tuple


class _FixedStep(NamedTuple):
    step_size: torch.Tensor


NO_ADAPTATION = Adaptation(_FixedStep, lambda state, accept_prob: state, ())


def eager_leaf_step(value_and_grad, metric_type, max_energy_error=1000.,
                    adaptation=NO_ADAPTATION):
    """The LeafStep of `leaf_begin`, `value_and_grad` and `leaf_end_begin`, uncompiled, with
    max_energy_error and the adaptation bound."""
    def begin(*args):
        return leaf_begin(metric_type, *args)

    def end_begin(*args):
        return leaf_end_begin(metric_type, adaptation.update, *args, max_energy_error,
                              adaptation.settings)
    return LeafStep(begin, value_and_grad, end_begin, adaptation.init, _iteration, _point,
                    _stack, _unpack)


def _iteration(stats):
    return stats.iteration


def _point(tree):
    return tree.position


def _stack(stats):
    return type(stats[0])(*map(torch.stack, zip(*stats)))


def _unpack(tree):
    return tree


_CHUNK = 64  # leaf steps whose uniforms `nuts_kernel` draws at a time


def nuts_kernel(state, potential, step_size, metric, max_tree_depth=10, max_energy_error=1000.,
                step=None):
    """One NUTS transition of every chain: (state, TransitionInfo).

    state: HMCState ([n_chains, D]; its `rng`, the chains' random streams, or
    new ones); step_size: [n_chains]; metric: from `inference.mcmc.metric`.
    step: a `LeafStep` (e.g. compiled); by default the eager one on `potential`;
    its adaptation is not run. accept_prob is Stan's mean acceptance statistic over the
    trajectory. Each chain draws from its stream by its own counts, as
    `inference.mcmc.batching.run_transitions` does: the same draws.
    """
    if step is None:
        step = eager_leaf_step(potential, type(metric), max_energy_error)
    position, dtype = state.position, state.position.dtype
    device = position.device
    rng = new_streams(position.shape[0], device) if state.rng is None else state.rng
    key, steps, made = rng.unbind(1)
    table = leaf_table(max_tree_depth, device)
    target = torch.ones(position.shape[0], dtype=torch.long, device=device)
    tree = init_tree(state, step_size, max_tree_depth, step.init_adaptation(step_size.to(dtype)))
    inverse_mass, factor = metric.inverse_mass, metric.momentum_factor
    ahead = torch.arange(_CHUNK + 1, device=device)[:, None]
    # the noise of this transition (row 0) and of those after it (unused: a chain through
    # with its transition stays where it is)
    draws = Draws(uniforms(key, steps + ahead, dtype), steps,
                  normals(key, made + ahead[:3], position.shape[1], dtype),
                  torch.ones_like(steps))
    uniform = draws.uniform_block[0]
    tree, position, momentum = step.begin(tree, inverse_mass, factor, draws.noise_block[0],
                                          uniform, table, target)
    stats = []
    while not stats or not bool(step.iteration(stats[-1]).all()):
        log_prob, grad = step.value_and_grad(position)
        tree, position, momentum, ended, steps, uniform = step.end_begin(
            tree, position, momentum, log_prob.to(dtype), grad, inverse_mass, factor, uniform,
            steps, draws, table, target, False)
        stats.append(ended)
        if len(stats) % _CHUNK == 0:
            draws = draws._replace(uniform_block=uniforms(key, steps + ahead, dtype),
                                   uniform_base=steps)
    stats = step.stack(stats)
    # each chain's statistics from the step that ended its transition
    ended = type(stats)(*(s.gather(0, (stats.iteration == 0).sum(0, keepdim=True))[0]
                          for s in stats))
    new_state = tree_point(tree, torch.stack((key, steps, made + 1), 1))
    info = TransitionInfo(accept_prob=ended.accept_prob,
                          is_accepted=(new_state.position != state.position).any(-1),
                          diverging=ended.diverging, energy=ended.energy,
                          orig_energy=ended.orig_energy, n_steps=ended.n_steps,
                          tree_depth=ended.tree_depth)
    return new_state, info
