"""When a NUTS trajectory stops: the generalized no-U-turn criterion and its checkpoints.

A (sub)trajectory with momentum sum rho and end velocities v-, v+ has turned when
rho . v- <= 0 or rho . v+ <= 0 (Betancourt 2017). NUTS checks it for every aligned
block of every subtree as the leaves are built, from checkpoints (as in NumPyro's
iterative NUTS): an even leaf stores its velocity and the running momentum sum in a
slot, an odd leaf checks the blocks that end at it against the slots where they
started. `leaf_table` says, for each leapfrog step of a transition, where it sits in
its tree and which slots it writes and checks.
"""
import functools
from typing import NamedTuple

import torch

__all__ = ["turning", "Checkpoints", "init_checkpoints", "leaf_table", "checkpoint_slots",
           "update_checkpoints"]


def turning(v_a, v_b, rho):
    """Generalized no-U-turn criterion: True where the trajectory turned ([..., n])."""
    return (torch.linalg.vecdot(v_a, rho) <= 0) | (torch.linalg.vecdot(v_b, rho) <= 0)


class Checkpoints(NamedTuple):
    """The U-turn checkpoints of each chain's subtree: velocity and momentum sum (before the
    leaf) at the first leaf of each aligned block, [T, n, D] each (T = max_tree_depth)."""

    velocity: torch.Tensor
    momentum_sum: torch.Tensor


def init_checkpoints(max_tree_depth, position):
    zeros = position.new_zeros((max_tree_depth,) + position.shape)
    return Checkpoints(zeros, zeros.clone())


def checkpoint_slots(leaf):
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
    (`checkpoint_slots`, vectorized over all leaves).
    The depth enters the step only through this table and the checkpoints'
    [T, n, D], so that one compiled step serves every `max_tree_depth`.
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


def _slot_mask(bits, n_slots):
    """Bit masks [n] as booleans [n_slots, n]: whether each chain's mask has slot k."""
    slots = torch.arange(n_slots, device=bits.device)[:, None]
    return (bits[None] >> slots) & 1 > 0


def update_checkpoints(checkpoints, write_bits, check_bits, velocity, momentum, momentum_sum):
    """Store this leaf where it starts blocks, and check the blocks that end at it.

    velocity, momentum: the leaf's [n, D]; momentum_sum: the subtree's, this leaf included;
    write_bits, check_bits: the slots (`leaf_table`). A block starting at leaf a has
    momentum sum rho - (rho_a - p_a), with rho_a - p_a stored at a. Returns (checkpoints,
    turned [n]: whether a block ending here turned)."""
    n_slots = checkpoints.velocity.shape[0]
    write = _slot_mask(write_bits, n_slots)[..., None]
    check = _slot_mask(check_bits, n_slots)
    checkpoints = Checkpoints(torch.where(write, velocity, checkpoints.velocity),
                              torch.where(write, momentum_sum - momentum,
                                          checkpoints.momentum_sum))
    turned = (turning(checkpoints.velocity, velocity, momentum_sum - checkpoints.momentum_sum)
              & check).any(0)
    return checkpoints, turned
