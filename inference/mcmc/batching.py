"""Run many NUTS transitions, each chain at its own pace (program-counter batching).

`run_transitions` calls a `LeafStep` (`inference.mcmc.nuts`) until every chain has
made the transitions asked for; a chain that is through waits, its point unchanged. Its
random numbers come from its own stream (`inference.mcmc.streams`), indexed by its own
leapfrog step and transition counts and drawn a block of steps ahead, so that where the
chains meet (adaptation windows, checkpoints) changes no draw. The ended transitions
are handed on once per block, and whether every chain is through is asked once per
`check_every` steps: the step itself never waits for the host.

A chain may also pause on its way, at a target of its own (e.g. the end of its warm-up
window): at the end of the block, a hook gives it a new metric, step size and target
(`Restart`), and it goes on while the others never stopped.

Once few chains still run, a gradient that can (`RunningRowsGradient`) is computed for their rows
alone, so that the long tail of one slow chain does not cost a whole batch per step.
"""
from typing import NamedTuple

import torch

from inference.mcmc.nuts import Draws, init_tree, tree_point
from inference.mcmc.state import select
from inference.mcmc.streams import normals, uniforms
from inference.mcmc.termination import leaf_table

__all__ = ["run_transitions", "Restart", "Collected", "RunningRowsGradient"]


class Restart(NamedTuple):
    """What a `run_transitions` hook changes for the chains paused at their targets:
    chains [n] (bool, the chains restarted: every one paused below the end); metric
    (every chain's from now on); adaptation (the step's adaptation state [n], every
    chain's); target [n] (transitions in this call after which each chain pauses next);
    adapting [n] (bool: which chains adapt from now on; None: as before)."""

    chains: torch.Tensor
    metric: object
    adaptation: object
    target: torch.Tensor
    adapting: object = None


def run_transitions(step, state, step_size, metric, max_tree_depth, n_iterations, adaptation=None,
                    adapting=False, progress=None, block=None, check_every=8, out=None,
                    target=None, at_target=None):
    """Run `step` (a `LeafStep`) until every chain has made `n_iterations` transitions.

    state: HMCState [n, D] with its random streams (`rng`, see `streams.new_streams`);
    step_size [n]; adaptation: the state the step's adaptation starts from (default
    `step.init_adaptation(step_size)`), updated after each transition where `adapting` (a
    bool, or [n] bools: per chain).
    Random numbers are made and ended transitions handed on `block` steps at a time
    (default: up to 64, fewer when the chains' points are large, so that a block's
    points stay within about 8 MB at float32).
    progress: called with the number of transitions that every chain has newly completed.
    out: a callable out(iteration [m], chain [m], position [m, D], stats) given the
    transitions ended in each block (iteration counted from 0 in this call; stats a
    `LeafStats` of [m] tensors); default: they are collected and returned.
    Returns (state with the advanced streams, adaptation, positions [n_iterations, n, D]
    after each transition and stats (`LeafStats` of [n_iterations, n]); both None with
    `out`).
    target: [n], the transitions (in this call) after which each chain pauses (default
    n_iterations); at_target(tree, iterations [n], target [n], value_and_grad) -> `Restart`:
    called at the end of a block where chains have paused below n_iterations (tree: the
    `TreeState`; value_and_grad: the step's, for any gradient the hook needs), with what
    they go on with.
    """
    position, rng = state.position, state.rng
    n, dim, dtype, device = position.shape[0], position.shape[1], position.dtype, position.device
    if adaptation is None:
        adaptation = step.init_adaptation(step_size.to(dtype))
    tree = init_tree(state, step_size, max_tree_depth, adaptation)
    table = leaf_table(max_tree_depth, device)
    end = torch.full((n,), n_iterations, device=device)
    target = end if target is None else target.to(device=device, dtype=end.dtype)
    if at_target is None and bool((target < end).any()):
        raise ValueError("run_transitions: a `target` below `n_iterations` needs `at_target`, "
                         "the hook that restarts the chains paused there")
    if not isinstance(adapting, torch.Tensor):
        adapting = bool(adapting)
    inverse_mass, factor = metric.inverse_mass, metric.momentum_factor
    collected = None
    if out is None:
        out = collected = Collected(n_iterations, position)
    if block is None:
        block = max(4, min(64, 2 ** 21 // (n * dim)))
    block = -(-block // check_every) * check_every
    # Uniforms for the next `block` steps of each chain (and the one after), momenta for its
    # next 2 * `block` transitions (renewed when a chain could run out within the next block).
    ahead = torch.arange(2 * block, device=device)[:, None]
    key, steps, done_before = rng.T.contiguous()  # rows: no strided copy at each step
    transition_base = done_before
    draws = Draws(uniforms(key, steps + ahead[:block + 1], dtype), steps,
                  normals(key, transition_base + ahead, dim, dtype), torch.ones_like(steps))
    uniform = draws.uniform_block[0]
    tree, position, momentum = step.begin(tree, inverse_mass, factor, draws.noise_block[0],
                                          uniform, table, target)
    iterations, reported, done = tree.iteration, 0, False
    gradient = RunningRowsGradient(step.value_and_grad, dtype)
    while not done:
        block_points, stats = [], []
        gradient.rows_for(iterations < target)
        for i in range(block):
            log_prob, grad = gradient(position)
            tree, position, momentum, ended, steps, uniform = step.end_begin(
                tree, position, momentum, log_prob, grad, inverse_mass, factor, uniform, steps,
                draws, table, target, adapting)
            block_points.append(step.point(tree))  # not the trees: they fill the cache
            stats.append(ended)
            if (i + 1) % check_every == 0 and not gradient.rows_for(
                    step.iteration(ended) < target):
                break
        # Hand on what the chains that ended a transition in this block reported.
        stats = step.stack(stats)
        counts = stats.iteration
        ended = counts > torch.cat((iterations[None], counts[:-1]))
        calls, which = ended.nonzero(as_tuple=True)
        out(counts[calls, which] - 1, which, torch.stack(block_points)[calls, which],
            type(stats)(*(s[calls, which] for s in stats)))
        iterations = counts[-1]
        made = done_before + iterations
        paused = (iterations >= target) & (target < end)
        if at_target is not None and bool(paused.any()):
            restart = at_target(step.unpack(tree), iterations, target, step.value_and_grad)
            if not bool((restart.target[paused] > iterations[paused]).all()):
                raise RuntimeError("run_transitions: `at_target` left paused chains without "
                                   "a later target")
            tree, position, momentum = _restart(step, tree, position, momentum, restart,
                                                normals(key, made[None], dim, dtype)[0],
                                                uniform, table)
            inverse_mass, factor = restart.metric.inverse_mass, restart.metric.momentum_factor
            target = restart.target
            if restart.adapting is not None:
                adapting = restart.adapting
        done = bool((iterations >= end).all())
        draws = draws._replace(uniform_block=uniforms(key, steps + ahead[:block + 1], dtype),
                               uniform_base=steps)
        if int((made + block - transition_base).max()) >= 2 * block:
            transition_base = made + 1
            draws = draws._replace(noise_block=normals(key, transition_base + ahead, dim, dtype),
                                   noise_offset=done_before + 1 - transition_base)
        if progress is not None:
            through = int(iterations.min())
            if through > reported:
                progress(through - reported)
                reported = through
    new_state = tree_point(tree, torch.stack((key, steps, made), 1))
    if collected is None:
        return new_state, tree.adaptation, None, None
    return new_state, tree.adaptation, collected.positions, collected.stats()


class Collected:
    """The `out` of a driver asked to return what it made: it keeps each ended transition's
    point in `positions` [n_iterations, n, D] and its statistics for `stats()` (a
    `LeafStats` of [n_iterations, n] tensors)."""

    def __init__(self, n_iterations, position):
        self.positions = position.new_empty((n_iterations,) + tuple(position.shape))
        self._kept = []

    def __call__(self, index, which, points, ended):
        self.positions[index, which] = points
        self._kept.append((index, which, ended))

    def stats(self):
        first = self._kept[0][2]
        stats = type(first)(*(s.new_empty(self.positions.shape[:2]) for s in first))
        for index, which, ended in self._kept:
            for table, values in zip(stats, ended):
                table[index, which] = values
        return stats


class RunningRowsGradient:
    """The model's log density and gradient at each leaf step, only for the chains still
    running where they are few: a chain at its target keeps its point, and the leaf step
    ignores its row (so do the doublings, `inference.mcmc.doubling`, a chain whose tree is
    through). With `value_and_grad.takes_rows` (`compile.CompiledStep`), the
    running chains are packed into as few groups of `row_group` rows as keep each at its
    place within a group (row i at i mod `row_group`: its bits as in the whole batch, so
    that this changes no draw), filled up with paused chains; that batch is computed alone
    where it is half the rows or fewer, and the other rows keep their last values."""

    def __init__(self, value_and_grad, dtype):
        self.value_and_grad, self.dtype = value_and_grad, dtype
        self.index = self.last = None

    def rows_for(self, running):
        """Choose the rows from running [n] (bool); returns whether any chain runs (syncs
        with the device: called once per check)."""
        count, n = int(running.sum()), running.shape[0]
        self.index = None
        if self.last is not None and 0 < 2 * count <= n and \
                getattr(self.value_and_grad, "takes_rows", False):
            self.index = _packed_rows(running.nonzero().flatten().tolist(), n,
                                      self.value_and_grad.row_group, running.device)
        return count > 0

    def __call__(self, position):
        if self.index is None:
            log_prob, grad = self.value_and_grad(position)
        else:
            part_log_prob, part_grad = self.value_and_grad(position.index_select(0, self.index))
            log_prob, grad = self.last
            log_prob = log_prob.index_copy(0, self.index, part_log_prob.to(log_prob.dtype))
            grad = grad.index_copy(0, self.index, part_grad)
        if log_prob.dtype != self.dtype:
            log_prob = log_prob.to(self.dtype)
        self.last = (log_prob, grad)
        return log_prob, grad


def _packed_rows(running, n, group, device):
    """The rows [k * group] to compute for the `running` chains (a list, of n): group j
    holds, at place r, the j-th running chain whose row is r mod `group`, or a paused one
    of those (each running chain once); None where that is over half the rows."""
    places = [[c for c in running if c % group == r] for r in range(group)]
    groups = max(len(chains) for chains in places)
    if 2 * groups * group > n:
        return None
    taken = set(running)
    for r, chains in enumerate(places):
        chains += [c for c in range(r, n, group) if c not in taken][:groups - len(chains)]
    return torch.tensor([places[r][j] for j in range(groups) for r in range(group)],
                        device=device)


def _restart(step, tree, position, momentum, restart, noise, uniform, table):
    """The leaf step that starts the next transition of the chains `restart` names, begun
    again under their new metric and step size (noise [n, D]: the momentum noise of each
    chain's next transition); the other chains' leaf step as it was."""
    tree = step.unpack(tree)
    chains, adaptation = restart.chains, restart.adaptation
    tree = tree._replace(step_size=torch.where(chains, adaptation.step_size, tree.step_size),
                         adaptation=adaptation)
    begun, new_position, new_momentum = step.begin(
        tree, restart.metric.inverse_mass, restart.metric.momentum_factor, noise, uniform, table,
        restart.target)
    # (`begin` leaves the U-turn checkpoints, [T, n, D], as they are)
    tree = select(chains, begun._replace(checkpoints=()), tree._replace(checkpoints=()))
    return (tree._replace(checkpoints=begun.checkpoints), select(chains, new_position, position),
            select(chains, new_momentum, momentum))
