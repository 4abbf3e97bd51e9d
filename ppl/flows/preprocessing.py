"""Image preprocessing with exact log |det|: dequantization and RealNVP's logit transform.

    u = dequantize(images)                     # uint8 [n, ...] -> [0, 1), (pixel + U) / 256
    flow = FlowDistribution(base, [..., Inverse(Logit((1, 28, 28)))])
    bits_per_dim(flow.log_prob(u), 784)        # -log2 p of the discrete pixels (a bound)

A density `p(u)` on the unit cube is a density `p(u) / 256^D` of the
dequantized pixels `pixel + U` in [0, 256)^D, whose negative log2 per dim
upper-bounds the discrete data's bits/dim (Theis et al. 2016).
"""
import math

import torch
from torch.distributions.transforms import AffineTransform, ComposeTransform, SigmoidTransform

from ppl.flows.transform import Transform

__all__ = ["Logit", "dequantize", "bits_per_dim"]


class Logit(Transform):
    """`y = logit(alpha + (1 - 2 alpha) u)` elementwise, from the unit cube to R^D.

    `alpha` (0 <= alpha < 1/2) keeps pixels at 0 and 1 at finite values:
    RealNVP uses 0.05, MAF 1e-6. Built from torch's `AffineTransform` and
    `SigmoidTransform().inv`, whose log |det| it sums over `event_shape`.
    Its forward runs data -> logit space, so in a base -> value list it sits
    last as `Inverse(Logit(...))`. A `u` outside [0, 1] (outside (0, 1) when
    alpha = 0) is an error naming `x`.
    """

    def __init__(self, event_shape, alpha=1e-6):
        super().__init__(event_shape)
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) \
                or not 0 <= alpha < 0.5:
            raise ValueError(f"Logit: `alpha` must be a number in [0, 0.5) (0.5 would map every "
                             f"pixel to 0: not invertible), got {alpha!r}")
        self.alpha = float(alpha)
        self.map = ComposeTransform([AffineTransform(self.alpha, 1 - 2 * self.alpha),
                                     SigmoidTransform().inv])

    def _check_domain(self, u):
        low, high = u.min(), u.max()
        outside = (low < 0) | (high > 1) if self.alpha > 0 else (low <= 0) | (high >= 1)
        if bool(outside) or not bool(torch.isfinite(low) & torch.isfinite(high)):
            interval = "[0, 1]" if self.alpha > 0 else "(0, 1) (alpha=0)"
            raise ValueError(f"Logit: `x` must lie in {interval} (pixels scaled to the unit "
                             f"interval, e.g. by `dequantize`), got values in "
                             f"[{low.item():.4g}, {high.item():.4g}]")

    def _forward(self, x):
        self._check_domain(x)
        y = self.map(x)
        return y, self.sum_event(self.map.log_abs_det_jacobian(x, y))

    def _inverse(self, y):
        return self.map.inv(y)

    def _inverse_and_log_det(self, y):
        x = self.map.inv(y)
        return x, self.sum_event(self.map.log_abs_det_jacobian(x, y))

    def extra_repr(self):
        return f"event_shape={tuple(self.event_shape)}, alpha={self.alpha}"


def dequantize(images, n_bins=256, generator=None, dtype=None):
    """Integer pixels `images` (0..n_bins-1) plus uniform noise, scaled to [0, 1):
    `(images + U) / n_bins`, U ~ Uniform[0, 1) elementwise."""
    images = torch.as_tensor(images)
    if images.is_floating_point() or images.long().min() < 0 or images.long().max() >= n_bins:
        raise ValueError(f"dequantize: `images` must hold integers in 0..{n_bins - 1}, got "
                         f"{images.dtype} values in [{images.min().item()}, "
                         f"{images.max().item()}]")
    dtype = dtype or torch.get_default_dtype()
    noise = torch.rand(images.shape, generator=generator, dtype=dtype, device=images.device)
    return (images.to(dtype) + noise) / n_bins


def bits_per_dim(log_prob, n_dims, n_bins=256):
    """Bits per dimension of dequantized pixels from `log_prob`, the log-density of
    values in the unit cube ([0, 1)^n_dims): `(-log_prob + n_dims log n_bins) / (n_dims ln 2)`."""
    return (-log_prob + n_dims * math.log(n_bins)) / (n_dims * math.log(2))
