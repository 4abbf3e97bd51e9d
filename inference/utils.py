"""ZhuSuan's numerical helpers (`zs.log_sum_exp`, `zs.log_mean_exp`), on torch tensors."""
import math

import torch

__all__ = ["log_sum_exp", "log_mean_exp"]


def _dims(x, axis):
    if axis is None:
        return tuple(range(x.dim()))
    return tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)


def log_sum_exp(x, axis=None, keepdims=False):
    """log sum exp(x) over `axis` (an int, a list of ints, or None: all axes), computed stably."""
    x = torch.as_tensor(x)
    return torch.logsumexp(x, dim=_dims(x, axis), keepdim=keepdims)


def log_mean_exp(x, axis=None, keepdims=False):
    """log mean exp(x) over `axis` (an int, a list of ints, or None: all axes), computed stably."""
    x = torch.as_tensor(x)
    dims = _dims(x, axis)
    count = math.prod(x.shape[d] for d in dims)
    return torch.logsumexp(x, dim=dims, keepdim=keepdims) - math.log(count)
