"""The affine coupling layer of RealNVP (Dinh et al. 2017)."""
import torch
from torch import nn

from ppl.flows.transform import Transform, hidden_sizes

__all__ = ["AffineCoupling", "coupling_mask", "mlp"]


def coupling_mask(owner, dim, parity, mask):
    """The 0/1 float mask of a vector coupling layer: `mask` as given (shape [dim],
    both values present) or, when None, the coordinates whose index has parity `parity`.
    A ValueError names `owner` (the layer) unless dim >= 2."""
    if dim < 2:
        raise ValueError(f"{owner}: `dim` must be at least 2 (one part conditions the other), "
                         f"got {dim}")
    if mask is None:
        if parity not in (0, 1):
            raise ValueError(f"{owner}: `parity` must be 0 or 1, got {parity!r}")
        return (torch.arange(dim) % 2 == parity).to(torch.get_default_dtype())
    mask = torch.as_tensor(mask)
    if mask.shape != (dim,) or not ((mask == 0) | (mask == 1)).all() \
            or mask.all() or not mask.any():
        raise ValueError(f"{owner}: `mask` must be a 0/1 tensor of shape [{dim}] "
                         f"holding both values, got {mask.tolist()}")
    return mask.to(torch.get_default_dtype())


def mlp(owner, n_in, hidden, n_out):
    """A ReLU MLP n_in -> hidden... -> n_out whose output layer starts at zero."""
    sizes = [n_in, *hidden_sizes(owner, hidden)]
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    output = nn.Linear(sizes[-1], n_out)
    nn.init.zeros_(output.weight)
    nn.init.zeros_(output.bias)
    return nn.Sequential(*layers, output)


class AffineCoupling(Transform):
    """Keeps the masked coordinates and affinely maps the others given them.

    `y = x * exp(s(x * mask)) + t(x * mask)`, where `s` and `t` vanish on the
    masked coordinates, so `y[mask] = x[mask]`, `log|det| = sum(s)` and the
    inverse `x = (y - t(y * mask)) * exp(-s(y * mask))` is exact.
    `s = scale * tanh(.)` (a learned per-coordinate `scale`) keeps each layer's
    log-scale bounded, as in RealNVP.

    The mask is `mask` (a 0/1 tensor of shape [dim] holding both values) or,
    when not given, the coordinates whose index has parity `parity` (0 keeps
    the even ones). Alternate parities between layers so every coordinate is
    transformed. `hidden` sizes the MLP computing `s` and `t` (an int or one
    int per hidden layer). The output layer starts at zero: the layer starts
    as the identity.
    """

    def __init__(self, dim, hidden, parity=0, mask=None):
        super().__init__(dim)
        self.register_buffer("mask", coupling_mask("AffineCoupling", dim, parity, mask))
        self.net = mlp("AffineCoupling", dim, hidden, 2 * dim)
        self.scale = nn.Parameter(torch.ones(dim))

    def _log_scale_and_shift(self, kept):
        """`s` and `t` of shape (...) + [dim], zero on the masked coordinates."""
        raw_s, t = self.net(kept).chunk(2, dim=-1)
        free = 1 - self.mask
        return self.scale * torch.tanh(raw_s) * free, t * free

    def _forward(self, x):
        s, t = self._log_scale_and_shift(x * self.mask)
        return x * s.exp() + t, s.sum(-1)

    def _inverse(self, y):
        return self._inverse_and_log_det(y)[0]

    def _inverse_and_log_det(self, y):
        s, t = self._log_scale_and_shift(y * self.mask)
        return (y - t) * (-s).exp(), s.sum(-1)

    def extra_repr(self):
        return f"dim={self.dim}, mask={self.mask.int().tolist()}"
