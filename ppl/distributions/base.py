"""The `Distribution` base class: ZhuSuan's semantics over `torch.distributions`.

A distribution has a `batch_shape` (independent, not necessarily identical
copies) and a `value_shape` (the shape of one draw).

- `sample(n_samples=None)` returns `batch_shape + value_shape`, or
  `[n_samples] + batch_shape + value_shape` when `n_samples` is given (also 1).
- `log_prob(given)` broadcasts `given` against `(...) + batch_shape +
  value_shape` and sums the result over the last `group_ndims` batch axes.

Subclasses pass their parameters (a dict) and build the torch distribution
that does the math in `_build(**params)`; this class converts and validates
parameters, checks `given`, and adds `group_ndims`, `n_samples`,
`is_reparameterized`, `use_path_derivative` and `check_numerics`.
"""
import contextlib
import contextvars

import torch
from torch.distributions import constraints
from torch.utils.weak import WeakIdKeyDictionary

from ppl.stochastic_tensor import StochasticTensor, unwrap

__all__ = ["Distribution"]


def _describe(constraint):
    names = {
        constraints.positive: "positive",
        constraints.nonnegative: "non-negative",
        constraints.real: "finite real",
        constraints.unit_interval: "in [0, 1]",
        constraints.simplex: "on the simplex (non-negative, summing to 1 on the last axis)",
        constraints.lower_cholesky: "lower-triangular with a positive diagonal",
        constraints.nonnegative_integer: "a non-negative integer",
        constraints.boolean: "0 or 1",
    }
    if isinstance(constraint, constraints.independent):
        n = constraint.reinterpreted_batch_ndims
        return (f"{_describe(constraint.base_constraint)}, with at least {n} "
                f"{'axis' if n == 1 else 'axes'}")
    return names.get(constraint, str(constraint).replace("constraints.", ""))


class Distribution:
    """Base class of every distribution in `ppl.distributions`.

    Subclasses set `arg_constraints` (name -> torch constraint, checked at
    construction), `float_args` (names that must be floating point), the
    defaults of `is_continuous`/`is_reparameterized`, and implement `_build`.
    """

    arg_constraints = {}
    float_args = ()
    is_continuous = True
    has_density = True
    native_dtype = None  # dtype of torch's samples when not floating point (e.g. int64)
    # Univariate distributions that sample and score with torch's formulas written out
    # (Normal, Bernoulli) set their torch class here: the torch object is then built only
    # when something else needs it (entropy, KL, ...), and `batch_shape` is the broadcast
    # shape of the parameters.
    _torch_class = None
    _numbers = {}  # name -> python number, for the arguments given as numbers

    def __init__(self, params, *, dtype=None, group_ndims=0, is_reparameterized=True,
                 use_path_derivative=False, check_numerics=False):
        self.params = self._prepare_params(params)
        if self._torch_class is None:
            self._dist = self._build_checked(self.params)
            self._batch_shape = self._dist.batch_shape
        else:
            self._batch_shape = self._broadcast_shape(self.params)
        self._detached = None
        self.dtype = dtype
        self.is_reparameterized = bool(is_reparameterized) and (
            self._dist.has_rsample if self._torch_class is None else self._torch_class.has_rsample)
        self.use_path_derivative = bool(use_path_derivative)
        self.check_numerics = bool(check_numerics)
        self.group_ndims = self._check_group_ndims(group_ndims)

    def __getattr__(self, name):
        # Only reached for names not found otherwise: the torch distribution, when built on
        # demand, and parameters read as attributes (`dist.mean`) where no property of the
        # class (e.g. `std` from `logstd`) gives them.
        params = self.__dict__.get("params")
        if params is not None:
            if name == "_dist" and self._torch_class is not None:
                self._dist = self._build_checked(params)
                return self._dist
            if name in params:
                return params[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- construction ----------------------------------------------------
    @property
    def _name(self):
        return type(self).__name__

    def _error(self, message):
        return ValueError(f"{self._name}: {message}")

    def _prepare_params(self, params):
        """name -> tensor: numbers converted (to the dtype and device of the tensor
        arguments), dtypes and `arg_constraints` checked; raises ValueError naming the
        argument. Runs on every model call, so it is written for speed."""
        given, numbers, float_dtype, device = {}, {}, None, None
        for name, value in params.items():
            if value is None:
                continue
            if isinstance(value, StochasticTensor):
                value = value.tensor
            if isinstance(value, torch.Tensor):
                if device is None:
                    device = value.device
                if float_dtype is None and value.is_floating_point():
                    float_dtype = value.dtype
            given[name] = value
        if float_dtype is None:
            float_dtype = torch.get_default_dtype()
        out = {}
        for name, value in given.items():
            number = None
            is_float_arg = name in self.float_args
            if not isinstance(value, torch.Tensor):
                number = value if isinstance(value, (int, float)) else None
                if number is not None:
                    numbers[name] = number
                dtype = float_dtype if is_float_arg else None
                try:
                    value = (_number_tensor(number, dtype, device) if number is not None
                             else torch.as_tensor(value, device=device, dtype=dtype))
                except (TypeError, ValueError, RuntimeError) as err:
                    raise self._error(f"argument `{name}` must be a tensor or number, "
                                      f"got {type(value).__name__} ({err})") from None
            if is_float_arg and not value.is_floating_point():
                if value.is_complex() or value.dtype == torch.bool:
                    raise self._error(f"argument `{name}` must be a real floating-point tensor, "
                                      f"got dtype {value.dtype}")
                raise self._error(f"argument `{name}` must be floating point "
                                  f"(e.g. {float_dtype}), got dtype {value.dtype}")
            constraint = self.arg_constraints.get(name)
            if constraint is not None and constraint is not constraints.real:
                ok = (_holds_scalar(constraint, number, value) if number is not None
                      else _holds(constraint, value))
                if not ok:
                    raise self._error(f"argument `{name}` must be {_describe(constraint)}; "
                                      f"got a tensor of shape {tuple(value.shape)} violating it")
            out[name] = value
        try:
            self._check_params(out)
        except RuntimeError as err:  # e.g. comparing parameters of clashing shapes
            raise self._broadcast_error(out, err) from None
        if numbers:
            self._numbers = numbers
        return out

    def _broadcast_shape(self, params):
        """The broadcast shape of the parameters (cheap when they share one shape)."""
        shapes = [value.shape for value in params.values() if value.dim()]
        if not shapes:
            return torch.Size()
        if all(shape == shapes[0] for shape in shapes):
            return shapes[0]
        try:
            return torch.broadcast_shapes(*shapes)
        except RuntimeError as err:
            raise self._broadcast_error(params, err) from None

    def _check_params(self, params):
        """Extra cross-parameter checks for subclasses (e.g. minval < maxval)."""

    def _build_checked(self, params):
        try:
            return self._build(**params)
        except (RuntimeError, ValueError, IndexError) as err:
            raise (self._non_finite_error(params, "build the distribution")
                   or self._broadcast_error(params, err)) from None

    def _non_finite_error(self, params, doing):
        """A ValueError naming the parameters holding NaN or inf, or None if there are none.

        Only called once torch has failed (it is not free): torch's own errors for
        non-finite parameters ("probability tensor contains either inf, nan ...") name
        no argument.
        """
        bad = [name for name, value in params.items()
               if value.is_floating_point() and not bool(torch.isfinite(value).all())]
        if not bad:
            return None
        listing = ", ".join(f"`{name}`" for name in bad)
        return self._error(f"cannot {doing}: argument{'s' if len(bad) > 1 else ''} {listing} "
                           f"hold{'' if len(bad) > 1 else 's'} NaN or inf values")

    def _broadcast_error(self, params, err):
        shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in params.items())
        return self._error(f"parameters do not broadcast to one batch shape ({shapes}): {err}")

    def _build(self, **params):
        raise NotImplementedError

    def _check_group_ndims(self, group_ndims):
        if type(group_ndims) is int and 0 <= group_ndims <= len(self.batch_shape):
            return group_ndims  # the common case, checked cheaply
        if not isinstance(group_ndims, int) or isinstance(group_ndims, bool) or group_ndims < 0:
            raise self._error(f"`group_ndims` must be a non-negative int, got {group_ndims!r}")
        if group_ndims > len(self.batch_shape):
            raise self._error(f"`group_ndims`={group_ndims} exceeds the number of batch axes "
                              f"(batch_shape {tuple(self.batch_shape)})")
        return group_ndims

    # -- shapes ----------------------------------------------------------
    @property
    def batch_shape(self):
        """Shape of the independent copies: `torch.Size`."""
        return self._batch_shape

    @property
    def value_shape(self):
        """Shape of one draw: `torch.Size`."""
        return torch.Size() if self._torch_class is not None else self._dist.event_shape

    def get_batch_shape(self):
        return self.batch_shape

    def get_value_shape(self):
        return self.value_shape

    @property
    def support(self):
        return self._dist.support

    # -- sampling --------------------------------------------------------
    def sample(self, n_samples=None):
        """Draw `batch_shape + value_shape`, or `[n_samples] + ...` when given."""
        if n_samples is None:
            shape = torch.Size()
        elif isinstance(n_samples, int) and not isinstance(n_samples, bool) and n_samples >= 1:
            shape = torch.Size([n_samples])
        else:
            raise self._error(f"`n_samples` must be None or a positive int, got {n_samples!r}")
        try:
            if self.is_reparameterized:
                samples = self._rsample(shape)
            else:
                with torch.no_grad():
                    samples = self._dist.sample(shape)
        except (RuntimeError, ValueError) as err:
            error = self._non_finite_error(self.params, "sample")
            if error is None:
                raise
            raise error from err
        if self.dtype is not None and samples.dtype != self.dtype:
            samples = self._cast(samples)
        return samples

    def _cast(self, samples):
        """`samples` (torch's dtype) in the requested `dtype`."""
        return samples.to(self.dtype)

    def _rsample(self, shape):
        """A reparameterized draw of `shape + batch_shape + value_shape` (torch's rsample)."""
        return self._dist.rsample(shape)

    # -- densities -------------------------------------------------------
    def log_prob(self, given):
        """log-density of `given`, summed over the last `group_ndims` batch axes.

        `given` broadcasts against `(...) + batch_shape + value_shape`; the
        result has shape `(...) + batch_shape[:len(batch_shape) - group_ndims]`.
        """
        return self._log_prob(self._check_given(given))

    def _log_prob(self, given):
        """`log_prob` of a `given` already checked (or drawn from this distribution)."""
        if not given.is_floating_point():  # integer counts/indices: torch's math wants floats
            given = given.to(self._default_given_dtype())
        log_p = self._log_density(given)
        if self.group_ndims:
            log_p = log_p.sum(dim=tuple(range(-self.group_ndims, 0)))
        if self.check_numerics and not torch.isfinite(log_p).all():
            raise self._error("log_prob produced non-finite values (check_numerics=True)")
        return log_p

    def _log_density(self, given):
        """Elementwise log-density of a checked floating-point `given` (torch's log_prob)."""
        return self._scoring_dist().log_prob(given)

    def _scoring_dist(self):
        """The torch distribution that scores values: with `use_path_derivative`, one
        built from detached parameters (log q(z) then depends on them only through z)."""
        if not self.use_path_derivative:
            return self._dist
        if self._detached is None:
            self._detached = self._build(**{k: v.detach() for k, v in self.params.items()})
        return self._detached

    def prob(self, given):
        return torch.exp(self.log_prob(given))

    def _check_given(self, given, leading=()):
        """`given` as a tensor, checked for dtype, shape and support; raises ValueError.

        `leading` are axes `given` must broadcast against in front of
        `batch_shape` (e.g. `[n_samples]` for a node's observation).
        """
        given = unwrap(given)
        if not isinstance(given, torch.Tensor):
            given = torch.as_tensor(given, dtype=self._default_given_dtype())
        if self.is_continuous and not given.is_floating_point():
            raise self._error(f"`given` must be floating point for a continuous distribution, "
                              f"got dtype {given.dtype}")
        own = tuple(self.batch_shape) + tuple(self.value_shape)
        full = tuple(leading) + own
        if given.dim() < len(self.value_shape) or not broadcastable(given.shape, full):
            if leading:
                front, total = f"{tuple(leading)} + ", str(full)
            else:
                front, total = "(...) + ", f"({', '.join(['...', *map(str, own)])})"
            raise self._error(f"`given` of shape {tuple(given.shape)} does not broadcast against "
                              f"{front}batch_shape {tuple(self.batch_shape)} + value_shape "
                              f"{tuple(self.value_shape)} = {total}")
        if not _holds(self.support, given, remember=True):
            raise self._error(f"`given` has values outside the support "
                              f"({_describe(self.support)})")
        return given

    @property
    def sample_dtype(self):
        """The dtype of this distribution's samples (`dtype` if given, else torch's own)."""
        if self.dtype is not None:
            return self.dtype
        return self.native_dtype or self._default_given_dtype()

    def _default_given_dtype(self):
        floats = [v.dtype for v in self.params.values() if v.is_floating_point()]
        return floats[0] if floats else torch.get_default_dtype()

    def __repr__(self):
        return (f"{self._name}(batch_shape={tuple(self.batch_shape)}, "
                f"value_shape={tuple(self.value_shape)}, group_ndims={self.group_ndims})")


class StandaloneDistribution(Distribution):
    """Base of the distributions with no torch distribution behind them (a flow, an
    autoregressive network, the nodes without a density): their `__init__` sets
    `_batch_shape` and `_value_shape` itself, without `Distribution.__init__`.
    Their support is the real line unless a subclass says otherwise."""

    @property
    def value_shape(self):
        return self._value_shape

    @property
    def support(self):
        return constraints.real


def broadcastable(shape, target):
    """Whether `shape` broadcasts against `target` (cheap: no tensor is made)."""
    for a, b in zip(reversed(shape), reversed(target)):
        if a != b and a != 1 and b != 1:
            return False
    return True


# Parameter-free constraints are module-level singletons, safe to key a cache on.
_SINGLETONS = {id(c): c for c in (
    constraints.positive, constraints.nonnegative, constraints.unit_interval,
    constraints.simplex, constraints.lower_cholesky, constraints.nonnegative_integer,
    constraints.boolean, constraints.real_vector, constraints.positive_definite)}
# tensor -> {(tensor version, constraint id)} already found to hold: data observed on
# every step (MCMC, training epochs) is checked once, until it is modified in place.
_checked = WeakIdKeyDictionary()
# (constraint id, python number) -> whether it holds, for scalar arguments like std=1.
_checked_scalars = {}
# (type, python number, dtype, device) -> (tensor, its version): scalar arguments as tensors.
_number_tensors = {}
_MAX_CACHED_NUMBERS = 4096  # models with ever-changing constants must not grow memory


def _number_tensor(number, dtype, device):
    """`torch.as_tensor(number, dtype, device)`, remembered: models pass the same
    constants (std=1.) on every call. A tensor changed in place is made anew."""
    key = (type(number), number, dtype, device)
    cached = _number_tensors.get(key)
    if cached is None and _check_mode.get() is not None:
        return torch.as_tensor(number, dtype=dtype, device=device)  # tracing: not kept
    if cached is None or _version(cached[0]) != cached[1] or cached[0].requires_grad:
        tensor = torch.as_tensor(number, dtype=dtype, device=device)
        version = _version(tensor)
        if version is None:
            return tensor  # made in inference mode: no version counter to tell a change
        if len(_number_tensors) >= _MAX_CACHED_NUMBERS:
            _number_tensors.clear()
        cached = _number_tensors[key] = (tensor, version)
    return cached[0]


def _version(tensor):
    """The tensor's in-place modification count; None for an inference tensor (made under
    `torch.inference_mode()`), which keeps none."""
    return None if tensor.is_inference() else tensor._version


# How support checks run: True inside `values_trusted()` (skipped), a list inside
# `deferred_checks()` (collected as tensors), else None (checked at once, in Python).
_check_mode = contextvars.ContextVar("ppl_check_mode", default=None)


@contextlib.contextmanager
def values_trusted():
    """Skip the support checks of values and parameters inside this block.

    For tracing a model into a graph (`inference.mcmc.compile`): a check reads
    tensor values in Python, which a trace cannot follow, and MCMC's latents
    lie in their supports by construction (bijections). Out-of-support values
    then give non-finite log-probabilities instead of errors.
    """
    token = _check_mode.set(True)
    try:
        yield
    finally:
        _check_mode.reset(token)


@contextlib.contextmanager
def deferred_checks():
    """Collect support checks as 0-d bool tensors instead of running them.

    For recording a step as a graph (`inference.TracedStep`): each check
    becomes part of the graph, one bool per check, which the caller tests
    after the step (a failure is then explained by re-running it eagerly).
    Yields the list the checks are appended to.
    """
    checks = []
    token = _check_mode.set(checks)
    try:
        yield checks
    finally:
        _check_mode.reset(token)


def _holds(constraint, value, remember=False):
    """Whether `constraint` holds everywhere on `value` (NaN parameters fail).

    With `remember`, a success is cached for this tensor until it changes in place.
    """
    if constraint is constraints.real:
        return True  # NaN/inf data is reported by check_numerics, not here
    mode = _check_mode.get()
    if mode is True:
        return True
    if mode is not None:
        mode.append(constraint.check(value).all())
        return True
    version = _version(value) if remember else None
    cacheable = version is not None and id(constraint) in _SINGLETONS
    if cacheable:
        key = (version, id(constraint))
        if key in _checked.get(value, ()):
            return True
    try:
        ok = bool(constraint.check(value).all())
    except (RuntimeError, ValueError):
        return False
    if ok and cacheable:
        _checked.setdefault(value, set()).add(key)
    return ok


def _holds_scalar(constraint, number, as_tensor):
    """`_holds` for a python number, remembered (models pass the same constants each call)."""
    key = (id(constraint), number)
    if id(constraint) not in _SINGLETONS:
        return _holds(constraint, as_tensor)
    if key not in _checked_scalars:
        if _check_mode.get() is not None:  # tracing: `as_tensor` may hold no values
            return _holds(constraint, as_tensor)
        if len(_checked_scalars) >= _MAX_CACHED_NUMBERS:
            _checked_scalars.clear()
        _checked_scalars[key] = _holds(constraint, as_tensor)
    return _checked_scalars[key]
