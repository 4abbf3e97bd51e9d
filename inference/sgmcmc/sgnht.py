"""Stochastic gradient Nose-Hoover thermostat (Ding et al., 2014).

SGHMC whose friction `alpha` is a dynamic variable, the thermostat, that
drives the kinetic energy to its target: it grows while the mean of v**2
exceeds `learning_rate` (too hot, e.g. from gradient noise) and shrinks
otherwise, so the gradient noise need not be known. In ZhuSuan's
parameterization:

    v     <- (1 - alpha) * v + learning_rate * grad + N(0, 2 variance_extra learning_rate)
    q     <- q + v
    alpha <- alpha + tune_rate * (mean_k - learning_rate),  mean_k = v**2 (or its mean)

With `use_vector_alpha=True` (ZhuSuan's default) each element has its own
thermostat and mean_k is v**2 elementwise, so chains stay independent;
with False one scalar thermostat per latent follows the mean of v**2 over
all its elements (chains included). `second_order=True` splits the step
symmetrically.
"""
import dataclasses

import torch

from inference.sgmcmc.base import SGMCMC

__all__ = ["SGNHTState", "sgnht_init", "sgnht_kernel", "SGNHT"]


@dataclasses.dataclass(frozen=True)
class SGNHTState:
    position: dict   # name -> tensor
    momentum: dict   # name -> tensor, v
    alpha: dict      # name -> the thermostat (friction): per element, or a scalar
    step: int = 0


def sgnht_init(position, learning_rate, variance_extra, use_vector_alpha=True):
    """Momentum from N(0, learning_rate); thermostats start at `variance_extra`."""
    def start(value):
        like = value if use_vector_alpha else value.new_zeros(())
        return torch.full_like(like, variance_extra)
    return SGNHTState(position=dict(position),
                      momentum={k: learning_rate ** 0.5 * torch.randn_like(v)
                                for k, v in position.items()},
                      alpha={k: start(v) for k, v in position.items()})


def sgnht_kernel(state, gradient, learning_rate, variance_extra=0., tune_rate=1.,
                 n_iter_resample_v=0, second_order=True, use_vector_alpha=True):
    """One SGNHT step: (state, info); info: q, mean_k, alpha (per node, as ZhuSuan), log_joint."""
    def kinetic(v):
        return v ** 2 if use_vector_alpha else (v ** 2).mean()

    momentum = state.momentum
    if n_iter_resample_v and state.step % n_iter_resample_v == 0:
        momentum = {k: learning_rate ** 0.5 * torch.randn_like(v) for k, v in momentum.items()}
    noise_std = (2 * variance_extra * learning_rate) ** 0.5
    if second_order:
        q_half = {k: q + 0.5 * momentum[k] for k, q in state.position.items()}
        alpha_half = {k: alpha + 0.5 * tune_rate * (kinetic(momentum[k]) - learning_rate)
                      for k, alpha in state.alpha.items()}
        log_joint, grads = gradient(q_half)
        new_v = {}
        for k, v in momentum.items():
            half_decay = torch.exp(-0.5 * alpha_half[k])
            new_v[k] = half_decay * (half_decay * v + learning_rate * grads[k]
                                     + noise_std * torch.randn_like(v))
        new_q = {k: q + 0.5 * new_v[k] for k, q in q_half.items()}
        mean_k = {k: kinetic(v) for k, v in new_v.items()}
        new_alpha = {k: alpha + 0.5 * tune_rate * (mean_k[k] - learning_rate)
                     for k, alpha in alpha_half.items()}
    else:
        log_joint, grads = gradient(state.position)
        new_v = {k: (1 - state.alpha[k]) * v + learning_rate * grads[k]
                 + noise_std * torch.randn_like(v) for k, v in momentum.items()}
        new_q = {k: q + new_v[k] for k, q in state.position.items()}
        mean_k = {k: kinetic(v) for k, v in new_v.items()}
        new_alpha = {k: alpha + tune_rate * (mean_k[k] - learning_rate)
                     for k, alpha in state.alpha.items()}
    info = {"q": new_q, "mean_k": mean_k, "alpha": new_alpha, "log_joint": log_joint}
    new = SGNHTState(position=new_q, momentum=new_v, alpha=new_alpha, step=state.step + 1)
    return new, info


class SGNHT(SGMCMC):
    """SGNHT with ZhuSuan's signature and defaults.

    `variance_extra`: injected noise (and the thermostats' starting value);
    `tune_rate`: how fast the thermostats react; `n_iter_resample_v`: redraw
    the momentum every that many steps (None or 0: never);
    `use_vector_alpha`: one thermostat per element (True) or per latent.
    """

    def __init__(self, learning_rate=0.1, variance_extra=0., tune_rate=1.,
                 n_iter_resample_v=None, second_order=True, use_vector_alpha=True):
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
        if not isinstance(use_vector_alpha, bool):
            raise ValueError(f"`use_vector_alpha` must be True or False, got "
                             f"{use_vector_alpha!r}")
        self.learning_rate = learning_rate
        self.variance_extra = variance_extra
        self.tune_rate = tune_rate
        self.n_iter_resample_v = n_iter_resample_v or 0
        self.second_order = second_order
        self.use_vector_alpha = use_vector_alpha

    def init(self, position):
        return sgnht_init(position, self.learning_rate, self.variance_extra,
                          self.use_vector_alpha)

    def kernel(self, state, gradient):
        return sgnht_kernel(state, gradient, self.learning_rate, self.variance_extra,
                            self.tune_rate, self.n_iter_resample_v, self.second_order,
                            self.use_vector_alpha)
