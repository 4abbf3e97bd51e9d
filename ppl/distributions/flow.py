"""`FlowDistribution`: a base distribution pushed through invertible transforms.

    base = Normal(torch.zeros(n, 2), std=1.)              # batch [n, 2]
    q = FlowDistribution(base, [Planar(2), Planar(2)])    # batch [n], value [2]
    z = q.sample(10)                                      # [10, n, 2]
    q.log_prob(z)                                         # [10, n], cached

The flow acts on the trailing axes the first transform reads, its
`event_shape`: `[dim]` for vectors, `[C, H, W]` for images. The base gives
them one of two ways: a distribution with `value_shape` equal to that shape
(e.g. `MultivariateNormalCholesky` for `[dim]`) keeps its batch shape; a
scalar one (e.g. `Normal`) has its last batch axes read as the event, like
`torch.distributions.Independent` (its `group_ndims` may be 0 or the event's
rank, both meaning those axes are summed). The value has the last
transform's `out_shape` (a squeeze may change it). Grouping further axes is
the flow's own `group_ndims`, as for every ppl distribution. An image flow is
a node like any other:

    base = Normal(torch.zeros(1, 28, 28), std=1.)         # batch [1, 28, 28]
    bn.stochastic("x", FlowDistribution(base, realnvp_transforms))  # value [1, 28, 28]

Scoring: `log_prob` of the very tensor `sample()` returned uses the density
computed while sampling (cached by identity, last sample only, as Pyro's
`TransformedDistribution` does), so flows without a closed-form inverse
(`Planar`) serve variational inference. Other values are inverted through the
transforms. The cache is used only with a reparameterized base and without
path derivatives; otherwise `log_prob` must treat the value as fixed and
always inverts.

`is_reparameterized` and `use_path_derivative` are the base's. With path
derivatives (set on the base), `log_prob` stops the gradients to the base's
and the transforms' parameters, keeping those through the value (Roeder et
al. 2017); that requires inverses.
"""
import torch
from torch import nn

from ppl.distributions.base import Distribution, StandaloneDistribution
from ppl.flows.transform import Transform

__all__ = ["FlowDistribution", "Flow"]


class _Method(nn.Module):
    """Calls `transform.<method>`: lets `torch.func.functional_call` swap its parameters."""

    def __init__(self, transform, method):
        super().__init__()
        self.transform = transform
        self.method = method

    def forward(self, x):
        return getattr(self.transform, self.method)(x)


class FlowDistribution(StandaloneDistribution):
    """`base` pushed through `transforms` (applied in order), a normalizing flow.

    `base`: a continuous ppl distribution giving the flow's event (see the
    module docstring); `transforms`: a `ppl.flows.Transform` or a sequence of
    them (e.g. an `nn.ModuleList`), each reading the shape the previous one
    writes, all of the base's dtype. Shapes: `batch_shape` is the base's
    without the event axes, `value_shape` is the last transform's `out_shape`.
    """

    def __init__(self, base, transforms, group_ndims=0, check_numerics=False):
        if not isinstance(base, Distribution):
            raise TypeError(f"FlowDistribution: `base` must be a ppl Distribution, "
                            f"got {type(base).__name__}")
        if not base.is_continuous or not base.has_density:
            raise self._error(f"`base` must be a continuous distribution with a density, "
                              f"got {base!r}")
        self.base = base
        self.transforms = self._check_transforms(transforms)
        self._event_shape = self.transforms[0].event_shape if self.transforms else None
        self._batch_shape, self._event_shape, self._sum_base_axes = self._read_base(base)
        self._value_shape = self.transforms[-1].out_shape if self.transforms \
            else self._event_shape
        self.params = dict(base.params)
        self.dtype = base.dtype
        self.is_reparameterized = base.is_reparameterized
        self.use_path_derivative = base.use_path_derivative
        self.check_numerics = bool(check_numerics)
        self.group_ndims = self._check_group_ndims(group_ndims)
        self._cache = None
        if self.use_path_derivative:
            self._require_inverses("use path derivatives (set on the base)")
        self._check_dtypes()

    def _read_base(self, base):
        """(batch_shape, event_shape, how many trailing axes base.log_prob leaves to sum)."""
        event = self._event_shape
        k = 1 if event is None else len(event)
        value_shape = base.value_shape
        if len(value_shape) > 0:
            if event is not None and value_shape != event:
                raise self._error(self._mismatch(f"the base's value_shape {tuple(value_shape)}"))
            if base.group_ndims != 0:
                raise self._error(f"a base with value_shape {tuple(value_shape)} must have "
                                  f"group_ndims=0 (group batch axes with the flow's own "
                                  f"`group_ndims`), got {base.group_ndims}")
            return base.batch_shape, value_shape, 0
        batch_shape = base.batch_shape
        if len(batch_shape) < k:
            raise self._error(f"a scalar base needs a batch axis for the flow to act on "
                              f"(its last {k}), got batch_shape {tuple(batch_shape)}")
        if event is not None and batch_shape[len(batch_shape) - k:] != event:
            raise self._error(self._mismatch(f"the base's last batch axes "
                                             f"{tuple(batch_shape[len(batch_shape) - k:])}"))
        if base.group_ndims not in (0, k):
            raise self._error(f"a scalar base may group only the flow's axes "
                              f"(group_ndims 0 or {k}), got {base.group_ndims}; group "
                              f"other axes with the flow's own `group_ndims`")
        return batch_shape[:len(batch_shape) - k], batch_shape[len(batch_shape) - k:], \
            0 if base.group_ndims else k

    def _mismatch(self, what):
        first = self.transforms[0]
        if len(first.event_shape) == 1:
            return f"transforms[0] ({type(first).__name__}) acts on dim {first.dim}, but " \
                   f"{what} differ"
        return f"transforms[0] ({type(first).__name__}) reads values of shape " \
               f"{tuple(first.event_shape)}, but {what} differ"

    def _check_transforms(self, transforms):
        transforms = [transforms] if isinstance(transforms, Transform) else list(transforms)
        for i, t in enumerate(transforms):
            if not isinstance(t, Transform):
                raise TypeError(f"FlowDistribution: transforms[{i}] must be a "
                                f"ppl.flows.Transform, got {type(t).__name__}")
            if i and t.event_shape != transforms[i - 1].out_shape:
                before = transforms[i - 1]
                if len(t.event_shape) == 1 and len(before.out_shape) == 1:
                    raise self._error(f"transforms[{i}] ({type(t).__name__}) acts on dim "
                                      f"{t.dim}, but transforms[{i - 1}] "
                                      f"({type(before).__name__}) gives dim {before.out_shape[0]}")
                raise self._error(f"transforms[{i}] ({type(t).__name__}) reads values of shape "
                                  f"{tuple(t.event_shape)}, but transforms[{i - 1}] "
                                  f"({type(before).__name__}) writes {tuple(before.out_shape)}")
        return transforms

    def _check_dtypes(self):
        dtype = self.base._default_given_dtype()
        for i, t in enumerate(self.transforms):
            wrong = next((p.dtype for p in t.parameters() if p.dtype != dtype), None)
            if wrong is not None:
                raise self._error(f"transforms[{i}] ({type(t).__name__}) has {wrong} "
                                  f"parameters but the base is {dtype}; convert it with "
                                  f".to({dtype})")

    def _require_inverses(self, purpose):
        for i, t in enumerate(self.transforms):
            if not t.has_inverse:
                raise self._error(f"transforms[{i}] ({type(t).__name__}) has no closed-form "
                                  f"inverse, which is needed to {purpose}; only the tensor "
                                  f"returned by sample() can be scored (its log-density is "
                                  f"cached when drawn)")

    # -- sampling --------------------------------------------------------
    def _base_log_prob(self, x):
        log_p = self.base.log_prob(x)
        k = self._sum_base_axes
        return log_p.sum(dim=tuple(range(-k, 0))) if k else log_p

    def push_forward(self, x):
        """Base points `x` ((...) + batch_shape + event shape) through the flow.

        Returns `(y, log_density)`: the values and their log-density under this
        flow, of shape (...) + batch_shape (not summed over `group_ndims`).
        """
        log_density = self._base_log_prob(x)
        for t in self.transforms:
            x, log_abs_det = t(x)
            log_density = log_density - log_abs_det
        return x, log_density

    def sample(self, n_samples=None):
        """Draw `batch_shape + value_shape`, or `[n_samples] + ...`; caches the log-density."""
        base_sample = self.base.sample(n_samples)
        if self.is_reparameterized:
            y, log_density = self.push_forward(base_sample)
            self._cache = (y, log_density)
            return y
        with torch.no_grad():
            return self.push_forward(base_sample)[0]

    # -- densities -------------------------------------------------------
    def _log_prob(self, given):
        """log-density of a checked `given`: cached for the last sample, else by inversion."""
        cached = self._cache is not None and given is self._cache[0]
        if cached and not self.use_path_derivative:
            log_p = self._cache[1]
        else:
            log_p = self._log_density_by_inversion(given)
        if self.group_ndims:
            log_p = log_p.sum(dim=tuple(range(-self.group_ndims, 0)))
        if self.check_numerics and not torch.isfinite(log_p).all():
            raise self._error("log_prob produced non-finite values (check_numerics=True)")
        return log_p

    def _log_density_by_inversion(self, y):
        """log base(x) - sum of the forward log|det| along x = f^-1(y)."""
        self._require_inverses("score a value the flow did not just sample")
        total_log_abs_det = 0.
        for t in reversed(self.transforms):
            y, log_abs_det = self._call(t, "inverse_and_log_det", y)
            total_log_abs_det = total_log_abs_det + log_abs_det
        return self._base_log_prob(y) - total_log_abs_det

    def _call(self, transform, method, x):
        """`transform.<method>(x)`, with detached parameters under path derivatives."""
        if not self.use_path_derivative:
            return getattr(transform, method)(x)
        detached = {f"transform.{name}": p.detach() for name, p in transform.named_parameters()}
        return torch.func.functional_call(_Method(transform, method), detached, (x,))

    def __repr__(self):
        names = ", ".join(type(t).__name__ for t in self.transforms)
        return (f"FlowDistribution(base={self.base!r}, transforms=[{names}], "
                f"batch_shape={tuple(self.batch_shape)}, value_shape={tuple(self.value_shape)}, "
                f"group_ndims={self.group_ndims})")


Flow = FlowDistribution
"""Alias: `BayesianNet.flow(name, base, transforms, ...)` is generated from this name."""
