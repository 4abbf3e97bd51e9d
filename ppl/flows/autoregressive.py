"""An affine autoregressive transform driven by MADE: IAF or MAF direction."""
import torch
from torch import nn

from ppl.flows.made import MADE
from ppl.flows.transform import Transform

__all__ = ["MaskedAutoregressive"]


class MaskedAutoregressive(Transform):
    """`y_i = x_i * exp(a_i) + m_i`, with `(m_i, a_i)` from a MADE of the earlier coordinates.

    `sampling` says which side the MADE reads, hence which direction is fast:

    - "parallel" (default; inverse autoregressive flow, Kingma et al. 2016):
      `(m, a) = MADE(x)`. `forward` (base -> value: sampling, and scoring
      one's own samples) is one pass; `inverse` takes `dim` sequential passes.
      The choice for variational posteriors.
    - "sequential" (masked autoregressive flow, Papamakarios et al. 2017):
      `(m, a) = MADE(y)`. `forward` takes `dim` sequential passes; `inverse`
      (scoring given values, e.g. data) is one pass. The choice for density
      estimation.

    Both inverses are exact: pass k fixes the k-th coordinate in `order`.
    `log|det| = sum(a)`. `order` (a permutation of `range(dim)`) is the
    autoregressive order; reverse it between stacked layers. The MADE's output
    layer starts at zero: the layer starts as the identity. `max_log_scale`
    (keyword, default None: unbounded) soft-clamps each log-scale to
    (-max, max) by `a / (1 + |a| / max)`, as zuko's affine layers do (theirs:
    max = -log(1e-3)), against runaway scales.
    """

    def __init__(self, dim, hidden, order=None, sampling="parallel", *, max_log_scale=None):
        super().__init__(dim)
        if sampling not in ("parallel", "sequential"):
            raise ValueError(f"MaskedAutoregressive: `sampling` must be 'parallel' or "
                             f"'sequential', got {sampling!r}")
        if max_log_scale is not None and not max_log_scale > 0:
            raise ValueError(f"MaskedAutoregressive: `max_log_scale` must be None or positive, "
                             f"got {max_log_scale!r}")
        self.sampling = sampling
        self.max_log_scale = max_log_scale
        self.made = MADE(dim, hidden, n_params=2, order=order)
        nn.init.zeros_(self.made.output.weight)
        nn.init.zeros_(self.made.output.bias)

    def _shift_and_log_scale(self, z):
        shift, log_scale = self.made(z).unbind(-2)
        if self.max_log_scale is not None:
            log_scale = log_scale / (1 + log_scale.abs() / self.max_log_scale)
        return shift, log_scale

    def _forward(self, x):
        if self.sampling == "parallel":
            shift, log_scale = self._shift_and_log_scale(x)
            return x * log_scale.exp() + shift, log_scale.sum(-1)
        y = torch.zeros_like(x)
        for _ in range(self.dim):
            shift, log_scale = self._shift_and_log_scale(y)
            y = x * log_scale.exp() + shift
        return y, log_scale.sum(-1)

    def _inverse(self, y):
        return self._inverse_and_log_det(y)[0]

    def _inverse_and_log_det(self, y):
        if self.sampling == "sequential":
            shift, log_scale = self._shift_and_log_scale(y)
            return (y - shift) * (-log_scale).exp(), log_scale.sum(-1)
        x = torch.zeros_like(y)
        for _ in range(self.dim):
            shift, log_scale = self._shift_and_log_scale(x)
            x = (y - shift) * (-log_scale).exp()
        return x, log_scale.sum(-1)

    def extra_repr(self):
        return f"dim={self.dim}, sampling={self.sampling!r}"
