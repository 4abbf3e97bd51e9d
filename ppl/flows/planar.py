"""The planar flow of Rezende & Mohamed (2015): `y = x + u_hat tanh(w^T x + b)`."""
import torch
import torch.nn.functional as F
from torch import nn

from ppl.flows.transform import Transform

__all__ = ["Planar"]


class Planar(Transform):
    """`y = x + u_hat * tanh(w^T x + b)`, invertible thanks to the constraint on `u`.

    `u_hat = u + (m(w^T u) - w^T u) w / ||w||^2` with `m(a) = -1 + softplus(a)`
    makes `w^T u_hat > -1`, hence `1 + tanh'(.) w^T u_hat > 0`: the map is
    invertible, but not in closed form. A `FlowDistribution` made of planar
    layers can therefore score only its own samples (their log-density is
    cached when drawn), which is what variational inference needs.
    """

    has_inverse = False

    def __init__(self, dim):
        super().__init__(dim)
        bound = dim ** -0.5
        self.u = nn.Parameter(torch.empty(dim).uniform_(-bound, bound))
        self.w = nn.Parameter(torch.empty(dim).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.zeros(()))

    def u_hat(self):
        """`u` projected so that `w^T u_hat > -1` (the invertibility constraint)."""
        wu = self.w @ self.u
        return self.u + (F.softplus(wu) - 1 - wu) * self.w / (self.w @ self.w)

    def _forward(self, x):
        u_hat = self.u_hat()
        h = torch.tanh(x @ self.w + self.b)
        y = x + h.unsqueeze(-1) * u_hat
        log_abs_det = torch.log1p((1 - h ** 2) * (self.w @ u_hat))
        return y, log_abs_det

    def _inverse(self, y):
        raise NotImplementedError(
            "Planar has no closed-form inverse: a flow with planar layers can only score "
            "the samples it drew itself (FlowDistribution caches their log-density); use "
            "AffineCoupling or MaskedAutoregressive layers to score arbitrary values")
