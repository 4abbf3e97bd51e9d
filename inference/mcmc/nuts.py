"""The No-U-Turn sampler: multinomial NUTS (Hoffman & Gelman 2014; Betancourt 2017; Stan).

All chains build their trajectories in lock-step. The tree is doubled `depth =
0, 1, 2, ...` times, each doubling adding a subtree of 2^depth leapfrog steps
at one end (per-chain random direction). The step-index pattern is the same
for every chain, so one leapfrog call (one gradient of the summed log
densities) advances them all; a chain whose tree has terminated (U-turn,
divergence) is masked: its proposal, weights and statistics stop changing,
and the batch goes on until every chain is done or `max_tree_depth` is
reached.

Within a subtree the leaves are sampled multinomially (each with weight
exp(-H)); a new subtree replaces the current proposal with probability
min(1, W_subtree / W_tree) (Stan's biased progressive sampling). The U-turn
criterion is the generalized one (Betancourt 2017): a (sub)trajectory with
momentum sum rho and end velocities v-, v+ stops when rho . v- <= 0 or
rho . v+ <= 0. It is checked for every aligned block of every subtree as the
leaves are built (checkpoints as in NumPyro's iterative NUTS), for the whole
tree after each doubling, and across the two halves of the merged tree (Stan's
extra checks).
"""
from collections import namedtuple

import torch

from inference.mcmc.integrators import leapfrog
from inference.mcmc.sampler import HamiltonianSampler
from inference.mcmc.state import HMCState, TransitionInfo

__all__ = ["nuts_kernel", "NUTS"]

_Subtree = namedtuple("_Subtree", "end proposal log_weight rho stopped diverging n_steps "
                                  "sum_accept first")


def _where(mask, new, old):
    return torch.where(mask.view(mask.shape + (1,) * (new.dim() - 1)), new, old)


def _where_all(mask, new, old):
    return tuple(_where(mask, a, b) for a, b in zip(new, old))


def _turning(v_a, v_b, rho):
    """Generalized no-U-turn criterion: True where the trajectory turned."""
    return (torch.linalg.vecdot(v_a, rho) <= 0) | (torch.linalg.vecdot(v_b, rho) <= 0)


def _checkpoint_slots(leaf):
    """Checkpoint slots (lo, hi) at leaf `leaf` of a subtree; the same for all chains.

    An even leaf starts aligned blocks; its momentum and the running momentum
    sum go to slot popcount(leaf >> 1) (= hi). An odd leaf ends the blocks of
    sizes 2, 4, ..., 2^T (T = its trailing one bits), whose first leaves sit in
    slots lo..hi.
    """
    hi = bin(leaf >> 1).count("1")
    if leaf % 2 == 0:
        return hi, hi
    trailing_ones = (leaf ^ (leaf + 1)).bit_length() - 1
    return hi - trailing_ones + 1, hi


def _build_subtree(potential, metric, start, forward, n_leaves, active, orig_energy, step_size,
                   proposal, max_energy_error, checkpoints):
    """Add `n_leaves` leapfrog steps after `start` for the `active` chains.

    start: (position, momentum, grad, velocity) at the end being extended; the
    subtree's end comes back packed the same way, as [n_chains, 4, D].
    proposal: (position, log_prob, grad, log_weight) for chains that take no leaf.
    Chains that are not active (done before, or halted within this subtree)
    keep integrating, since the batch moves anyway, but nothing they compute is
    used: their subtree counts as invalid. Only their statistics are masked,
    and a diverging leaf is undone so that no chain carries non-finite values.
    """
    position, momentum, grad, velocity = start
    n_chains = position.shape[0]
    step = torch.where(forward, step_size, -step_size)[:, None]
    half_step = 0.5 * step
    log_weight = torch.full_like(orig_energy, -torch.inf)
    rho = torch.zeros_like(momentum)
    started = active
    diverging = torch.zeros_like(active)
    leaf_weights = orig_energy.new_empty((n_leaves, n_chains))
    last_leaf = torch.full((n_chains,), n_leaves - 1, device=position.device)
    log_u = torch.rand((n_leaves, n_chains), dtype=orig_energy.dtype,
                       device=position.device).log_().unbind(0)
    ckpt_velocity, ckpt_offset = checkpoints
    for leaf in range(n_leaves):
        new_position, new_momentum, new_log_prob, new_grad = leapfrog(
            potential, metric, position, momentum, grad, step, half_step)
        new_velocity = metric.velocity(new_momentum)
        # log weight exp(-H) relative to the start: H0 - H = log_prob - K + H0
        leaf_weight = torch.add(new_log_prob + orig_energy,
                                torch.linalg.vecdot(new_momentum, new_velocity), alpha=-0.5)
        finite = leaf_weight >= -max_energy_error  # False for NaN too
        halt = None
        if not bool(finite.all()):
            halt = ~finite
            diverging = diverging | (active & halt)
            leaf_weight = torch.where(finite, leaf_weight, -torch.inf)
            new_position, new_momentum, new_grad, new_velocity = _where_all(
                finite, (new_position, new_momentum, new_grad, new_velocity),
                (position, momentum, grad, velocity))
        leaf_weights[leaf] = leaf_weight
        # Multinomial sampling within the subtree, one leaf at a time.
        new_log_weight = torch.logaddexp(log_weight, leaf_weight)
        take = log_u[leaf] < leaf_weight - new_log_weight
        take_column = take[:, None]
        proposal = (torch.where(take_column, new_position, proposal[0]),
                    torch.where(take, new_log_prob, proposal[1]),
                    torch.where(take_column, new_grad, proposal[2]),
                    torch.where(take, leaf_weight, proposal[3]))
        log_weight = new_log_weight
        rho = rho + new_momentum
        if leaf == 0:
            first = (new_momentum, new_velocity)
        # U-turn checks of the aligned blocks ending here; a block starting at
        # leaf a has momentum sum rho - (rho_a - p_a), with rho_a - p_a stored at a.
        lo, hi = _checkpoint_slots(leaf)
        if leaf % 2 == 0:
            ckpt_velocity[hi], ckpt_offset[hi] = new_velocity, rho - new_momentum
        else:
            turned = _turning(ckpt_velocity[lo:hi + 1], new_velocity,
                              rho - ckpt_offset[lo:hi + 1]).any(0)
            halt = turned if halt is None else halt | turned
        position, momentum, grad, velocity = new_position, new_momentum, new_grad, new_velocity
        if halt is not None:
            last_leaf = torch.where(active & halt, leaf, last_leaf)
            active = active & ~halt
            if not bool(active.any()):
                break
    # Statistics over the leaves each chain built: 0..last_leaf, if it took part.
    built = torch.arange(leaf + 1, device=position.device)[:, None] <= last_leaf
    built = built & started
    n_steps = built.sum(0)
    sum_accept = torch.where(built, leaf_weights[:leaf + 1].clamp(max=0.).exp(), 0.).sum(0)
    return _Subtree(torch.stack((position, momentum, grad, velocity), 1), proposal, log_weight,
                    rho, started & ~active, diverging, n_steps, sum_accept, first)


def nuts_kernel(state, potential, step_size, metric, max_tree_depth=10, max_energy_error=1000.):
    """One NUTS transition of every chain (lock-step, masked).

    state: HMCState ([n_chains, D]); step_size: [n_chains]; metric: a metric
    from `inference.mcmc.metric`. Returns (state, TransitionInfo); accept_prob
    is Stan's mean acceptance statistic over the trajectory.
    """
    position = state.position
    n_chains, dim = position.shape
    momentum = metric.sample_momentum()
    velocity = metric.velocity(momentum)
    orig_energy = 0.5 * torch.linalg.vecdot(momentum, velocity) - state.log_prob
    # The trajectory's ends, each (position, momentum, grad, velocity) packed: [n, 4, D].
    left = right = torch.stack((position, momentum, state.grad, velocity), 1)
    # The proposal: (position, log_prob, grad, log weight exp(H0 - H)).
    proposal = (position, state.log_prob, state.grad, torch.zeros_like(orig_energy))
    log_weight = torch.zeros_like(orig_energy)
    rho = momentum
    done = torch.zeros(n_chains, dtype=torch.bool, device=position.device)
    diverging = torch.zeros_like(done)
    tree_depth = torch.zeros(n_chains, dtype=torch.long, device=position.device)
    n_steps = torch.zeros_like(tree_depth)
    sum_accept = torch.zeros_like(orig_energy)
    checkpoints = tuple(position.new_empty((max(max_tree_depth, 1), n_chains, dim))
                        for _ in range(2))
    for depth in range(max_tree_depth):
        forward = torch.rand(n_chains, device=position.device) < 0.5
        start = torch.where(forward[:, None, None], right, left).unbind(1)
        far_velocity = torch.where(forward[:, None], left[:, 3], right[:, 3])  # the fixed end
        sub = _build_subtree(potential, metric, start, forward, 2 ** depth, ~done, orig_energy,
                             step_size, proposal, max_energy_error, checkpoints)
        n_steps += sub.n_steps
        sum_accept += sub.sum_accept
        diverging = diverging | sub.diverging
        tree_depth = torch.where(done, tree_depth, depth + 1)
        valid = ~(done | sub.stopped)
        # Biased progressive sampling: prefer the new subtree.
        log_u = torch.rand_like(log_weight).log_()
        take = valid & (log_u < sub.log_weight - log_weight)
        take_column = take[:, None]
        proposal = (torch.where(take_column, sub.proposal[0], proposal[0]),
                    torch.where(take, sub.proposal[1], proposal[1]),
                    torch.where(take_column, sub.proposal[2], proposal[2]),
                    torch.where(take, sub.proposal[3], proposal[3]))
        # U-turn of the merged tree, and across its two halves (Stan's extra checks):
        # (whole tree), (old tree + first new leaf), (start point + new subtree).
        start_momentum, start_velocity = start[1], start[3]
        end_velocity = sub.end[:, 3]
        turned = _turning(
            torch.stack((far_velocity, far_velocity, start_velocity)),
            torch.stack((end_velocity, sub.first[1], end_velocity)),
            torch.stack((rho + sub.rho, rho + sub.first[0], sub.rho + start_momentum))).any(0)
        log_weight = torch.where(valid, torch.logaddexp(log_weight, sub.log_weight), log_weight)
        rho = torch.where(valid[:, None], rho + sub.rho, rho)
        right = torch.where((valid & forward)[:, None, None], sub.end, right)
        left = torch.where((valid & ~forward)[:, None, None], sub.end, left)
        done = done | sub.stopped | turned
        if bool(done.all()):
            break
    new_position, new_log_prob, new_grad, new_weight = proposal
    moved = (new_position != position).any(-1)
    info = TransitionInfo(accept_prob=sum_accept / n_steps.clamp(min=1), is_accepted=moved,
                          diverging=diverging, energy=orig_energy - new_weight,
                          orig_energy=orig_energy, n_steps=n_steps, tree_depth=tree_depth)
    return HMCState(new_position, new_log_prob, new_grad), info


class NUTS(HamiltonianSampler):
    """The No-U-Turn sampler with the same interface as `inference.HMC`.

    step_size: initial step size; None finds one with Hoffman's heuristic.
    max_tree_depth: at most 2^max_tree_depth - 1 leapfrog steps per transition.
    adapt_step_size, target_acceptance_rate, gamma, t0, kappa: dual averaging
        (Stan's defaults: gamma=0.05, t0=10, kappa=0.75).
    adapt_mass: 'diag' (default), 'dense', or None.
    """

    def __init__(self, step_size=None, max_tree_depth=10, adapt_step_size=True,
                 target_acceptance_rate=0.8, gamma=0.05, t0=10, kappa=0.75, adapt_mass="diag",
                 mass_collect_iters=10, mass_decay=0.99, max_energy_error=1000.):
        super().__init__(step_size=step_size, adapt_step_size=adapt_step_size,
                         target_acceptance_rate=target_acceptance_rate, gamma=gamma, t0=t0,
                         kappa=kappa, adapt_mass=adapt_mass,
                         mass_collect_iters=mass_collect_iters, mass_decay=mass_decay,
                         max_energy_error=max_energy_error)
        if not isinstance(max_tree_depth, int) or isinstance(max_tree_depth, bool) \
                or max_tree_depth < 1:
            raise ValueError(f"NUTS: `max_tree_depth` must be a positive int, got "
                             f"{max_tree_depth!r}")
        self.max_tree_depth = max_tree_depth

    def transition(self, state, potential, step_size, metric):
        return nuts_kernel(state, potential, step_size, metric, self.max_tree_depth,
                           self.max_energy_error)

    def __repr__(self):
        return (f"NUTS(max_tree_depth={self.max_tree_depth}, adapt_step_size="
                f"{self.adapt_step_size}, adapt_mass={self.adapt_mass!r})")
