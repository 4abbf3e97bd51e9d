"""`Autoregressive`: p(x) = prod_i p(x_i | x_<i), scored in one pass, sampled in order.

    net = ppl.flows.MADE(784, [500], n_params=1)        # a masked MLP
    p = Autoregressive(net, "bernoulli", [784])
    x = p.sample(16)          # [16, 784]: 784 passes of `net`, one dimension each
    p.log_prob(x)             # [16]: one pass of `net` scores every dimension

The conditional network `net` maps a batch of values `[B] + value_shape` to
the parameters of every dimension's conditional, `[B, n_params] +
value_shape`, where the parameters of dimension `i` depend only on the
dimensions before `i` in `order` (a masked MLP, a masked convolution, a causal
dilated convolution, NADE's shared-weight recurrence). Dimensions are counted
in the flattened `value_shape` (raster order for images). The per-dimension
`family` reads those parameters: Bernoulli logits (`n_params` 1), 256-way
categorical logits (256), or a mixture of Gaussians (3 x components: logits,
means, log-scales). That each output sees only earlier inputs is the
network's promise; the tests check it through the Jacobian. A network whose
pass costs far more than one dimension's conditional (NADE) may also define
`net.conditional(x, i) -> [B, n_params]`, dimension `i`'s parameters alone,
which sampling then calls instead of a full pass per dimension.

Shapes follow every ppl distribution: `sample(n_samples)` gives
`[n_samples] + batch_shape + value_shape`, `log_prob(given)` takes `(...) +
batch_shape + value_shape` and sums the last `group_ndims` batch axes.
"""
import math

import torch
import torch.nn.functional as F
from torch.distributions import constraints

from ppl.distributions.base import StandaloneDistribution

__all__ = ["Autoregressive", "BernoulliFamily", "CategoricalFamily", "GaussianMixtureFamily"]


class BernoulliFamily:
    """x_i in {0, 1} with p(x_i = 1) = sigmoid(logit): one parameter per dimension."""

    name = "Bernoulli"
    n_params = 1
    is_continuous = False
    support = constraints.boolean

    def log_prob(self, params, x):
        """params [B, 1] + shape, x [B] + shape -> [B] + shape."""
        return -F.binary_cross_entropy_with_logits(params[:, 0], x, reduction="none")

    def sample(self, params):
        """params [B, 1] -> [B]."""
        return torch.bernoulli(torch.sigmoid(params[:, 0]))


class CategoricalFamily:
    """x_i in {0, ..., n_values - 1} (e.g. 8-bit pixel intensities): logits per value."""

    name = "Categorical"
    is_continuous = False

    def __init__(self, n_values=256):
        if not isinstance(n_values, int) or isinstance(n_values, bool) or n_values < 2:
            raise ValueError(f"CategoricalFamily: `n_values` must be an int >= 2, got "
                             f"{n_values!r}")
        self.n_params = n_values
        self.support = constraints.integer_interval(0, n_values - 1)

    def log_prob(self, params, x):
        return -F.cross_entropy(params, x.long(), reduction="none")

    def sample(self, params):
        return torch.multinomial(torch.softmax(params, -1), 1)[:, 0].to(params.dtype)


class GaussianMixtureFamily:
    """Real x_i from a mixture of `n_components` Gaussians (RNADE's conditionals).

    Parameters along axis 1: mixture logits, means, log standard deviations.
    """

    name = "GaussianMixture"
    is_continuous = True
    support = constraints.real

    def __init__(self, n_components=10):
        if not isinstance(n_components, int) or isinstance(n_components, bool) \
                or n_components < 1:
            raise ValueError(f"GaussianMixtureFamily: `n_components` must be a positive int, "
                             f"got {n_components!r}")
        self.n_components = n_components
        self.n_params = 3 * n_components

    def log_prob(self, params, x):
        logits, mean, log_std = params.chunk(3, dim=1)
        z = (x.unsqueeze(1) - mean) * torch.exp(-log_std)
        log_normal = -0.5 * z * z - log_std - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(torch.log_softmax(logits, 1) + log_normal, dim=1)

    def sample(self, params):
        logits, mean, log_std = params.chunk(3, dim=1)
        k = torch.multinomial(torch.softmax(logits, -1), 1)
        return (mean.gather(1, k) + torch.exp(log_std.gather(1, k))
                * torch.randn_like(mean[:, :1]))[:, 0]


_FAMILIES = {"bernoulli": BernoulliFamily, "categorical": CategoricalFamily,
             "gaussian_mixture": GaussianMixtureFamily}
_FAMILY_TYPES = tuple(_FAMILIES.values())


class Autoregressive(StandaloneDistribution):
    """p(x) = prod_i p(x_i | x_<i) over a vector or an image (see the module docstring).

    net: an `nn.Module` (or callable) mapping `[B] + value_shape` to
        `[B, family.n_params] + value_shape`, autoregressive in `order`.
    family: "bernoulli", "categorical" (256 values), "gaussian_mixture" (10
        components), or an instance of `BernoulliFamily`, `CategoricalFamily`,
        `GaussianMixtureFamily`.
    value_shape: the shape of one draw, e.g. `[784]` or `[1, 28, 28]`.
    order: the sampling order, a permutation of `range(prod(value_shape))`;
        default: `net.order` when the network has one, else the natural order.
    batch_shape: independent copies drawn by `sample` (default: none).
    """

    is_reparameterized = False
    use_path_derivative = False

    def __init__(self, net, family, value_shape, order=None, *, batch_shape=(), dtype=None,
                 group_ndims=0, check_numerics=False):
        if not callable(net):
            raise TypeError(f"Autoregressive: `net` must be a callable network, got "
                            f"{type(net).__name__}")
        self.net = net
        self.family = self._read_family(family)
        self._value_shape = self._read_shape("value_shape", value_shape)
        self._batch_shape = self._read_shape("batch_shape", batch_shape)
        self._dim = math.prod(self._value_shape)
        self.order = self._read_order(order)
        self.params = {}
        self.dtype = dtype
        self.is_continuous = self.family.is_continuous
        self.check_numerics = bool(check_numerics)
        self.group_ndims = self._check_group_ndims(group_ndims)

    @property
    def _name(self):
        return f"Autoregressive({self.family.name})"

    def _read_family(self, family):
        if isinstance(family, str):
            if family not in _FAMILIES:
                raise ValueError(f"Autoregressive: unknown `family` {family!r}; expected one "
                                 f"of {sorted(_FAMILIES)} or a family instance")
            return _FAMILIES[family]()
        if not isinstance(family, _FAMILY_TYPES):
            raise TypeError(f"Autoregressive: `family` must be a name or one of "
                            f"{[c.__name__ for c in _FAMILY_TYPES]}, got {type(family).__name__}")
        return family

    def _read_shape(self, name, shape):
        shape = [shape] if isinstance(shape, int) else shape
        try:
            shape = torch.Size(shape)
        except TypeError:
            raise ValueError(f"Autoregressive: `{name}` must be a sequence of positive ints, "
                             f"got {shape!r}") from None
        if any(size < 1 for size in shape) or (name == "value_shape" and not shape):
            raise ValueError(f"Autoregressive: `{name}` must be a sequence of positive ints"
                             f"{' (at least one)' if name == 'value_shape' else ''}, "
                             f"got {tuple(shape)}")
        return shape

    def _read_order(self, order):
        net_order = getattr(self.net, "order", None)
        if order is None:
            order = net_order if net_order is not None else range(self._dim)
        try:
            order = [int(i) for i in order]
        except (TypeError, ValueError):
            raise ValueError(f"Autoregressive: `order` must be a sequence of ints, got "
                             f"{order!r}") from None
        if sorted(order) != list(range(self._dim)):
            raise ValueError(f"Autoregressive: `order` must be a permutation of "
                             f"range({self._dim}) (the flattened value_shape "
                             f"{tuple(self._value_shape)}), got {_brief(order)}")
        if net_order is not None and [int(i) for i in net_order] != order:
            raise ValueError(f"Autoregressive: `order` {_brief(order)} differs from the "
                             f"network's own order {_brief(list(net_order))}")
        return order

    @property
    def support(self):
        return self.family.support

    # -- the network -----------------------------------------------------
    def conditionals(self, x):
        """Every dimension's conditional parameters for values `x` ([B] + value_shape):
        `[B, n_params] + value_shape` (checked), from one pass of the network."""
        out = self.net(x)
        expected = (x.shape[0], self.family.n_params, *self._value_shape)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = (f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor)
                   else f"a {type(out).__name__}")
            raise self._error(f"the conditional network's output has {got}, expected "
                              f"[B, n_params] + value_shape = {expected} ({self.family.name} "
                              f"has n_params={self.family.n_params})")
        return out

    def log_prob_per_dim(self, given):
        """log p(x_i | x_<i) of each dimension: `(...) + batch_shape + value_shape`."""
        given = self._check_given(given)
        if not given.is_floating_point():
            given = given.to(torch.get_default_dtype())
        return self._per_dim(given)

    def _per_dim(self, given):
        full = torch.broadcast_shapes(given.shape, self._batch_shape + self._value_shape)
        x = given.expand(full).reshape((-1,) + self._value_shape)
        log_p = self.family.log_prob(self.conditionals(x), x)
        return log_p.reshape(full)

    # -- sampling --------------------------------------------------------
    def sample(self, n_samples=None):
        """Draw `batch_shape + value_shape` (or `[n_samples] + ...`), one dimension at a
        time in `order`: `prod(value_shape)` passes of the network, without gradients."""
        if n_samples is not None and (not isinstance(n_samples, int)
                                      or isinstance(n_samples, bool) or n_samples < 1):
            raise self._error(f"`n_samples` must be None or a positive int, got {n_samples!r}")
        front = self._batch_shape if n_samples is None else (n_samples,) + self._batch_shape
        n = math.prod(front)
        x = torch.zeros((n,) + self._value_shape, dtype=self._float_dtype(),
                        device=self._device())
        flat = x.view(n, self._dim)
        one = getattr(self.net, "conditional", None)
        with torch.no_grad():
            for i in self.order:
                if one is not None:
                    params = one(x, i)
                else:
                    params = self.conditionals(x).reshape(n, self.family.n_params, self._dim)
                    params = params[:, :, i]
                flat[:, i] = self.family.sample(params)
        x = x.reshape(tuple(front) + tuple(self._value_shape))
        return x if self.dtype is None else x.to(self.dtype)

    def _float_dtype(self):
        param = next(iter(self.net.parameters()), None) if hasattr(self.net, "parameters") \
            else None
        return param.dtype if param is not None else torch.get_default_dtype()

    def _device(self):
        param = next(iter(self.net.parameters()), None) if hasattr(self.net, "parameters") \
            else None
        return param.device if param is not None else None

    # -- densities -------------------------------------------------------
    def _default_given_dtype(self):
        return self._float_dtype()

    def _log_density(self, given):
        log_p = self._per_dim(given)
        return log_p.sum(dim=tuple(range(-len(self._value_shape), 0)))

    def __repr__(self):
        return (f"Autoregressive(family={self.family.name}, batch_shape="
                f"{tuple(self.batch_shape)}, value_shape={tuple(self.value_shape)}, "
                f"group_ndims={self.group_ndims})")


def _brief(order, limit=12):
    """An order for an error message, shortened past `limit` entries."""
    return str(order) if len(order) <= limit else f"[{', '.join(map(str, order[:limit]))}, ...]"
