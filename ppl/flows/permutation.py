"""A fixed permutation of the last axis (log |det| = 0), between autoregressive layers."""
import torch

from ppl.flows.transform import Transform

__all__ = ["Permutation"]


class Permutation(Transform):
    """`y = x[..., permutation]`: `permutation` is a permutation of `range(dim)`, or
    "reverse", or "random" (drawn from torch's generator, or `generator`)."""

    def __init__(self, dim, permutation="reverse", generator=None):
        super().__init__(dim)
        if isinstance(permutation, str):
            if permutation == "reverse":
                permutation = torch.arange(dim - 1, -1, -1)
            elif permutation == "random":
                permutation = torch.randperm(dim, generator=generator)
            else:
                raise ValueError(f"Permutation: `permutation` must be 'reverse', 'random' or a "
                                 f"permutation of range({dim}), got {permutation!r}")
        permutation = torch.as_tensor(permutation)
        if permutation.shape != (dim,) or permutation.is_floating_point() \
                or not torch.equal(permutation.sort().values, torch.arange(dim)):
            raise ValueError(f"Permutation: `permutation` must be a permutation of "
                             f"range({dim}), got {permutation.tolist()}")
        self.register_buffer("permutation", permutation.long())
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def _forward(self, x):
        return x[..., self.permutation], x.new_zeros(x.shape[:-1])

    def _inverse(self, y):
        return y[..., self.inverse_permutation]

    def _inverse_and_log_det(self, y):
        return self._inverse(y), y.new_zeros(y.shape[:-1])
