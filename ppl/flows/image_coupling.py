"""RealNVP's affine coupling on images [.., C, H, W], with checkerboard or channel masks."""
import torch
from torch import nn

from ppl.flows.transform import Transform, image_shape

__all__ = ["ConvAffineCoupling", "conv_net"]


def conv_net(in_channels, hidden_channels, out_channels):
    """Glow's coupling network: 3x3 conv, ReLU, 1x1 conv, ReLU, 3x3 conv (starting at zero)."""
    output = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)
    nn.init.zeros_(output.weight)
    nn.init.zeros_(output.bias)
    return nn.Sequential(nn.Conv2d(in_channels, hidden_channels, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(hidden_channels, hidden_channels, 1), nn.ReLU(), output)


class ConvAffineCoupling(Transform):
    """`y = x * mask + (1 - mask) * (x * exp(s) + t)` with `(s, t) = CNN(x * mask)`, on images.

    `mask="checkerboard"`: the pixels whose `(h + w) % 2 == parity` are kept
    (all channels); `mask="channel"`: the first half of the channels is kept
    (`parity=0`) or the second (`parity=1`). RealNVP alternates parities,
    checkerboard before a squeeze and channel after; Glow uses channel masks.
    `s = scale * tanh(.)` (a learned scale per channel) bounds each layer's
    log-scale. `log |det| = sum(s)`, and the inverse is exact. `hidden` is
    the CNN's width (see `conv_net`); the layer starts as the identity.
    """

    def __init__(self, event_shape, hidden, mask="checkerboard", parity=0):
        shape = image_shape("ConvAffineCoupling", event_shape)
        super().__init__(shape)
        c, h, w = shape
        if parity not in (0, 1):
            raise ValueError(f"ConvAffineCoupling: `parity` must be 0 or 1, got {parity!r}")
        if mask == "checkerboard":
            if h * w < 2:
                raise ValueError(f"ConvAffineCoupling: a checkerboard mask needs at least 2 "
                                 f"pixels, got `event_shape` {tuple(shape)}")
            grid = torch.arange(h)[:, None] + torch.arange(w)[None, :]
            keep = (grid % 2 == parity)[None]
        elif mask == "channel":
            if c < 2:
                raise ValueError(f"ConvAffineCoupling: a channel mask needs at least 2 channels "
                                 f"(one half conditions the other), got `event_shape` "
                                 f"{tuple(shape)}; squeeze first")
            keep = (torch.arange(c) < c // 2) if parity == 0 else (torch.arange(c) >= c // 2)
            keep = keep[:, None, None]
        else:
            raise ValueError(f"ConvAffineCoupling: `mask` must be 'checkerboard' or 'channel', "
                             f"got {mask!r}")
        self.mask_type, self.parity = mask, parity
        self.register_buffer("mask", keep.to(torch.get_default_dtype()))
        self.net = conv_net(c, hidden, 2 * c)
        self.scale = nn.Parameter(torch.ones(c, 1, 1))

    def _log_scale_and_shift(self, kept):
        batch = kept.shape[:-3]
        raw = self.net(kept.reshape((-1,) + tuple(self.event_shape)))
        raw = raw.reshape(batch + raw.shape[1:])
        raw_s, t = raw.chunk(2, dim=-3)
        free = 1 - self.mask
        return self.scale * torch.tanh(raw_s) * free, t * free

    def _forward(self, x):
        s, t = self._log_scale_and_shift(x * self.mask)
        return x * s.exp() + t, self.sum_event(s)

    def _inverse(self, y):
        return self._inverse_and_log_det(y)[0]

    def _inverse_and_log_det(self, y):
        s, t = self._log_scale_and_shift(y * self.mask)
        return (y - t) * (-s).exp(), self.sum_event(s)

    def extra_repr(self):
        return f"event_shape={tuple(self.event_shape)}, mask={self.mask_type!r}, " \
               f"parity={self.parity}"
