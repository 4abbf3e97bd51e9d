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
import functools
from collections import namedtuple

import torch

from inference.mcmc.compile import shifted
from inference.mcmc.sampler import HamiltonianSampler
from inference.mcmc.state import HMCState, TransitionInfo

__all__ = ["nuts_kernel", "NUTS"]

_Subtree = namedtuple("_Subtree", "end proposal log_weight rho stopped diverging n_steps "
                                  "sum_accept first")


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


@functools.lru_cache(maxsize=64)
def _checkpoint_masks(n_leaves, n_slots, device):
    """Per leaf, a [2, n_slots] bool mask: the slot an even leaf writes ([0]) and
    the slots an odd leaf checks ([1]), as masks so that every leaf runs the
    same operations."""
    masks = torch.zeros((n_leaves, 2, n_slots), dtype=torch.bool)
    for leaf in range(n_leaves):
        lo, hi = _checkpoint_slots(leaf)
        masks[leaf, leaf % 2, lo:hi + 1] = True
    return masks.to(device).unbind(0)


# A subtree's running state, packed into three tensors so that a compiled leaf
# has few inputs and outputs (each costs a check and an allocation per call):
# vectors [n, 7, D] and scalars [n, 7] (flags and counts as 0/1 and whole
# floats) in the orders below, and the U-turn checkpoints [2, T, n, D].
VECTORS = ("position", "momentum", "grad", "velocity", "rho", "proposal_position",
           "proposal_grad")
SCALARS = ("log_weight", "proposal_log_prob", "proposal_log_weight", "active", "diverging",
           "n_steps", "sum_accept")


def nuts_leaf(value_and_grad, velocity_from, max_energy_error, vectors, scalars, checkpoints,
              step, orig_energy, inverse_mass, log_u, masks):
    """One leaf of a subtree for every chain: a pure function of tensors (it can be compiled).

    vectors, scalars, checkpoints: the subtree's state (see VECTORS,
    SCALARS): the end being extended (position, momentum, grad, velocity),
    its momentum sum rho and log weight, its multinomial proposal (position,
    log_prob, grad, log weight exp(H0 - H)), per chain whether it is still
    building (active), diverged, its leapfrog count and its sum of acceptance
    probabilities; the checkpoints hold the velocity and rho minus the
    momentum at the first leaf of each aligned block. They come back updated,
    with a 0-d bool: whether any chain is still building.
    step [n, 1] (signed), orig_energy H0 [n], inverse_mass: the metric's;
    log_u [n]: log of a uniform draw; masks [2, T]: this leaf's checkpoint
    slots (write, check).

    A diverging leaf (energy error above `max_energy_error`, or non-finite) is
    undone, so that no chain carries non-finite values; chains that are not
    active keep integrating (the batch moves anyway) but their statistics stay.
    """
    position, momentum, grad, velocity, rho, proposal_position, proposal_grad = vectors.unbind(1)
    (log_weight, proposal_log_prob, proposal_log_weight, active, diverging, n_steps,
     sum_accept) = scalars.unbind(1)
    was_active = active > 0
    half_step = 0.5 * step
    new_momentum = torch.addcmul(momentum, half_step, grad)
    new_position = torch.addcmul(position, step, velocity_from(inverse_mass, new_momentum))
    new_log_prob, new_grad = value_and_grad(new_position)
    new_momentum = torch.addcmul(new_momentum, half_step, new_grad)
    new_velocity = velocity_from(inverse_mass, new_momentum)
    # log weight exp(-H) relative to the start: H0 - H = log_prob - K + H0
    leaf_weight = torch.add(new_log_prob + orig_energy,
                            torch.linalg.vecdot(new_momentum, new_velocity), alpha=-0.5)
    finite = leaf_weight >= -max_energy_error  # False for NaN too
    leaf_weight = torch.where(finite, leaf_weight, -torch.inf)
    keep = finite[:, None]
    new_position = torch.where(keep, new_position, position)
    new_momentum = torch.where(keep, new_momentum, momentum)
    new_grad = torch.where(keep, new_grad, grad)
    new_velocity = torch.where(keep, new_velocity, velocity)
    # Multinomial sampling within the subtree, one leaf at a time.
    new_log_weight = torch.logaddexp(log_weight, leaf_weight)
    take = log_u < leaf_weight - new_log_weight
    take_column = take[:, None]
    rho = rho + new_momentum
    # U-turn checks of the aligned blocks ending here; a block starting at leaf
    # a has momentum sum rho - (rho_a - p_a), with rho_a - p_a stored at a.
    write = masks[0][:, None, None]
    checkpoints = torch.stack((torch.where(write, new_velocity, checkpoints[0]),
                               torch.where(write, rho - new_momentum, checkpoints[1])))
    ckpt_velocity, ckpt_offset = checkpoints
    turned = (_turning(ckpt_velocity, new_velocity, rho - ckpt_offset) & masks[1][:, None]).any(0)
    active = was_active & finite & ~turned
    vectors = torch.stack((new_position, new_momentum, new_grad, new_velocity, rho,
                           torch.where(take_column, new_position, proposal_position),
                           torch.where(take_column, new_grad, proposal_grad)), 1)
    scalars = torch.stack((new_log_weight,
                           torch.where(take, new_log_prob, proposal_log_prob),
                           torch.where(take, leaf_weight, proposal_log_weight),
                           active.to(scalars.dtype),
                           torch.where(was_active & ~finite, 1., diverging),
                           n_steps + was_active.to(scalars.dtype),
                           sum_accept + torch.where(was_active, leaf_weight.clamp(max=0.).exp(),
                                                    0.)),
                          1)
    return vectors, scalars, checkpoints, active.any()


def _build_subtree(leaf_step, start, forward, n_leaves, active, orig_energy, step_size,
                   inverse_mass, proposal, checkpoints):
    """Add `n_leaves` leapfrog steps after `start` for the `active` chains.

    start: the end being extended, (position, momentum, grad, velocity) packed
    as [n_chains, 4, D]; the subtree's end comes back packed the same way.
    proposal: (position, log_prob, grad, log_weight) for chains that take no leaf.
    leaf_step: `nuts_leaf` with its first three arguments bound (or compiled).
    Chains that are not active (done before, or halted within this subtree)
    keep integrating, but nothing they compute is used: their subtree counts
    as invalid.
    """
    n_chains = start.shape[0]
    step = torch.where(forward, step_size, -step_size)[:, None]
    log_u = torch.rand((n_leaves, n_chains), dtype=orig_energy.dtype,
                       device=start.device).log_().unbind(0)
    masks = _checkpoint_masks(n_leaves, checkpoints.shape[1], start.device)
    zeros = torch.zeros_like(orig_energy)
    vectors = torch.cat((start, torch.zeros_like(start[:, :1]), proposal[0][:, None],
                         proposal[2][:, None]), 1)
    scalars = torch.stack((torch.full_like(orig_energy, -torch.inf), proposal[1], proposal[3],
                           active.to(zeros.dtype), zeros, zeros, zeros), 1)
    for leaf in range(n_leaves):
        vectors, scalars, checkpoints, building = leaf_step(
            vectors, scalars, checkpoints, step, orig_energy, inverse_mass, log_u[leaf],
            masks[leaf])
        if leaf == 0:
            first = (vectors[:, 1], vectors[:, 3])  # the new leaf's momentum and velocity
        if not bool(building):
            break
    log_weight, log_prob, proposal_weight, still_active, diverging, n_steps, sum_accept = \
        scalars.unbind(1)
    return _Subtree(vectors[:, :4], (vectors[:, 5], log_prob, vectors[:, 6], proposal_weight),
                    log_weight, vectors[:, 4], active & ~(still_active > 0), diverging > 0,
                    n_steps.long(), sum_accept, first)


def nuts_kernel(state, potential, step_size, metric, max_tree_depth=10, max_energy_error=1000.,
                leaf_step=None):
    """One NUTS transition of every chain (lock-step, masked).

    state: HMCState ([n_chains, D]); step_size: [n_chains]; metric: a metric
    from `inference.mcmc.metric`. leaf_step: `nuts_leaf` with (value_and_grad,
    velocity_from, max_energy_error) bound, e.g. compiled (see `NUTS`); by
    default the eager one on `potential`. Returns (state, TransitionInfo);
    accept_prob is Stan's mean acceptance statistic over the trajectory.
    """
    if leaf_step is None:
        leaf_step = functools.partial(nuts_leaf, potential, type(metric).velocity_from,
                                      max_energy_error)
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
    checkpoints = position.new_zeros((2, max(max_tree_depth, 1), n_chains, dim))
    for depth in range(max_tree_depth):
        forward = torch.rand(n_chains, device=position.device) < 0.5
        start = torch.where(forward[:, None, None], right, left)
        far_velocity = torch.where(forward[:, None], left[:, 3], right[:, 3])  # the fixed end
        sub = _build_subtree(leaf_step, start, forward, 2 ** depth, ~done, orig_energy,
                             step_size, metric.inverse_mass, proposal, checkpoints)
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
        start_momentum, start_velocity = start[:, 1], start[:, 3]
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
    jit_compile: compile each leaf (leapfrog, model gradient and tree
        bookkeeping) into one native function at the first transition
        (`inference.mcmc.compile`): seconds of compilation, then several times
        faster on small and medium models. Falls back to eager, with a
        warning, where the model cannot be traced.
    """

    def __init__(self, step_size=None, max_tree_depth=10, adapt_step_size=True,
                 target_acceptance_rate=0.8, gamma=0.05, t0=10, kappa=0.75, adapt_mass="diag",
                 mass_collect_iters=10, mass_decay=0.99, max_energy_error=1000.,
                 jit_compile=False):
        super().__init__(step_size=step_size, adapt_step_size=adapt_step_size,
                         target_acceptance_rate=target_acceptance_rate, gamma=gamma, t0=t0,
                         kappa=kappa, adapt_mass=adapt_mass,
                         mass_collect_iters=mass_collect_iters, mass_decay=mass_decay,
                         max_energy_error=max_energy_error, jit_compile=jit_compile)
        if not isinstance(max_tree_depth, int) or isinstance(max_tree_depth, bool) \
                or max_tree_depth < 1:
            raise ValueError(f"NUTS: `max_tree_depth` must be a positive int, got "
                             f"{max_tree_depth!r}")
        self.max_tree_depth = max_tree_depth

    def transition(self, state, potential, step_size, metric):
        velocity_from = type(metric).velocity_from

        def build(value_and_grad):
            return functools.partial(nuts_leaf, value_and_grad, velocity_from,
                                     self.max_energy_error)

        leaf_step = self._step_function("leaf", potential, metric, build, shifted(0))
        return nuts_kernel(state, potential, step_size, metric, self.max_tree_depth,
                           self.max_energy_error, leaf_step)

    def __repr__(self):
        return (f"NUTS(max_tree_depth={self.max_tree_depth}, adapt_step_size="
                f"{self.adapt_step_size}, adapt_mass={self.adapt_mass!r}"
                f"{', jit_compile=True' if self.jit_compile else ''})")
