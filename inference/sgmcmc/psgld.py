"""Preconditioned SGLD (Li et al., 2016) with an RMSprop preconditioner.

    V <- decay * V + (1 - decay) * grad**2
    G  = 1 / (epsilon + sqrt(V))                      (elementwise)
    q <- q + learning_rate / 2 * G * grad + N(0, learning_rate * G)

Steps are scaled per coordinate to the gradients' size. As in the paper's
practical version, the Gamma(q) correction term (the divergence of G) is
left out: it vanishes as V settles.
"""
import dataclasses

import torch

from inference.sgmcmc.base import SGMCMC

__all__ = ["PSGLDState", "psgld_init", "psgld_kernel", "PSGLD"]


@dataclasses.dataclass(frozen=True)
class PSGLDState:
    position: dict      # name -> tensor
    square_avg: dict    # name -> running mean of grad**2, V
    step: int = 0


def psgld_init(position):
    return PSGLDState(position=dict(position),
                      square_avg={k: torch.zeros_like(v) for k, v in position.items()})


def psgld_kernel(state, gradient, learning_rate, decay=0.9, epsilon=1e-3, add_noise=True):
    """One pSGLD step: (state, info); info: q, log_joint, preconditioner (mean G per node)."""
    log_joint, grads = gradient(state.position)
    new_q, new_v, mean_g = {}, {}, {}
    for name, q in state.position.items():
        grad = grads[name]
        v = decay * state.square_avg[name] + (1 - decay) * grad ** 2
        g = 1 / (epsilon + v.sqrt())
        q = q + 0.5 * learning_rate * g * grad
        if add_noise:
            q = q + (learning_rate * g).sqrt() * torch.randn_like(q)
        new_q[name], new_v[name], mean_g[name] = q, v, g.mean()
    new = PSGLDState(position=new_q, square_avg=new_v, step=state.step + 1)
    return new, {"q": new_q, "log_joint": log_joint, "preconditioner": mean_g}


class PSGLD(SGMCMC):
    """pSGLD, `PSGLD(learning_rate, preconditioner, preconditioner_hparams)` as in ZhuSuan.

    `preconditioner`: only 'rms'. ZhuSuan's `preconditioner_hparams`
    (anything with `decay` and `epsilon` fields, or a dict) sets the RMSprop
    running average's decay and the preconditioner's damping, which can also
    be given as `decay`, `epsilon` (keyword only, as is `add_noise`).
    """

    def __init__(self, learning_rate=0.1, preconditioner="rms", preconditioner_hparams=None, *,
                 decay=0.9, epsilon=1e-3, add_noise=True):
        super().__init__()
        if preconditioner != "rms":
            raise ValueError(f"`preconditioner` must be 'rms', got {preconditioner!r}")
        if preconditioner_hparams is not None:
            hparams = preconditioner_hparams
            if not isinstance(hparams, dict):
                hparams = hparams._asdict()
            decay, epsilon = hparams["decay"], hparams["epsilon"]
        if not learning_rate > 0:
            raise ValueError(f"`learning_rate` must be positive, got {learning_rate!r}")
        if not 0 <= decay < 1:
            raise ValueError(f"`decay` must be in [0, 1), got {decay!r}")
        if not epsilon > 0:
            raise ValueError(f"`epsilon` must be positive, got {epsilon!r}")
        self.learning_rate = learning_rate
        self.add_noise = add_noise
        self.preconditioner = preconditioner
        self.decay = decay
        self.epsilon = epsilon

    def init(self, position):
        return psgld_init(position)

    def kernel(self, state, gradient):
        return psgld_kernel(state, gradient, self.learning_rate, self.decay, self.epsilon,
                            self.add_noise)
