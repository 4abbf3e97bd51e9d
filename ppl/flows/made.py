"""MADE (Germain et al. 2015): an MLP whose outputs are autoregressive in its inputs."""
import torch
import torch.nn.functional as F
from torch import nn

from ppl.flows.transform import hidden_sizes

__all__ = ["MADE"]


class _MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask."""

    def __init__(self, n_in, n_out, mask):
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Maps `x` (shape (...) + [dim]) to `n_params` outputs per coordinate, (...) + [n_params, dim].

    Output `[..., k, i]` depends only on the inputs that come before `i` in
    `order` (a permutation of `range(dim)`; default: natural order), which the
    masks enforce: an input's degree is its position in `order` plus one, a
    hidden unit of degree `d` sees the inputs of degree <= d, and an output
    sees the hidden units of degree strictly less than its coordinate's.
    Hidden degrees cycle through 1..dim-1 when a layer is at least dim-1 wide
    (every degree represented); a narrower layer spreads them evenly over
    1..dim-1, so that every input reaches some hidden unit. With `hidden=()` the map is linear
    (ZhuSuan's `linear_ar`).
    """

    def __init__(self, dim, hidden, n_params=2, order=None):
        super().__init__()
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"MADE: `dim` must be a positive int, got {dim!r}")
        self.dim = dim
        self.n_params = n_params
        order = list(range(dim)) if order is None else [int(i) for i in order]
        if sorted(order) != list(range(dim)):
            raise ValueError(f"MADE: `order` must be a permutation of range({dim}), got {order}")
        self.order = order
        degrees = torch.empty(dim, dtype=torch.long)
        degrees[torch.tensor(order)] = torch.arange(1, dim + 1)
        layers, previous = [], degrees
        for width in hidden_sizes("MADE", hidden):
            if width >= dim - 1:
                current = torch.arange(width) % max(dim - 1, 1) + 1
            else:
                current = torch.linspace(1, dim - 1, width).round().long()
            mask = current[:, None] >= previous[None, :]
            layers += [_MaskedLinear(len(previous), width, mask), nn.ReLU()]
            previous = current
        out_degrees = degrees.repeat(n_params)
        self.net = nn.Sequential(*layers, _MaskedLinear(len(previous), n_params * dim,
                                                        out_degrees[:, None] > previous[None, :]))

    @property
    def output(self):
        """The masked output layer (registered once, as the last layer of `net`)."""
        return self.net[-1]

    def forward(self, x):
        out = self.net(x)
        return out.reshape(out.shape[:-1] + (self.n_params, self.dim))

    def extra_repr(self):
        return f"dim={self.dim}, n_params={self.n_params}, order={self.order}"
