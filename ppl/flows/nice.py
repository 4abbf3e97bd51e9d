"""NICE (Dinh et al. 2015): additive coupling layers and the final diagonal scaling."""
import torch
from torch import nn

from ppl.flows.coupling import coupling_mask, mlp
from ppl.flows.transform import Transform

__all__ = ["AdditiveCoupling", "Scaling"]


class AdditiveCoupling(Transform):
    """`y = x + m(x * mask) * (1 - mask)`: volume preserving (log |det| = 0), exact inverse.

    `mask` / `parity` choose the kept coordinates as in `AffineCoupling`;
    `hidden` sizes the ReLU MLP `m` (its output layer starts at zero, so the
    layer starts as the identity). NICE stacks four with alternating parity
    and ends with a `Scaling`.
    """

    def __init__(self, dim, hidden, parity=0, mask=None):
        super().__init__(dim)
        self.register_buffer("mask", coupling_mask("AdditiveCoupling", dim, parity, mask))
        self.net = mlp("AdditiveCoupling", dim, hidden, dim)

    def _shift(self, kept):
        return self.net(kept) * (1 - self.mask)

    def _forward(self, x):
        return x + self._shift(x * self.mask), x.new_zeros(x.shape[:-1])

    def _inverse(self, y):
        return y - self._shift(y * self.mask)

    def _inverse_and_log_det(self, y):
        return self._inverse(y), y.new_zeros(y.shape[:-1])


class Scaling(Transform):
    """`y = x * exp(s)`, one learned log-scale per coordinate of `event_shape` (NICE's
    last layer, which lets a volume-preserving stack reach any density's volume).
    log |det| = sum(s); `s` starts at zero."""

    def __init__(self, event_shape):
        super().__init__(event_shape)
        self.log_scale = nn.Parameter(torch.zeros(self.event_shape))

    def _log_det(self, x):
        return self.log_scale.sum().expand(x.shape[:x.dim() - len(self.event_shape)])

    def _forward(self, x):
        return x * self.log_scale.exp(), self._log_det(x)

    def _inverse(self, y):
        return y * (-self.log_scale).exp()

    def _inverse_and_log_det(self, y):
        return self._inverse(y), self._log_det(y)
