"""Glow's activation normalization: a per-channel affine map with data-dependent init."""
import torch
from torch import nn

from ppl.flows.transform import Transform, channel_moments, channel_shape

__all__ = ["ActNorm"]


class ActNorm(Transform):
    """`y = x * exp(log_scale) + bias`, one scale and bias per channel (the first event axis).

    Data-dependent initialization (Kingma & Dhariwal 2018): the first
    `inverse` while in training mode (the first batch of data scored) sets
    `bias` and `log_scale` to that batch's per-channel mean and log standard
    deviation, so the latent side starts with zero mean and unit variance per
    channel; the `initialized` buffer records it (and travels in checkpoints).
    log |det| = sum(log_scale) times the pixels per channel.
    """

    def __init__(self, event_shape, eps=1e-6):
        super().__init__(event_shape)
        shape = channel_shape(self.event_shape)
        self.log_scale = nn.Parameter(torch.zeros(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.eps = eps
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, y):
        """Set bias and scale from data `y` [..., *event_shape] (zero mean, unit variance)."""
        mean, var = channel_moments(y, self.event_shape)
        self.bias.copy_(mean)
        self.log_scale.copy_(0.5 * torch.log(var + self.eps))
        self.initialized.fill_(True)

    def _log_det(self, value):
        per_channel = self.dim // self.event_shape[0]
        batch = value.shape[:value.dim() - len(self.event_shape)]
        return (self.log_scale.sum() * per_channel).expand(batch)

    def _forward(self, x):
        return x * self.log_scale.exp() + self.bias, self._log_det(x)

    def _inverse(self, y):
        return self._inverse_and_log_det(y)[0]

    def _inverse_and_log_det(self, y):
        if self.training and not bool(self.initialized):
            self.initialize(y.detach())
        return (y - self.bias) * (-self.log_scale).exp(), self._log_det(y)
