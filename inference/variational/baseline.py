"""`MovingAverage`: the moving-average baseline that `reinforce()` keeps across steps."""
import torch
from torch import nn

__all__ = ["MovingAverage"]


class MovingAverage(nn.Module):
    """An exponential moving average of a scalar, kept as buffers (checkpointed with its owner).

    `reinforce()` subtracts it from the learning signal as a baseline: the
    value used at a step is the average of *earlier* steps only, so the
    baseline is independent of the current samples and the estimator stays
    unbiased.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("value", torch.zeros(()))
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.long))

    def update(self, x, decay):
        """Fold the mean of `x` in (first update: take it); non-finite values are skipped.

        Written without Python branches on values, so a recorded step
        (`inference.TracedStep`) replays it exactly.
        """
        x = x.detach().mean().to(self.value)
        finite = torch.isfinite(x)
        average = torch.where(self.n_updates == 0, x, self.value * decay + (1. - decay) * x)
        self.value.copy_(torch.where(finite, average, self.value))
        self.n_updates.add_(finite.to(self.n_updates.dtype))
