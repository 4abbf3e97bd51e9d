"""Reshaping transforms (log |det| = 0): RealNVP's squeeze, and a plain reshape."""
from torch.distributions.transforms import ReshapeTransform

from ppl.flows.transform import Transform, image_shape

__all__ = ["Squeeze", "Reshape"]


class Squeeze(Transform):
    """RealNVP's squeeze: each 2x2 patch of pixels becomes 4 channels, [C, H, W] -> [4C, H/2, W/2].

    Used data side -> latent side: in a base -> value list it appears as
    `Inverse(Squeeze(...))`. H and W must be even.
    """

    def __init__(self, event_shape):
        c, h, w = image_shape("Squeeze", event_shape)
        if h % 2 or w % 2:
            raise ValueError(f"Squeeze: `event_shape` must have an even height and width (it "
                             f"folds 2x2 patches into channels), got {(c, h, w)}")
        super().__init__((c, h, w), (4 * c, h // 2, w // 2))

    def _forward(self, x):
        c, h, w = self.event_shape
        batch = x.shape[:-3]
        y = x.reshape(batch + (c, h // 2, 2, w // 2, 2))
        n = len(batch)
        y = y.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)
        return y.reshape(batch + tuple(self.out_shape)), x.new_zeros(batch)

    def _inverse(self, y):
        c, h, w = self.event_shape
        batch = y.shape[:-3]
        n = len(batch)
        x = y.reshape(batch + (c, 2, 2, h // 2, w // 2))
        x = x.permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)
        return x.reshape(batch + (c, h, w))

    def _inverse_and_log_det(self, y):
        return self._inverse(y), y.new_zeros(y.shape[:-3])


class Reshape(Transform):
    """Values of `event_shape` reshaped to `out_shape` (torch's `ReshapeTransform`), e.g.
    a flat base [784] into images [1, 28, 28]."""

    def __init__(self, event_shape, out_shape):
        super().__init__(event_shape, out_shape)
        self.reshape = ReshapeTransform(self.event_shape, self.out_shape)

    def _forward(self, x):
        return self.reshape(x), x.new_zeros(x.shape[:x.dim() - len(self.event_shape)])

    def _inverse(self, y):
        return self.reshape.inv(y)

    def _inverse_and_log_det(self, y):
        return self._inverse(y), y.new_zeros(y.shape[:y.dim() - len(self.out_shape)])
