"""Batch normalization as a bijection (RealNVP, MAF), with its log |det|."""
import torch
from torch import nn

from ppl.flows.transform import Transform, channel_moments, channel_shape

__all__ = ["BatchNorm"]


class BatchNorm(Transform):
    """Data side -> latent side `x = (y - mean) / sqrt(var + eps) * exp(log_gamma) + beta`.

    Per channel (the first event axis). `inverse` (scoring data) uses the
    batch's mean and variance in training mode, updating the running averages
    (`momentum` as in `nn.BatchNorm1d`), and the running averages in eval
    mode; `forward` (sampling) always uses the running averages. The log |det|
    treats the statistics as constants, as in Dinh et al. (2017) and
    Papamakarios et al. (2017): per channel, `-log_gamma + log(var + eps) / 2`
    times the pixels per channel.
    """

    def __init__(self, event_shape, momentum=0.1, eps=1e-5):
        super().__init__(event_shape)
        if not 0 < momentum <= 1:
            raise ValueError(f"BatchNorm: `momentum` must be in (0, 1], got {momentum!r}")
        if not eps > 0:
            raise ValueError(f"BatchNorm: `eps` must be positive (a zero-variance channel "
                             f"would make the map non-invertible), got {eps!r}")
        shape = channel_shape(self.event_shape)
        self.momentum, self.eps = momentum, eps
        self.log_gamma = nn.Parameter(torch.zeros(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))

    def _log_det(self, var, value):
        per_channel = self.dim // self.event_shape[0]
        batch = value.shape[:value.dim() - len(self.event_shape)]
        return ((0.5 * torch.log(var + self.eps) - self.log_gamma).sum()
                * per_channel).expand(batch)

    def _forward(self, x):
        mean, var = self.running_mean, self.running_var
        y = (x - self.beta) * (-self.log_gamma).exp() * torch.sqrt(var + self.eps) + mean
        return y, self._log_det(var, x)

    def _inverse(self, y):
        return self._inverse_and_log_det(y)[0]

    def _inverse_and_log_det(self, y):
        if self.training:
            mean, var = channel_moments(y, self.event_shape)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        x = (y - mean) * torch.rsqrt(var + self.eps) * self.log_gamma.exp() + self.beta
        return x, self._log_det(var, y)
