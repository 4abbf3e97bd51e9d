"""`Transform`: the interface every flow transform implements."""
import torch
from torch import nn

__all__ = ["Transform"]


class Transform(nn.Module):
    """An invertible map of R^dim applied to the last axis, with its log |det Jacobian|.

    `forward(x)` takes `x` of shape `(...) + [dim]` and returns `(y, log_abs_det)`
    with `y` shaped like `x` and `log_abs_det` of shape `(...)`.
    `inverse(y)` returns `x`. Subclasses implement `_forward` and, when a
    closed-form inverse exists, `_inverse`; those without set
    `has_inverse = False`.
    """

    has_inverse = True

    def __init__(self, dim):
        super().__init__()
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"{type(self).__name__}: `dim` must be a positive int, got {dim!r}")
        self.dim = dim

    def forward(self, x):
        return self._forward(self._check_input(x, "x"))

    def inverse(self, y):
        return self._inverse(self._check_input(y, "y"))

    def _forward(self, x):
        raise NotImplementedError

    def _inverse(self, y):
        raise NotImplementedError(f"{type(self).__name__} has no closed-form inverse")

    def _check_input(self, value, name):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise TypeError(f"{type(self).__name__}: `{name}` must be a floating-point tensor, "
                            f"got {getattr(value, 'dtype', type(value).__name__)}")
        if value.dim() == 0 or value.shape[-1] != self.dim:
            raise ValueError(f"{type(self).__name__}: `{name}` must have shape (...) + "
                             f"[{self.dim}] (the flow acts on the last axis), got "
                             f"{tuple(value.shape)}")
        return value

    def extra_repr(self):
        return f"dim={self.dim}"


def hidden_sizes(owner, hidden):
    """`hidden` (an int, or a sequence of ints: one per hidden layer; empty: a linear map)
    as a list."""
    sizes = [hidden] if isinstance(hidden, int) else list(hidden)
    if any(not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in sizes):
        raise ValueError(f"{owner}: `hidden` must be a positive int or a sequence of positive "
                         f"ints (one per hidden layer; empty for none), got {hidden!r}")
    return sizes
