"""Glow's invertible 1x1 convolution, LU-parametrized: a learned mixing of channels."""
import torch
from torch import nn

from ppl.flows.transform import Transform, image_shape

__all__ = ["InvertibleConv1x1"]


class InvertibleConv1x1(Transform):
    """`y[c] = sum_c' W[c, c'] x[c']` at every pixel of images [.., C, H, W].

    With `lu=True` (Glow's LU form) `W = P L (U + diag(sign * exp(log_s)))`:
    P a fixed permutation, L unit lower-triangular, U strictly upper, so
    `log |det| = H * W * sum(log_s)` costs O(C) and W stays invertible. With
    `lu=False`, W is a free matrix and `log |det|` comes from `slogdet`.
    `weight`: the initial W (default: a random rotation, seeded by torch's
    generator); it must be invertible.
    """

    def __init__(self, event_shape, lu=True, weight=None):
        shape = image_shape("InvertibleConv1x1", event_shape)
        super().__init__(shape)
        c = shape[0]
        if weight is None:
            weight = torch.linalg.qr(torch.randn(c, c))[0]
        weight = torch.as_tensor(weight, dtype=torch.get_default_dtype())
        if weight.shape != (c, c) or not torch.isfinite(weight).all() \
                or torch.linalg.matrix_rank(weight) < c:
            raise ValueError(f"InvertibleConv1x1: `weight` must be an invertible [{c}, {c}] "
                             f"matrix (a 1x1 convolution over {c} channels), got shape "
                             f"{tuple(weight.shape)} of rank "
                             f"{int(torch.linalg.matrix_rank(weight)) if weight.dim() == 2 else 0}")
        self.lu = bool(lu)
        if self.lu:
            p, lower, upper = torch.linalg.lu(weight)
            diagonal = upper.diagonal()
            self.register_buffer("permutation", p)
            self.register_buffer("sign", diagonal.sign())
            self.lower = nn.Parameter(lower.tril(-1))
            self.upper = nn.Parameter(upper.triu(1))
            self.log_s = nn.Parameter(diagonal.abs().log())
        else:
            self.weight = nn.Parameter(weight.clone())

    def matrix(self):
        """The current W [C, C] and log |det W|."""
        if not self.lu:
            return self.weight, torch.linalg.slogdet(self.weight)[1]
        eye = torch.eye(self.event_shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower.tril(-1) + eye
        upper = self.upper.triu(1) + torch.diag(self.sign * self.log_s.exp())
        return self.permutation @ lower @ upper, self.log_s.sum()

    def _mix(self, w, x):
        return torch.einsum("ij,...jhw->...ihw", w, x)

    def _log_det(self, log_det_w, value):
        _, h, w = self.event_shape
        return (log_det_w * h * w).expand(value.shape[:-3])

    def _forward(self, x):
        w, log_det_w = self.matrix()
        return self._mix(w, x), self._log_det(log_det_w, x)

    def _inverse(self, y):
        return self._inverse_and_log_det(y)[0]

    def _inverse_and_log_det(self, y):
        w, log_det_w = self.matrix()
        return self._mix(torch.linalg.inv(w), y), self._log_det(log_det_w, y)

    def extra_repr(self):
        return f"event_shape={tuple(self.event_shape)}, lu={self.lu}"
