"""Nodes without a density: `Empirical` and `Implicit`.

They let a `BayesianNet` hold a value that no tractable density describes:
data whose law is unknown (`Empirical`), or a sample produced by a network,
e.g. a GAN generator's output (`Implicit`). `log_prob` raises, naming the
distribution, so a `log_joint` over such a node fails loudly.
"""
import torch
from torch.distributions import constraints

from ppl.distributions.base import Distribution
from ppl.stochastic_tensor import unwrap

__all__ = ["Empirical", "Implicit"]


class _NoDensity(Distribution):
    has_density = False

    def __init__(self, batch_shape, value_shape, dtype, group_ndims, is_continuous):
        self.params = {}
        self._batch_shape = torch.Size(batch_shape)
        self._value_shape = torch.Size(value_shape)
        self.dtype = dtype
        self.is_continuous = is_continuous
        self.is_reparameterized = False
        self.use_path_derivative = False
        self.check_numerics = False
        self.group_ndims = self._check_group_ndims(group_ndims)

    @property
    def batch_shape(self):
        return self._batch_shape

    @property
    def value_shape(self):
        return self._value_shape

    @property
    def support(self):
        return constraints.real

    def log_prob(self, given):
        raise self._error("has no density: log_prob is undefined (an Empirical or Implicit "
                          "node cannot enter a log-joint; observe it in a model that has one, "
                          "or use an objective that needs only samples)")


def _shape(x):
    return [] if x is None else ([x] if isinstance(x, int) else list(x))


class Empirical(_NoDensity):
    """A node whose values come only from observation: it can't be sampled or scored."""

    def __init__(self, dtype=torch.float32, batch_shape=(), value_shape=None, group_ndims=0,
                 is_continuous=None, **kwargs):
        if is_continuous is None:
            is_continuous = dtype.is_floating_point
        super().__init__(_shape(batch_shape), _shape(value_shape), dtype, group_ndims,
                         is_continuous)

    def sample(self, n_samples=None):
        raise self._error("cannot be sampled: give the node's value in `observed`")


class Implicit(_NoDensity):
    """A node whose value is the given tensor `samples` (e.g. a generator's output).

    `sample()` returns `samples`; with `n_samples` it must equal the size of the
    leading axis the samples already carry (`n_samples=k` means `samples` has shape
    `[k] + batch_shape + value_shape`). Gradients flow through `samples`.
    """

    def __init__(self, samples, value_shape=None, group_ndims=0, **kwargs):
        samples = unwrap(samples)
        if not isinstance(samples, torch.Tensor):
            raise ValueError(f"Implicit: argument `samples` must be a tensor, "
                             f"got {type(samples).__name__}")
        value_shape = _shape(value_shape)
        if len(value_shape) > samples.dim() or (
                value_shape and list(samples.shape[samples.dim() - len(value_shape):])
                != value_shape):
            raise ValueError(f"Implicit: `samples` of shape {tuple(samples.shape)} does not end "
                             f"in value_shape {tuple(value_shape)}")
        self.samples = samples
        batch_shape = samples.shape[:samples.dim() - len(value_shape)]
        super().__init__(batch_shape, value_shape, samples.dtype, group_ndims,
                         samples.is_floating_point())
        self.is_reparameterized = samples.requires_grad

    def sample(self, n_samples=None):
        if n_samples is None:
            return self.samples
        if self.samples.dim() == 0 or self.samples.shape[0] != n_samples:
            raise self._error(f"`n_samples`={n_samples} but the given samples have shape "
                              f"{tuple(self.samples.shape)}; an implicit distribution cannot "
                              f"draw new samples")
        return self.samples
