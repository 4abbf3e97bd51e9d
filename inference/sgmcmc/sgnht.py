"""Stochastic gradient Nose-Hoover thermostat (Ding et al., 2014).

SGHMC whose friction `xi` is a dynamic variable, the thermostat, that drives
the kinetic energy to its target: it grows while mean(v**2) exceeds
`learning_rate` (too hot, e.g. from gradient noise) and shrinks otherwise, so
the gradient noise need not be known. In ZhuSuan's parameterization:

    v  <- (1 - xi) * v + learning_rate * grad + N(0, 2 variance_extra learning_rate)
    q  <- q + v
    xi <- xi + tune_rate * (v**2 - learning_rate)

with one thermostat per element (ZhuSuan's `use_vector_xi=True`), so chains
stay independent. `second_order=True` splits the step symmetrically.
"""
import dataclasses

import torch

from inference.sgmcmc.base import SGMCMC

__all__ = ["SGNHTState", "sgnht_init", "sgnht_kernel", "SGNHT"]


@dataclasses.dataclass(frozen=True)
class SGNHTState:
    position: dict   # name -> tensor
    momentum: dict   # name -> tensor, v
    xi: dict         # name -> tensor, the thermostat (friction) per element
    step: int = 0


def sgnht_init(position, learning_rate, variance_extra):
    return SGNHTState(position=dict(position),
                      momentum={k: learning_rate ** 0.5 * torch.randn_like(v)
                                for k, v in position.items()},
                      xi={k: torch.full_like(v, variance_extra) for k, v in position.items()})


def sgnht_kernel(state, gradient, learning_rate, variance_extra=0., tune_rate=1.,
                 n_iter_resample_v=0, second_order=True):
    """One SGNHT step: (state, info); info has mean_k = mean(v**2) and mean xi per node."""
    momentum = state.momentum
    if n_iter_resample_v and state.step % n_iter_resample_v == 0:
        momentum = {k: learning_rate ** 0.5 * torch.randn_like(v) for k, v in momentum.items()}
    noise_std = (2 * variance_extra * learning_rate) ** 0.5
    if second_order:
        q_half = {k: q + 0.5 * momentum[k] for k, q in state.position.items()}
        xi_half = {k: xi + 0.5 * tune_rate * (momentum[k] ** 2 - learning_rate)
                   for k, xi in state.xi.items()}
        log_joint, grads = gradient(q_half)
        new_v = {}
        for k, v in momentum.items():
            half_decay = torch.exp(-0.5 * xi_half[k])
            new_v[k] = half_decay * (half_decay * v + learning_rate * grads[k]
                                     + noise_std * torch.randn_like(v))
        new_q = {k: q + 0.5 * new_v[k] for k, q in q_half.items()}
        new_xi = {k: xi + 0.5 * tune_rate * (new_v[k] ** 2 - learning_rate)
                  for k, xi in xi_half.items()}
    else:
        log_joint, grads = gradient(state.position)
        new_v = {k: (1 - state.xi[k]) * v + learning_rate * grads[k]
                 + noise_std * torch.randn_like(v) for k, v in momentum.items()}
        new_q = {k: q + new_v[k] for k, q in state.position.items()}
        new_xi = {k: xi + tune_rate * (new_v[k] ** 2 - learning_rate)
                  for k, xi in state.xi.items()}
    info = {"log_joint": log_joint,
            "mean_k": {k: (v ** 2).mean() for k, v in new_v.items()},
            "xi": {k: xi.mean() for k, xi in new_xi.items()}}
    new = SGNHTState(position=new_q, momentum=new_v, xi=new_xi, step=state.step + 1)
    return new, info


class SGNHT(SGMCMC):
    """SGNHT with ZhuSuan's interface and defaults.

    `variance_extra`: injected noise (and the thermostat's starting value);
    `tune_rate`: how fast the thermostat reacts; `n_iter_resample_v`: redraw
    the momentum every that many steps (None or 0: never).
    """

    def __init__(self, learning_rate=0.1, variance_extra=0., tune_rate=1.,
                 n_iter_resample_v=None, second_order=True):
        super().__init__()
        if not learning_rate > 0:
            raise ValueError(f"`learning_rate` must be positive, got {learning_rate!r}")
        if not variance_extra >= 0:
            raise ValueError(f"`variance_extra` must be non-negative, got {variance_extra!r}")
        if not tune_rate > 0:
            raise ValueError(f"`tune_rate` must be positive, got {tune_rate!r}")
        if n_iter_resample_v is not None and (not isinstance(n_iter_resample_v, int)
                                              or n_iter_resample_v < 0):
            raise ValueError(f"`n_iter_resample_v` must be None or a non-negative int, got "
                             f"{n_iter_resample_v!r}")
        self.learning_rate = learning_rate
        self.variance_extra = variance_extra
        self.tune_rate = tune_rate
        self.n_iter_resample_v = n_iter_resample_v or 0
        self.second_order = second_order

    def init(self, position):
        return sgnht_init(position, self.learning_rate, self.variance_extra)

    def kernel(self, state, gradient):
        return sgnht_kernel(state, gradient, self.learning_rate, self.variance_extra,
                            self.tune_rate, self.n_iter_resample_v, self.second_order)
