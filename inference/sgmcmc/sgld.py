"""Stochastic gradient Langevin dynamics (Welling & Teh, 2011).

    q <- q + learning_rate / 2 * grad log p(q) + N(0, learning_rate)

the Euler discretization of the Langevin diffusion, with the full-data
gradient replaced by a minibatch estimate. `learning_rate` is the time step.
"""
import dataclasses

import torch

from inference.sgmcmc.base import SGMCMC

__all__ = ["SGLDState", "sgld_init", "sgld_kernel", "SGLD"]


@dataclasses.dataclass(frozen=True)
class SGLDState:
    position: dict   # name -> tensor
    step: int = 0


def sgld_init(position):
    return SGLDState(position=dict(position))


def sgld_kernel(state, gradient, learning_rate, add_noise=True):
    """One SGLD step: (state, info) from `state` and `gradient(position)`; info: q, log_joint."""
    log_joint, grads = gradient(state.position)
    new = {}
    for name, q in state.position.items():
        q = q + 0.5 * learning_rate * grads[name]
        if add_noise:
            q = q + learning_rate ** 0.5 * torch.randn_like(q)
        new[name] = q
    return SGLDState(position=new, step=state.step + 1), {"q": new, "log_joint": log_joint}


class SGLD(SGMCMC):
    """SGLD with ZhuSuan's interface: `SGLD(learning_rate).sample(meta_bn, observed, latent)`.

    `add_noise=False` (keyword only) gives stochastic gradient ascent on the
    log joint.
    """

    def __init__(self, learning_rate=0.1, *, add_noise=True):
        super().__init__()
        if not learning_rate > 0:
            raise ValueError(f"`learning_rate` must be positive, got {learning_rate!r}")
        self.learning_rate = learning_rate
        self.add_noise = add_noise

    def init(self, position):
        return sgld_init(position)

    def kernel(self, state, gradient):
        return sgld_kernel(state, gradient, self.learning_rate, self.add_noise)
