"""`Transform`: the interface every flow transform implements, and `Inverse`."""
import torch
from torch import nn

__all__ = ["Transform", "Inverse"]


def _shape(owner, name, shape):
    """`shape` (an int or a sequence of positive ints) as a torch.Size."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        shape = torch.Size(shape)
    except (TypeError, ValueError):
        shape = None
    if shape is None or len(shape) == 0 or any(s < 1 for s in shape):
        raise ValueError(f"{owner}: `{name}` must be a positive int or a shape of positive "
                         f"ints, got {shape!r}")
    return shape


class Transform(nn.Module):
    """An invertible map from values of `event_shape` to values of `out_shape`, with its
    log |det Jacobian|, applied to the trailing axes.

    `forward(x)` takes `x` of shape `(...) + event_shape` and returns
    `(y, log_abs_det)` with `y` of shape `(...) + out_shape` and `log_abs_det`
    of shape `(...)`. `inverse(y)` returns `x`; `inverse_and_log_det(y)`
    returns `(x, log_abs_det)` with the forward's log |det| at that `x`, which
    is what scoring a value needs (one pass where a subclass can, see
    `_inverse_and_log_det`). In a `FlowDistribution` the forward direction
    runs from the base to the value.

    `event_shape`: an int `dim` (a flow on vectors, the last axis) or a shape
    such as `(C, H, W)` for images; `out_shape` defaults to it (only reshaping
    transforms differ). `dim` is the number of coordinates, `event_shape.numel()`.
    Subclasses implement `_forward` and, when a closed-form inverse exists,
    `_inverse` (and optionally `_inverse_and_log_det`); those without set
    `has_inverse = False`.
    """

    has_inverse = True

    def __init__(self, event_shape, out_shape=None):
        super().__init__()
        name = type(self).__name__
        if isinstance(event_shape, bool) or isinstance(event_shape, int) and event_shape < 1:
            raise ValueError(f"{name}: `dim` must be a positive int, got {event_shape!r}")
        self.event_shape = _shape(name, "event_shape", event_shape)
        self.out_shape = self.event_shape if out_shape is None \
            else _shape(name, "out_shape", out_shape)
        if self.out_shape.numel() != self.event_shape.numel():
            raise ValueError(f"{name}: `out_shape` {tuple(self.out_shape)} must hold as many "
                             f"coordinates as `event_shape` {tuple(self.event_shape)}")
        self.dim = self.event_shape.numel()

    def forward(self, x):
        return self._forward(self._check_input(x, "x", self.event_shape))

    def inverse(self, y):
        return self._inverse(self._check_input(y, "y", self.out_shape))

    def inverse_and_log_det(self, y):
        """`(x, log_abs_det)`: `x = inverse(y)` and the forward's log |det J| at `x`."""
        return self._inverse_and_log_det(self._check_input(y, "y", self.out_shape))

    def _forward(self, x):
        raise NotImplementedError

    def _inverse(self, y):
        raise NotImplementedError(f"{type(self).__name__} has no closed-form inverse")

    def _inverse_and_log_det(self, y):
        x = self._inverse(y)
        return x, self._forward(x)[1]

    def _check_input(self, value, name, shape):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise TypeError(f"{type(self).__name__}: `{name}` must be a floating-point tensor, "
                            f"got {getattr(value, 'dtype', type(value).__name__)}")
        k = len(shape)
        if value.dim() < k or value.shape[value.dim() - k:] != shape:
            what = f"[{shape[0]}] (the flow acts on the last axis)" if k == 1 \
                else f"{list(shape)} (the flow acts on the last {k} axes)"
            raise ValueError(f"{type(self).__name__}: `{name}` must have shape (...) + {what}, "
                             f"got {tuple(value.shape)}")
        return value

    def sum_event(self, values, shape=None):
        """Sum `values` of shape (...) + event shape over the event axes: (...)."""
        k = len(self.event_shape if shape is None else shape)
        return values.sum(dim=tuple(range(-k, 0)))

    def extra_repr(self):
        if len(self.event_shape) == 1 and self.out_shape == self.event_shape:
            return f"dim={self.dim}"
        shapes = f"event_shape={tuple(self.event_shape)}"
        if self.out_shape != self.event_shape:
            shapes += f", out_shape={tuple(self.out_shape)}"
        return shapes


class Inverse(Transform):
    """`transform` run backwards: forward is its inverse, with the negated log |det|.

    E.g. `Inverse(Squeeze((1, 28, 28)))` maps [4, 14, 14] back to [1, 28, 28],
    so it can sit in a base -> value list (as `torch.distributions`' `.inv`).
    """

    def __init__(self, transform):
        if not isinstance(transform, Transform):
            raise TypeError(f"Inverse: `transform` must be a ppl.flows.Transform, got "
                            f"{type(transform).__name__}")
        if not transform.has_inverse:
            raise ValueError(f"Inverse: {type(transform).__name__} has no closed-form inverse")
        super().__init__(transform.out_shape, transform.event_shape)
        self.transform = transform

    def _forward(self, x):
        y, log_det = self.transform.inverse_and_log_det(x)
        return y, -log_det

    def _inverse(self, y):
        return self.transform(y)[0]

    def _inverse_and_log_det(self, y):
        x, log_det = self.transform(y)
        return x, -log_det

    def extra_repr(self):
        return ""


def hidden_sizes(owner, hidden):
    """`hidden` (an int, or a sequence of ints: one per hidden layer; empty: a linear map)
    as a list."""
    sizes = [hidden] if isinstance(hidden, int) else list(hidden)
    if any(not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in sizes):
        raise ValueError(f"{owner}: `hidden` must be a positive int or a sequence of positive "
                         f"ints (one per hidden layer; empty for none), got {hidden!r}")
    return sizes


def image_shape(owner, shape):
    """`shape` as a torch.Size (C, H, W), or a ValueError naming `event_shape`."""
    size = _shape(owner, "event_shape", shape)
    if len(size) != 3:
        raise ValueError(f"{owner}: `event_shape` must be an image shape (C, H, W), "
                         f"got {tuple(size)}")
    return size


def channel_shape(event_shape):
    """The shape of per-channel parameters for values of `event_shape`: the first event
    axis is the channel axis ([C] for vectors of C features, [C, 1, 1] for images)."""
    return torch.Size([event_shape[0]] + [1] * (len(event_shape) - 1))


def channel_moments(value, event_shape):
    """Mean and (biased) variance per channel over every other axis, each of
    `channel_shape(event_shape)`."""
    k = len(event_shape)
    axes = [a for a in range(value.dim()) if a != value.dim() - k]
    var, mean = torch.var_mean(value, dim=axes, keepdim=True, correction=0)
    shape = channel_shape(event_shape)
    return mean.reshape(shape), var.reshape(shape)
