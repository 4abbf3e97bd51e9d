"""Per-chain counter-based random streams: NUTS's randomness, drawn outside its step.

Each chain's random numbers are a function of its key and its own counts (leapfrog
steps for the uniforms, transitions for the momentum noise), not of when the step runs:
a chain's draws do not depend on where the chains meet (adaptation windows,
checkpoints), on the other chains, or on whether the step is compiled.
SplitMix64 (Steele, Lea & Flood 2014) of key + index * golden ratio, as int64
arithmetic that wraps around (the constants are the uint64 ones as int64); even
indices give the uniforms, odd ones the normals (Box-Muller, two per number).
"""
import math

import torch

__all__ = ["new_streams", "uniforms", "normals"]

_GOLDEN, _MIX1, _MIX2 = -7046029254386353131, -4658895280553007687, -7723592293110705685
N_UNIFORMS = 3  # per leapfrog step: leaf sampling, a new subtree's direction, its acceptance


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


def uniforms(key, steps, dtype):
    """uniform(0, 1) [k, n, 3] of steps [k, n]: (j + 1/2) / 2^bits, with j of as many random
    bits as the dtype's mantissa holds (exact, never 0 or 1)."""
    offsets = torch.arange(N_UNIFORMS, device=key.device)
    z = _bits(key, 2 * (steps[..., None] * N_UNIFORMS + offsets))
    bits = round(-math.log2(torch.finfo(dtype).eps))  # 23 for float32
    return (_shift(z, 64 - bits).to(dtype) + 0.5) * 2. ** -bits


def normals(key, transitions, dim, dtype):
    """Standard normal [k, n, D] of transitions [k, n] (Box-Muller on 32-bit halves)."""
    half = (dim + 1) // 2
    z = _bits(key, 2 * (transitions[..., None] * half + torch.arange(half, device=key.device))
              + 1)
    radius = torch.sqrt(-2. * torch.log((_shift(z, 32).double() + 0.5) * 2. ** -32))
    angle = (2. * math.pi * 2. ** -32) * ((z & 0xFFFFFFFF).double() + 0.5)
    return torch.cat((radius * torch.cos(angle), radius * torch.sin(angle)), -1)[..., :dim] \
        .to(dtype)
