"""RealNVP's multi-scale architecture: half the channels leave the flow at each scale."""
import torch
from torch import nn

from ppl.flows.transform import Transform, image_shape

__all__ = ["FactorOut"]


class FactorOut(Transform):
    """Images [C, H, W] from a flat base vector [C * H * W], through `transforms` on half of it.

    Data side -> latent side (as in RealNVP): the first `C - C // 2` channels
    are factored out (they are latent variables from here on) and the other
    `C // 2` go on through `transforms`, the next, coarser scale. In the
    base -> value direction `forward(x)` reads `x` [..., C*H*W] as the
    factored-out channels followed by the inner flow's base values, runs the
    inner `transforms` (a sequence, base -> value, ending at shape
    [C // 2, H, W]) and concatenates the channels. log |det| is the inner
    flow's. Nest `FactorOut`s for more scales.
    """

    def __init__(self, event_shape, transforms):
        c, h, w = image_shape("FactorOut", event_shape)
        if c < 2:
            raise ValueError(f"FactorOut: `event_shape` needs at least 2 channels to factor "
                             f"half out, got {(c, h, w)}; squeeze first")
        super().__init__(c * h * w, (c, h, w))
        self.kept = c - c // 2
        self.transforms = nn.ModuleList(transforms)
        inner_out = (c // 2, h, w)
        if not len(self.transforms) or tuple(self.transforms[-1].out_shape) != inner_out:
            got = tuple(self.transforms[-1].out_shape) if len(self.transforms) else "nothing"
            raise ValueError(f"FactorOut: `transforms` must end at shape {inner_out} (the "
                             f"channels that go on), got {got}")
        for i in range(1, len(self.transforms)):
            if self.transforms[i].event_shape != self.transforms[i - 1].out_shape:
                raise ValueError(f"FactorOut: transforms[{i}] reads "
                                 f"{tuple(self.transforms[i].event_shape)} but transforms[{i - 1}] "
                                 f"writes {tuple(self.transforms[i - 1].out_shape)}")
        self.inner_event_shape = self.transforms[0].event_shape
        if self.inner_event_shape.numel() != (c // 2) * h * w:
            raise ValueError(f"FactorOut: transforms[0] reads {tuple(self.inner_event_shape)}, "
                             f"which does not hold {(c // 2) * h * w} values")

    def _forward(self, x):
        c, h, w = self.out_shape
        batch = x.shape[:-1]
        n_out = self.kept * h * w
        y = x[..., n_out:].reshape(batch + tuple(self.inner_event_shape))
        log_det = x.new_zeros(batch)
        for t in self.transforms:
            y, step = t(y)
            log_det = log_det + step
        factored = x[..., :n_out].reshape(batch + (self.kept, h, w))
        return torch.cat([factored, y], dim=-3), log_det

    def _inverse_and_log_det(self, y):
        batch = y.shape[:-3]
        factored, x = y[..., :self.kept, :, :], y[..., self.kept:, :, :]
        log_det = y.new_zeros(batch)
        for t in reversed(self.transforms):
            x, step = t.inverse_and_log_det(x)
            log_det = log_det + step
        return torch.cat([factored.reshape(batch + (-1,)), x.reshape(batch + (-1,))], -1), log_det

    def _inverse(self, y):
        return self._inverse_and_log_det(y)[0]

    def extra_repr(self):
        return f"event_shape={tuple(self.out_shape)}, factored_out={self.kept}"
