"""The No-U-Turn sampler: multinomial NUTS (Hoffman & Gelman 2014; Betancourt 2017; Stan).

Chains are a batch dimension, and every chain follows its own trajectory: a
call of `nuts_step` moves every chain one leapfrog step (one gradient of the
summed log densities) along its own tree, and a chain whose transition has
ended starts its next one at the next call (program-counter batching, as in
Radul et al. 2020). No chain waits for the longest tree of the batch: with
trees built in lock-step, each transition costs the deepest chain's steps,
about twice the mean on the logistic regression of benchmarks/hmc_blr.py.
`run_transitions` calls the step until every chain has made the transitions
asked for; a chain that is through waits, its state unchanged. Each chain
draws its random numbers from a stream of its own (`new_streams`), indexed by
its own step and transition counts, so that where the chains meet (adaptation
windows, checkpoints) does not change the draws.

Within a transition the tree is doubled `depth = 0, 1, ...` times, each
doubling adding a subtree of 2^depth leapfrog steps at one end (random
direction). Within a subtree the leaves are sampled multinomially (each with
weight exp(-H)); a completed subtree replaces the current proposal with
probability min(1, W_subtree / W_tree) (Stan's biased progressive sampling).
The U-turn criterion is the generalized one (Betancourt 2017): a
(sub)trajectory with momentum sum rho and end velocities v-, v+ stops when
rho . v- <= 0 or rho . v+ <= 0. It is checked for every aligned block of
every subtree as the leaves are built (checkpoints as in NumPyro's iterative
NUTS), for the whole tree after each doubling, and across the two halves of
the merged tree (Stan's extra checks).

During warm-up each chain's step size is adapted (dual averaging) at the end
of each of its transitions, inside the step, so that the chains need to meet
only where the mass matrix changes (`inference.mcmc.run`).
"""
import functools
import math
import sys
from collections import namedtuple

import torch

from inference.mcmc import adaptation
from inference.mcmc.adaptation import dual_averaging_update
from inference.mcmc.compile import shifted
from inference.mcmc.shared_compile import SharedCompiledStep
from inference.mcmc.sampler import HamiltonianSampler
from inference.mcmc.state import HMCState, TransitionInfo

__all__ = ["nuts_step", "step_begin", "step_end", "step_end_begin", "NUTSStep", "eager_step",
           "init_chains", "new_streams", "run_transitions", "nuts_kernel", "NUTS"]

# The chains' state, packed into three tensors so that a compiled step has few
# inputs and outputs: vectors [n, 22, D], scalars [n, len(SCALARS)] (flags and
# counts as whole floats) and the U-turn checkpoints [2, T, n, D].
# Vectors: the chain's point (position, grad) [0:2]; the tree's left and right
# ends and the end the current subtree extends, each (position, momentum,
# grad, velocity) [2:6], [6:10], [10:14]; the tree's proposal and the
# subtree's (position, grad) [14:16], [16:18]; the momentum sums of the tree
# and of the subtree, and the subtree's first leaf's momentum and velocity
# [18:22].
N_VECTORS = 22
SCALARS = ("log_prob", "step_size", "iteration", "leaf", "forward", "orig_energy",
           "log_weight", "proposal_log_prob", "proposal_log_weight", "subtree_log_weight",
           "subtree_proposal_log_prob", "subtree_proposal_log_weight", "diverging", "n_steps",
           "sum_accept", "tree_depth", "accept_prob", "used_step_size",
           "mu", "count", "error_avg", "log_step_avg")
SLOT = {name: i for i, name in enumerate(SCALARS)}
# What a finished transition reports (the runner's statistics), read from the scalars.
STATS = ("accept_prob", "used_step_size", "diverging", "tree_depth", "n_steps",
         "orig_energy", "proposal_log_weight")

Settings = namedtuple("Settings", "max_energy_error target gamma t0 kappa")


def _turning(v_a, v_b, rho):
    """Generalized no-U-turn criterion: True where the trajectory turned."""
    return (torch.linalg.vecdot(v_a, rho) <= 0) | (torch.linalg.vecdot(v_b, rho) <= 0)


def _checkpoint_slots(leaf):
    """Checkpoint slots (lo, hi) at leaf `leaf` of a subtree.

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


@functools.lru_cache(maxsize=16)
def leaf_table(max_tree_depth, device="cpu"):
    """Where the j-th leapfrog step of a transition sits in its tree: int64 [2^T - 1, 6].

    Row j: the depth of its subtree, whether it is the subtree's first leaf,
    whether its last, whether the subtree is the deepest allowed (depth
    T - 1, T = max_tree_depth), then the checkpoint slots it writes (an even
    leaf) and those it checks (an odd leaf), as bit masks over the T slots
    (`_checkpoint_slots`, vectorized over all leaves).
    The depth enters the step only through this table and the checkpoints'
    [2, T, n, D], so that one compiled step serves every `max_tree_depth`.
    """
    def popcount(x):
        return sum((x >> bit) & 1 for bit in range(max_tree_depth))

    def bit(k):
        return torch.bitwise_left_shift(torch.ones_like(k), k)

    j = torch.arange(2 ** max_tree_depth - 1, device=device)
    depth = torch.zeros_like(j)
    for k in range(1, max_tree_depth):
        depth += j + 1 >= 2 ** k
    leaf = j + 1 - bit(depth)
    odd = (leaf & 1) > 0
    hi = popcount(leaf >> 1)
    lo = torch.where(odd, hi - popcount(leaf ^ (leaf + 1)) + 2, hi)
    slots = (bit(hi + 1) - 1) ^ (bit(lo) - 1)  # bits lo..hi
    zero = torch.zeros_like(slots)
    return torch.stack((depth, leaf == 0, leaf == bit(depth) - 1, depth == max_tree_depth - 1,
                        torch.where(odd, zero, slots), torch.where(odd, slots, zero)),
                       1).long()


def _select(condition, new, old):
    """torch.where with a per-chain condition [n] broadcast over old's trailing axes."""
    return torch.where(condition.reshape(condition.shape + (1,) * (old.dim() - 1)), new, old)


def _unpack(vectors, scalars):
    """Named views of the packed chains (see N_VECTORS, SCALARS)."""
    v = {"point": vectors[:, 0:2], "left": vectors[:, 2:6], "right": vectors[:, 6:10],
         "end": vectors[:, 10:14], "proposal": vectors[:, 14:16],
         "subtree_proposal": vectors[:, 16:18]}
    v.update(zip(("rho", "subtree_rho", "first_momentum", "first_velocity"),
                 vectors[:, 18:22].unbind(1)))
    return v, dict(zip(SCALARS, scalars.unbind(1)))


def _pack(v, s):
    vectors = torch.cat((v["point"], v["left"], v["right"], v["end"], v["proposal"],
                         v["subtree_proposal"],
                         torch.stack((v["rho"], v["subtree_rho"], v["first_momentum"],
                                      v["first_velocity"]), 1)), 1)
    return vectors, torch.stack([s[name] for name in SCALARS], 1)


def _place(s, table):
    """Where each chain's next leaf sits in its tree (see `leaf_table`): depth [n] (float),
    first, last, deepest [n] (bool), and the bit masks of the checkpoint slots it writes and
    checks [n] (int64)."""
    row = table[s["leaf"].long()]
    return (row[:, 0].to(s["leaf"].dtype), row[:, 1] > 0, row[:, 2] > 0, row[:, 3] > 0,
            row[:, 4], row[:, 5])


def _slot_mask(bits, n_slots):
    """Bit masks [n] as booleans [n_slots, n]: whether each chain's mask has slot k."""
    slots = torch.arange(n_slots, device=bits.device)[:, None]
    return (bits[None] >> slots) & 1 > 0


def step_begin(metric_type, settings, vectors, scalars, inverse_mass, momentum_factor, noise,
               uniform, table, target):
    """The part of `nuts_step` before the model's gradient (pure).

    A chain at leaf 0 starts a transition at its point with a new momentum; a
    chain at the first leaf of a subtree picks its direction and starts from
    that end. Returns (vectors, scalars, position, momentum): the chains and
    the leapfrog step's new position [n, D] and half-step momentum [n, D].
    """
    velocity_from = metric_type.velocity_from
    v, s = _unpack(vectors, scalars)
    running = s["iteration"] < target
    starting = running & (s["leaf"] == 0)
    fresh_momentum = metric_type.momentum_from(noise, momentum_factor)
    fresh_velocity = velocity_from(inverse_mass, fresh_momentum)
    point = v["point"]
    origin = torch.stack((point[:, 0], fresh_momentum, point[:, 1], fresh_velocity), 1)
    for name, value in (("left", origin), ("right", origin), ("proposal", point),
                        ("rho", fresh_momentum)):
        v[name] = _select(starting, value, v[name])
    zero = torch.zeros_like(s["log_prob"])
    kinetic = 0.5 * torch.linalg.vecdot(fresh_momentum, fresh_velocity)
    restart = {"orig_energy": kinetic - s["log_prob"], "log_weight": zero,
               "proposal_log_prob": s["log_prob"], "proposal_log_weight": zero,
               "diverging": zero, "n_steps": zero, "sum_accept": zero}
    for name, value in restart.items():
        s[name] = torch.where(starting, value, s[name])

    _, first, _, _, _, _ = _place(s, table)
    first = first & running
    forward = torch.where(first, uniform[:, 1] < 0.5, s["forward"] > 0)
    s["forward"] = forward.to(zero.dtype)
    v["end"] = _select(first, _select(forward, v["right"], v["left"]), v["end"])
    s["subtree_log_weight"] = torch.where(first, -torch.inf, s["subtree_log_weight"])
    v["subtree_rho"] = _select(first, torch.zeros_like(v["subtree_rho"]), v["subtree_rho"])

    position, momentum, grad, _ = v["end"].unbind(1)
    step = torch.where(forward, s["step_size"], -s["step_size"])[:, None]
    momentum = torch.addcmul(momentum, 0.5 * step, grad)
    position = torch.addcmul(position, step, velocity_from(inverse_mass, momentum))
    return (*_pack(v, s), position, momentum)


def step_end(metric_type, settings, vectors, scalars, checkpoints, position, momentum, log_prob,
             grad, inverse_mass, uniform, table, target, adapting):
    """The part of `nuts_step` after the model's gradient (pure).

    position, momentum: from `step_begin`; log_prob [n], grad [n, D]: the
    model's at position. Returns what `nuts_step` returns.
    """
    v, s = _unpack(vectors, scalars)
    running = s["iteration"] < target
    depth, first, last, deepest, write_bits, check_bits = _place(s, table)
    write = _slot_mask(write_bits, checkpoints.shape[1])[..., None]
    check = _slot_mask(check_bits, checkpoints.shape[1])
    forward = s["forward"] > 0
    step = torch.where(forward, s["step_size"], -s["step_size"])[:, None]

    # The leaf: the second half step, and its multinomial weight exp(H0 - H).
    momentum = torch.addcmul(momentum, 0.5 * step, grad)
    velocity = metric_type.velocity_from(inverse_mass, momentum)
    leaf_weight = torch.add(log_prob + s["orig_energy"],
                            torch.linalg.vecdot(momentum, velocity), alpha=-0.5)
    finite = leaf_weight >= -settings.max_energy_error  # False for NaN too
    leaf_weight = torch.where(finite, leaf_weight, -torch.inf)
    end = _select(finite, torch.stack((position, momentum, grad, velocity), 1), v["end"])
    momentum, velocity = end[:, 1], end[:, 3]
    subtree_log_weight = torch.logaddexp(s["subtree_log_weight"], leaf_weight)
    take = uniform[:, 0].log() < leaf_weight - subtree_log_weight
    v["subtree_proposal"] = _select(take, end[:, 0::2], v["subtree_proposal"])
    for name, value in (("subtree_proposal_log_prob", log_prob),
                        ("subtree_proposal_log_weight", leaf_weight)):
        s[name] = torch.where(take, value, s[name])
    s["subtree_log_weight"] = subtree_log_weight
    subtree_rho = v["subtree_rho"] + momentum
    v["first_momentum"] = _select(first, momentum, v["first_momentum"])
    v["first_velocity"] = _select(first, velocity, v["first_velocity"])
    s["diverging"] = torch.where(finite, s["diverging"], 1.)
    s["n_steps"] = s["n_steps"] + 1.
    s["sum_accept"] = s["sum_accept"] + leaf_weight.clamp(max=0.).exp()
    s["tree_depth"] = depth + 1.

    # U-turns of the aligned blocks ending here; a block starting at leaf a has
    # momentum sum rho - (rho_a - p_a), with rho_a - p_a stored at a.
    checkpoints = torch.stack((torch.where(write, velocity, checkpoints[0]),
                               torch.where(write, subtree_rho - momentum, checkpoints[1])))
    turned_inside = (_turning(checkpoints[0], velocity, subtree_rho - checkpoints[1])
                     & check).any(0)
    stopped = ~finite | turned_inside

    # A completed subtree joins the tree: biased progressive sampling, then the
    # U-turn of the merged tree and across its halves (Stan's extra checks):
    # (whole tree), (old tree + first new leaf), (start point + new subtree).
    merging = last & ~stopped
    take = merging & (uniform[:, 2].log() < subtree_log_weight - s["log_weight"])
    v["proposal"] = _select(take, v["subtree_proposal"], v["proposal"])
    for name in ("proposal_log_prob", "proposal_log_weight"):
        s[name] = torch.where(take, s["subtree_" + name], s[name])
    left, right, rho = v["left"], v["right"], v["rho"]
    far_velocity = torch.where(forward[:, None], left[:, 3], right[:, 3])
    start = _select(forward, right, left)
    turned = _turning(
        torch.stack((far_velocity, far_velocity, start[:, 3])),
        torch.stack((velocity, v["first_velocity"], velocity)),
        torch.stack((rho + subtree_rho, rho + v["first_momentum"], subtree_rho + start[:, 1]))
    ).any(0)
    s["log_weight"] = torch.where(merging, torch.logaddexp(s["log_weight"], subtree_log_weight),
                                  s["log_weight"])
    v["rho"] = _select(merging, rho + subtree_rho, rho)
    v["right"] = _select(merging & forward, end, right)
    v["left"] = _select(merging & ~forward, end, left)
    v["end"], v["subtree_rho"] = end, subtree_rho

    # A chain whose tree is complete moves to its proposal (and adapts its step size).
    through = stopped | (last & (turned | deepest))
    v["point"] = _select(through, v["proposal"], v["point"])
    s["log_prob"] = torch.where(through, s["proposal_log_prob"], s["log_prob"])
    s["accept_prob"] = torch.where(through, s["sum_accept"] / s["n_steps"], s["accept_prob"])
    s["used_step_size"] = torch.where(through, s["step_size"], s["used_step_size"])
    adapted = dual_averaging_update(s["mu"], s["count"], s["error_avg"], s["log_step_avg"],
                                    s["accept_prob"], *settings[1:])
    adapt = through & adapting
    for name, value in zip(("count", "error_avg", "log_step_avg", "step_size"), adapted):
        s[name] = torch.where(adapt, value, s[name])
    s["iteration"] = s["iteration"] + through.to(log_prob.dtype)
    s["leaf"] = torch.where(through, 0., s["leaf"] + 1.)

    # Chains already through with their transitions keep their state.
    new_vectors, new_scalars = _pack(v, s)
    vectors = _select(running, new_vectors, vectors)
    scalars = _select(running, new_scalars, scalars)
    return vectors, scalars, checkpoints, (scalars[:, SLOT["iteration"]] >= target).all()


def nuts_step(value_and_grad, metric_type, settings, vectors, scalars, checkpoints,
              inverse_mass, momentum_factor, noise, uniform, table, target, adapting):
    """One leapfrog step of every chain's own tree: a pure function of tensors.

    The definition of a step; `run_transitions` runs the same pieces
    pipelined (`step_begin` once, then the gradient and `step_end_begin` in
    turn), so that the model-independent part is one function.

    value_and_grad: x [n, D] -> (log_prob [n], grad [n, D]); metric_type:
    the metric's class (its static `velocity_from`, `momentum_from`);
    settings: `Settings`. vectors, scalars, checkpoints: the chains (see
    `init_chains`); inverse_mass, momentum_factor: the metric's. noise [n, D]:
    standard normal (the momentum of a transition starting here); uniform
    [n, 3]: uniform(0, 1) draws (leaf sampling, direction of a new subtree,
    acceptance of a completed one); table: `leaf_table`; target: 0-d, the
    iteration count at which a chain stops; adapting: 0-d bool, whether an
    ended transition updates the chain's step size by dual averaging.

    Returns the chains' new (vectors, scalars, checkpoints) and a 0-d bool:
    whether every chain has reached `target`. A chain ends a transition when
    its tree turns, a leaf diverges (energy error above `max_energy_error`,
    or not finite: that leaf is dropped, so that no chain carries non-finite
    values) or the tree reaches `max_tree_depth`; it then moves to its
    proposal and counts an iteration.
    """
    vectors, scalars, position, momentum = step_begin(
        metric_type, settings, vectors, scalars, inverse_mass, momentum_factor, noise, uniform,
        table, target)
    log_prob, grad = value_and_grad(position)
    return step_end(metric_type, settings, vectors, scalars, checkpoints, position, momentum,
                    log_prob, grad, inverse_mass, uniform, table, target, adapting)


def step_end_begin(metric_type, settings, vectors, scalars, checkpoints, position, momentum,
                   log_prob, grad, inverse_mass, momentum_factor, uniform, next_noise,
                   next_uniform, table, target, adapting):
    """`step_end` of this leapfrog step, then `step_begin` of the next (pure).

    What `run_transitions` calls between two gradients: the model-independent
    part of a step, compiled once per machine (`NUTS(jit_compile=True)`).
    next_noise [n, D], next_uniform [n, 3]: the next step's random numbers.
    Returns (vectors, scalars, checkpoints, all_through, position, momentum,
    ended): ended is the scalars after `step_end` (what an ended transition
    reports, before the next one starts).
    """
    vectors, ended, checkpoints, all_through = step_end(
        metric_type, settings, vectors, scalars, checkpoints, position, momentum, log_prob, grad,
        inverse_mass, uniform, table, target, adapting)
    vectors, scalars, position, momentum = step_begin(
        metric_type, settings, vectors, ended, inverse_mass, momentum_factor, next_noise,
        next_uniform, table, target)
    return vectors, scalars, checkpoints, all_through, position, momentum, ended


def _end_begin_given_settings(metric_type, *args):
    """`step_end_begin` with the settings in a tensor, the last argument ([5]:
    max_energy_error, target, gamma, t0, kappa), so that one compiled function serves
    every target acceptance rate (and, through `leaf_table`, every maximum tree depth)."""
    *args, values = args
    return step_end_begin(metric_type, Settings(*values.unbind()), *args)


# The pieces `run_transitions` calls: begin (once), then value_and_grad and end_begin in turn.
NUTSStep = namedtuple("NUTSStep", "begin value_and_grad end_begin")


def eager_step(value_and_grad, metric_type, settings):
    """The NUTSStep of `step_begin`, `value_and_grad` and `step_end_begin`, uncompiled."""
    return NUTSStep(functools.partial(step_begin, metric_type, settings), value_and_grad,
                    functools.partial(step_end_begin, metric_type, settings))


def end_begin_layout(metric_type):
    """Which axes of `step_end_begin`'s arguments are the chains (n), the dimension (D), the
    checkpoint slots (T = max_tree_depth) and the rows of the leaf table (L = 2^T - 1)."""
    chains_by_dim, metric = ("n", "D"), ("n", "D", "D") if metric_type.dense else ("n", "D")
    return (("n", None, "D"), ("n", None), (None, "T", "n", "D"), chains_by_dim, chains_by_dim,
            ("n",), chains_by_dim, metric, metric, ("n", None), chains_by_dim, ("n", None),
            ("L", None), (), ())


def init_chains(state, step_size, max_tree_depth, dual_averaging=None):
    """The packed chains for `nuts_step`, at `state` (HMCState [n, D]) with step sizes [n].

    dual_averaging: a `DualAveraging` whose state the chains carry (and
    update, when the step is told to adapt), or None.
    """
    position = state.position
    n, dim = position.shape
    vectors = position.new_zeros((n, N_VECTORS, dim))
    vectors[:, 0], vectors[:, 1] = position, state.grad
    scalars = position.new_zeros((n, len(SCALARS)))
    scalars[:, SLOT["log_prob"]] = state.log_prob
    scalars[:, SLOT["step_size"]] = scalars[:, SLOT["used_step_size"]] = step_size
    if dual_averaging is not None:
        for name in ("mu", "count", "error_avg", "log_step_avg", "step_size"):
            scalars[:, SLOT[name]] = getattr(dual_averaging, name)
    checkpoints = position.new_zeros((2, max_tree_depth, n, dim))
    return vectors, scalars, checkpoints


def chains_state(chains, rng=None):
    """The chains' points as an HMCState (with random streams `rng`), and their current step
    sizes [n]."""
    vectors, scalars, _ = chains
    state = HMCState(vectors[:, 0].clone(), scalars[:, SLOT["log_prob"]].clone(),
                     vectors[:, 1].clone(), rng)
    return state, scalars[:, SLOT["step_size"]].clone()


def _streams(state):
    """The state's random streams, or new ones (from torch's generator) where it has none."""
    if state.rng is not None:
        return state.rng
    return new_streams(state.position.shape[0], state.position.device)


# Each chain's random numbers are a function of its key and its own counts (leapfrog steps
# for the uniforms, transitions for the momentum), not of when the step runs: a chain's
# draws do not depend on where the chains meet (checkpoints) or on the other chains.
# SplitMix64 (Steele, Lea & Flood 2014) of key + index * golden ratio, as int64 arithmetic
# that wraps around (the constants are the uint64 ones as int64); even indices give the
# uniforms, odd ones the normals (Box-Muller, two per number).
_GOLDEN, _MIX1, _MIX2 = -7046029254386353131, -4658895280553007687, -7723592293110705685


def new_streams(n, device=None):
    """Fresh per-chain random streams: int64 [n, 3] (key from torch's generator, leapfrog
    steps and transitions made: 0)."""
    key = torch.randint(-2 ** 63, 2 ** 63 - 1, (n,), dtype=torch.int64, device=device)
    return torch.stack((key, torch.zeros_like(key), torch.zeros_like(key)), 1)


def _shift(z, bits):
    """Logical right shift of int64 `z` (>> is arithmetic on signed integers)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _bits(key, index):
    """64 random bits (int64) for each `index` of the streams with keys `key` [n]: index
    [..., n, m] -> [..., n, m]."""
    z = key[:, None] + index * _GOLDEN
    z = (z ^ _shift(z, 30)) * _MIX1
    z = (z ^ _shift(z, 27)) * _MIX2
    return z ^ _shift(z, 31)


def _uniforms(key, steps, dtype):
    """uniform(0, 1) [k, n, 3] of steps [k, n]: (j + 1/2) / 2^bits, with j of as many random
    bits as the dtype's mantissa holds (exact, never 0 or 1)."""
    z = _bits(key, 2 * (steps[..., None] * 3 + torch.arange(3, device=key.device)))
    bits = round(-math.log2(torch.finfo(dtype).eps))  # 23 for float32
    return (_shift(z, 64 - bits).to(dtype) + 0.5) * 2. ** -bits


def _normals(key, transitions, dim, dtype):
    """Standard normal [k, n, D] of transitions [k, n] (Box-Muller on 32-bit halves)."""
    half = (dim + 1) // 2
    z = _bits(key, 2 * (transitions[..., None] * half + torch.arange(half, device=key.device))
              + 1)
    radius = torch.sqrt(-2. * torch.log((_shift(z, 32).double() + 0.5) * 2. ** -32))
    angle = (2. * math.pi * 2. ** -32) * ((z & 0xFFFFFFFF).double() + 0.5)
    return torch.cat((radius * torch.cos(angle), radius * torch.sin(angle)), -1)[..., :dim] \
        .to(dtype)


def run_transitions(step, chains, metric, table, n_iterations, rng, adapting=False,
                    progress=None, block=None, out=None):
    """Run `step` (a `NUTSStep`) until every chain has made `n_iterations` transitions.

    rng: the chains' random streams (`new_streams`); a chain's k-th leapfrog
    step and k-th transition use the numbers of count k, so that the draws do
    not depend on how the transitions are split into calls. Random numbers are
    made and the chains' ended transitions stored `block` steps at a time
    (default: up to 64, fewer when the chains' points are large, so that a
    block's points stay within about 8 MB at float32).
    progress: called with the number of transitions that every chain has
    newly completed.
    out: a callable out(iteration [m], chain [m], position [m, D], stats
    [m, len(STATS)]) given the transitions ended in each block (iteration
    counted from 0 in this call); default: they are collected and returned.
    Returns the chains, the advanced streams, and (without `out`) the points
    after each transition [n_iterations, n, D] and the transitions' statistics
    [n_iterations, n, len(STATS)].
    """
    vectors, scalars, checkpoints = chains
    n, dim, dtype = vectors.shape[0], vectors.shape[2], vectors.dtype
    target = scalars.new_tensor(float(n_iterations))
    adapting = torch.tensor(bool(adapting), device=scalars.device)
    inverse_mass, factor = metric.inverse_mass, metric.momentum_factor
    positions = stats = None
    if out is None:
        positions = vectors.new_empty((n_iterations, n, dim))
        stats = scalars.new_empty((n_iterations, n, len(STATS)))

        def out(index, which, points, ended):
            positions[index, which] = points
            stats[index, which] = ended
    stat_slots = [SLOT[name] for name in STATS]
    iterations = scalars[:, SLOT["iteration"]]
    if block is None:
        block = max(4, min(64, 2 ** 21 // (n * dim)))
    chain = torch.arange(n, device=vectors.device)
    # Uniforms for the next `block` steps of each chain, momenta for its next 2 * `block`
    # transitions (renewed when a chain could run out within the next block).
    ahead = torch.arange(2 * block, device=vectors.device)[:, None]
    key, steps, done_before = rng.unbind(1)
    step_base, transition_base = steps, done_before
    uniforms = _uniforms(key, step_base + ahead[:block], dtype)
    normals = _normals(key, transition_base + ahead, dim, dtype)
    vectors, scalars, position, momentum = step.begin(
        vectors, scalars, inverse_mass, factor, normals[0], uniforms[0], table, target)
    uniform = uniforms[0]
    done, reported = False, 0
    while not done:
        points, states = [], []
        for _ in range(block):
            log_prob, grad = step.value_and_grad(position)
            # A chain running this step uses its next step count's numbers in the next one,
            # and, should its transition end now, the next transition's momentum.
            count = scalars[:, SLOT["iteration"]]
            steps = steps + (count < target).long()
            if len(points) == block - 1:
                step_base = steps
                uniforms = _uniforms(key, step_base + ahead[:block], dtype)
            next_uniform = uniforms[steps - step_base, chain]
            next_noise = normals[done_before + count.long() + 1 - transition_base, chain]
            vectors, scalars, checkpoints, all_through, position, momentum, ended = \
                step.end_begin(vectors, scalars, checkpoints, position, momentum,
                               log_prob.to(dtype), grad, inverse_mass, factor, uniform,
                               next_noise, next_uniform, table, target, adapting)
            uniform = next_uniform
            points.append(vectors[:, 0])
            states.append(ended)
            if bool(all_through):
                done = True
                break
        # Hand on what the chains that ended a transition in this block reported.
        states = torch.stack(states)
        counts = states[:, :, SLOT["iteration"]]
        ended = counts > torch.cat((iterations[None], counts[:-1]))
        calls, which = ended.nonzero(as_tuple=True)
        out(counts[calls, which].long() - 1, which, torch.stack(points)[calls, which],
            states[calls, which][:, stat_slots])
        iterations = counts[-1]
        made = done_before + iterations.long()
        if int((made + block - transition_base).max()) >= 2 * block:
            transition_base = made + 1
            normals = _normals(key, transition_base + ahead, dim, dtype)
        if progress is not None:
            through = int(iterations.min())
            if through > reported:
                progress(through - reported)
                reported = through
    return ((vectors, scalars, checkpoints), torch.stack((key, steps, made), 1), positions,
            stats)


def _stats_dict(stats):
    """The runner's statistics from `run_transitions`' [k, n, len(STATS)]: name -> [k, n]."""
    s = dict(zip(STATS, stats.unbind(-1)))
    return {"accept_prob": s["accept_prob"], "step_size": s["used_step_size"],
            "diverging": s["diverging"] > 0, "tree_depth": s["tree_depth"].long(),
            "n_steps": s["n_steps"].long(),
            "energy": s["orig_energy"] - s["proposal_log_weight"],
            "orig_energy": s["orig_energy"]}


def nuts_kernel(state, potential, step_size, metric, max_tree_depth=10, max_energy_error=1000.,
                step=None):
    """One NUTS transition of every chain: (state, TransitionInfo).

    state: HMCState ([n_chains, D]); step_size: [n_chains]; metric: a metric
    from `inference.mcmc.metric`. step: a `NUTSStep`, e.g. compiled (see
    `NUTS`); by default the eager one on `potential`. accept_prob is Stan's
    mean acceptance statistic over the trajectory.
    """
    if step is None:
        no_adaptation = (0.8, 0.05, 10, 0.75)  # dual averaging's settings, unused here
        step = eager_step(potential, type(metric),
                          Settings(max_energy_error, *no_adaptation))
    table = leaf_table(max_tree_depth, state.position.device)
    chains = init_chains(state, step_size, max_tree_depth)
    chains, rng, positions, stats = run_transitions(step, chains, metric, table, 1,
                                                    _streams(state), block=8)
    new_state, _ = chains_state(chains, rng)
    s = _stats_dict(stats[0])
    info = TransitionInfo(accept_prob=s["accept_prob"],
                          is_accepted=(new_state.position != state.position).any(-1),
                          diverging=s["diverging"], energy=s["energy"],
                          orig_energy=s["orig_energy"], n_steps=s["n_steps"],
                          tree_depth=s["tree_depth"])
    return new_state, info


class NUTS(HamiltonianSampler):
    """The No-U-Turn sampler with the same interface as `inference.HMC`.

    step_size: initial step size; None finds one with Hoffman's heuristic.
    max_tree_depth: at most 2^max_tree_depth - 1 leapfrog steps per transition.
    adapt_step_size, target_acceptance_rate, gamma, t0, kappa: dual averaging
        (Stan's defaults: gamma=0.05, t0=10, kappa=0.75).
    adapt_mass: 'diag' (default), 'dense', or None.
    jit_compile: compile the step into native code at the first transition:
        the model's gradient for this model (`inference.mcmc.compile`:
        seconds), the tree bookkeeping and step size adaptation once per
        machine and metric type, for every model, chain count, dimension and
        max_tree_depth (`inference.mcmc.shared_compile`: tens of seconds the
        first time, then loaded from disk). Several times faster than eager on
        small and medium models. Falls back to eager, with a warning, where the
        model cannot be traced.
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
        self._shared = {}  # metric type -> SharedCompiledStep

    def _step(self, potential, metric):
        """The `NUTSStep` on `potential`. With `jit_compile`, the model's gradient is
        compiled for this model and `step_end_begin` once per machine, for every model
        (`inference.mcmc.shared_compile`); `step_begin` runs once per call of
        `run_transitions` and stays eager."""
        metric_type = type(metric)
        settings = Settings(self.max_energy_error,
                            self.target_acceptance_rate, self.gamma, self.t0, self.kappa)
        if not self.jit_compile:
            return eager_step(potential, metric_type, settings)
        gradient = self._step_function("gradient", potential, metric,
                                       lambda value_and_grad: lambda x: value_and_grad(x),
                                       shifted(0))
        if metric_type not in self._shared:
            self._shared[metric_type] = SharedCompiledStep(
                functools.partial(_end_begin_given_settings, metric_type),
                key=f"nuts.step_end_begin {metric_type.__qualname__}",
                layout=end_begin_layout(metric_type) + ((None,),),
                modules=(sys.modules[__name__], sys.modules[metric_type.__module__],
                         adaptation),
                perturb=shifted(0), name="NUTS tree step",
                setup="python -m inference.mcmc.precompile --dtype {dtype} --metric "
                      + ("dense" if metric_type.dense else "diag"))
        shared = self._shared[metric_type]
        dtype, device = metric.inverse_mass.dtype, metric.inverse_mass.device
        values = torch.tensor(settings, dtype=dtype, device=device)
        return NUTSStep(functools.partial(step_begin, metric_type, settings), gradient,
                        lambda *args: shared(*args, values))

    def transition(self, state, potential, step_size, metric):
        return nuts_kernel(state, potential, step_size, metric, self.max_tree_depth,
                           self.max_energy_error, self._step(potential, metric))

    def iterate(self, state, potential, step_size, metric, n_iterations, dual_averaging=None,
                progress=None, out=None):
        """`n_iterations` transitions of every chain, each chain at its own pace (see the
        module docstring); with `dual_averaging`, each chain adapts its step size after
        each of its transitions. Returns (state, positions [k, n, D], stats, step_size);
        with `out`, positions and stats go there as they are made (see
        `HamiltonianSampler.iterate`) and come back None."""
        position = state.position
        table = leaf_table(self.max_tree_depth, position.device)
        chains = init_chains(state, step_size, self.max_tree_depth, dual_averaging)
        store = None if out is None else \
            lambda index, which, points, stats: out(index, which, points, _stats_dict(stats))
        chains, rng, positions, stats = run_transitions(
            self._step(potential, metric), chains, metric, table, n_iterations,
            _streams(state), adapting=dual_averaging is not None, progress=progress, out=store)
        state, step_size = chains_state(chains, rng)
        if dual_averaging is not None:
            scalars = chains[1]
            for name in ("count", "error_avg", "log_step_avg", "step_size"):
                setattr(dual_averaging, name, scalars[:, SLOT[name]].clone())
        return state, positions, None if out else _stats_dict(stats), step_size

    def __repr__(self):
        return (f"NUTS(max_tree_depth={self.max_tree_depth}, adapt_step_size="
                f"{self.adapt_step_size}, adapt_mass={self.adapt_mass!r}"
                f"{', jit_compile=True' if self.jit_compile else ''})")
