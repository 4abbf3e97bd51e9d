"""Nodes without a (proper) density: `Empirical`, `Implicit` and `ImproperUniform`.

`Empirical` and `Implicit` let a `BayesianNet` hold a value that no tractable
density describes: data whose law is unknown (`Empirical`), or a sample produced
by a network, e.g. a GAN generator's output (`Implicit`). Their `log_prob`
raises, naming the distribution, so a `log_joint` over such a node fails loudly.

`ImproperUniform` is the flat "prior" of a Stan parameter declared without one
(`real<lower=0> sigma;`): log-density 0 on its support. MCMC learns the
constraint from the node's `support`; any proper prior on it can be added as a
`bn.factor`.
"""
import torch
from torch.distributions import biject_to, constraints

from ppl.distributions.base import StandaloneDistribution
from ppl.stochastic_tensor import unwrap

__all__ = ["Empirical", "Implicit", "ImproperUniform"]


class _NoDensity(StandaloneDistribution):
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


class ImproperUniform(StandaloneDistribution):
    """The flat improper density on `support`: `log_prob` is 0 for every value in it.

    `support` is a univariate torch constraint (e.g. `constraints.positive`,
    `constraints.interval(0., 1.)`); the node has `batch_shape` copies of it.
    There is nothing to draw from: `sample()` returns an arbitrary point of the
    support, the image under `biject_to(support)` of Uniform(-2, 2) noise (Stan's
    default initialization), so a model can still be run forward, e.g. to
    initialize MCMC chains.
    """

    def __init__(self, support=constraints.real, batch_shape=(), dtype=None, group_ndims=0):
        if not isinstance(support, constraints.Constraint):
            raise ValueError(f"ImproperUniform: `support` must be a torch.distributions "
                             f"constraint, got {type(support).__name__}")
        if support.is_discrete or support.event_dim != 0:
            raise ValueError(f"ImproperUniform: `support` must be a continuous univariate "
                             f"constraint, got {support}")
        self.params = {}
        self._support = support
        self._batch_shape = torch.Size(_shape(batch_shape))
        self._value_shape = torch.Size()
        self.dtype = dtype or torch.get_default_dtype()
        self.is_reparameterized = False
        self.use_path_derivative = False
        self.check_numerics = False
        self.group_ndims = self._check_group_ndims(group_ndims)

    @property
    def support(self):
        return self._support

    def _default_given_dtype(self):
        return self.dtype

    def sample(self, n_samples=None):
        """A point of the support (not a random draw of a distribution): see the class doc."""
        if n_samples is not None and (not isinstance(n_samples, int) or isinstance(n_samples, bool)
                                      or n_samples < 1):
            raise self._error(f"`n_samples` must be None or a positive int, got {n_samples!r}")
        shape = torch.Size([] if n_samples is None else [n_samples]) + self.batch_shape
        noise = torch.empty(shape, dtype=self.dtype).uniform_(-2., 2.)
        return biject_to(self.support)(noise)

    def _log_prob(self, given):
        """Zeros of shape `(...) + batch_shape[:len(batch_shape) - group_ndims]`.

        The zeros are `0 * given`, so the result is a function of `given` whose
        gradient (zero) autograd can take.
        """
        log_p = (given * 0.).expand(torch.broadcast_shapes(given.shape, self.batch_shape))
        if self.group_ndims:
            log_p = log_p.sum(dim=tuple(range(-self.group_ndims, 0)))
        return log_p
