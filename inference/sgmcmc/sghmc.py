"""Stochastic gradient Hamiltonian Monte Carlo (Chen, Fox & Guestrin, 2014).

In ZhuSuan's parameterization, with `v` the momentum times the step size
(unit mass, so learning_rate = step_size**2 and friction = step_size * C):

    v <- (1 - friction) * v + learning_rate * grad
         + N(0, 2 (friction - variance_estimate) learning_rate)
    q <- q + v

The friction absorbs the extra heat of noisy gradients; `variance_estimate`
(the paper's B-hat = learning_rate * Var[grad] / 2) removes that much
injected noise. `second_order=True` uses the symmetric splitting
(half position step, exact friction decay exp(-friction) split around the
kick, half position step), more accurate at the same cost.
"""
import dataclasses
import math

import torch

from inference.sgmcmc.base import SGMCMC

__all__ = ["SGHMCState", "sghmc_init", "sghmc_kernel", "SGHMC"]


@dataclasses.dataclass(frozen=True)
class SGHMCState:
    position: dict   # name -> tensor
    momentum: dict   # name -> tensor, v (in position units per step)
    step: int = 0


def sghmc_init(position, learning_rate):
    """Momentum drawn from N(0, learning_rate), its stationary distribution."""
    return SGHMCState(position=dict(position),
                      momentum={k: learning_rate ** 0.5 * torch.randn_like(v)
                                for k, v in position.items()})


def sghmc_kernel(state, gradient, learning_rate, friction=0.25, variance_estimate=0.,
                 n_iter_resample_v=20, second_order=True):
    """One SGHMC step: (state, info); info: q, mean_k = mean(v**2) per node (~ learning_rate),
    log_joint."""
    momentum = state.momentum
    if n_iter_resample_v and state.step % n_iter_resample_v == 0:
        momentum = {k: learning_rate ** 0.5 * torch.randn_like(v) for k, v in momentum.items()}
    noise_std = (2 * (friction - variance_estimate) * learning_rate) ** 0.5
    if second_order:
        half_decay = math.exp(-0.5 * friction)
        q_half = {k: q + 0.5 * momentum[k] for k, q in state.position.items()}
        log_joint, grads = gradient(q_half)
        new_v = {k: half_decay * (half_decay * v + learning_rate * grads[k]
                                  + noise_std * torch.randn_like(v))
                 for k, v in momentum.items()}
        new_q = {k: q + 0.5 * new_v[k] for k, q in q_half.items()}
    else:
        log_joint, grads = gradient(state.position)
        new_v = {k: (1 - friction) * v + learning_rate * grads[k] + noise_std * torch.randn_like(v)
                 for k, v in momentum.items()}
        new_q = {k: q + new_v[k] for k, q in state.position.items()}
    info = {"q": new_q, "mean_k": {k: (v ** 2).mean() for k, v in new_v.items()},
            "log_joint": log_joint}
    return SGHMCState(position=new_q, momentum=new_v, step=state.step + 1), info


class SGHMC(SGMCMC):
    """SGHMC with ZhuSuan's interface and defaults.

    `n_iter_resample_v`: redraw the momentum every that many steps (None or 0:
    never). Requires friction >= variance_estimate >= 0.
    """

    def __init__(self, learning_rate=0.1, friction=0.25, variance_estimate=0.,
                 n_iter_resample_v=20, second_order=True):
        super().__init__()
        if not learning_rate > 0:
            raise ValueError(f"`learning_rate` must be positive, got {learning_rate!r}")
        if not 0 <= variance_estimate <= friction:
            raise ValueError(f"need 0 <= variance_estimate <= friction, got "
                             f"variance_estimate={variance_estimate!r}, friction={friction!r}")
        if n_iter_resample_v is not None and (not isinstance(n_iter_resample_v, int)
                                              or n_iter_resample_v < 0):
            raise ValueError(f"`n_iter_resample_v` must be None or a non-negative int, got "
                             f"{n_iter_resample_v!r}")
        self.learning_rate = learning_rate
        self.friction = friction
        self.variance_estimate = variance_estimate
        self.n_iter_resample_v = n_iter_resample_v or 0
        self.second_order = second_order

    def init(self, position):
        return sghmc_init(position, self.learning_rate)

    def kernel(self, state, gradient):
        return sghmc_kernel(state, gradient, self.learning_rate, self.friction,
                            self.variance_estimate, self.n_iter_resample_v, self.second_order)
