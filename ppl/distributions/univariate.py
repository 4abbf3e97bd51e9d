"""Univariate distributions (`value_shape` is `[]`), with ZhuSuan's names.

Each class names its parameters as ZhuSuan does and builds the matching
`torch.distributions` object; see `ppl.distributions.base` for the shared
semantics (`group_ndims`, `n_samples`, `is_reparameterized`, ...).
"""
import math

import torch
import torch.distributions as td
import torch.nn.functional as F
from torch.distributions import constraints

from ppl.distributions import torch_extra
from ppl.distributions.base import Distribution

__all__ = [
    "Normal", "FoldNormal", "Bernoulli", "Categorical", "Discrete", "Uniform", "Gamma",
    "Beta", "Poisson", "Binomial", "InverseGamma", "Laplace", "BinConcrete",
    "BinGumbelSoftmax", "StudentT", "Cauchy", "HalfNormal", "HalfCauchy", "LogNormal",
    "Exponential", "Logistic",
]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _std_from(dist_name, std, logstd):
    if (std is None) == (logstd is None):
        raise ValueError(f"{dist_name}: give exactly one of `std` and `logstd`")
    return std, logstd


class _Continuous(Distribution):
    """Shared keyword arguments of the continuous, reparameterizable families."""

    def __init__(self, params, group_ndims=0, is_reparameterized=True,
                 use_path_derivative=False, check_numerics=False, **kwargs):
        super().__init__(params, group_ndims=group_ndims,
                         is_reparameterized=is_reparameterized,
                         use_path_derivative=use_path_derivative,
                         check_numerics=check_numerics, **kwargs)


class _ScaleFamily(_Continuous):
    """A location-scale family given by `mean` and `std` or `logstd`."""

    arg_constraints = {"std": constraints.positive, "logstd": constraints.real}
    float_args = ("mean", "std", "logstd")

    def __init__(self, mean=0., *, std=None, logstd=None, **kwargs):
        _std_from(type(self).__name__, std, logstd)
        super().__init__({"mean": mean, "std": std, "logstd": logstd}, **kwargs)

    @property
    def std(self):
        return self._dist.scale

    @property
    def logstd(self):
        return self.params["logstd"] if "logstd" in self.params else self.params["std"].log()

    @staticmethod
    def _scale(std=None, logstd=None):
        return std if std is not None else logstd.exp()


class Normal(_ScaleFamily):
    """Normal(mean, std | logstd).

    The reparameterized draw and the log-density are torch's formulas written out
    (tests check them against `torch.distributions.Normal` to 1e-6), because they
    run on every training step and, written out, cost autograd fewer nodes: log(std)
    is read from `logstd` when given (not the log of its exp), a constant `std` given
    as a number costs no tensor work, and the node's own draw z = mean + eps * std is
    scored as log N(eps; 0, 1) - log(std), which is log N(z; mean, std) with the same
    total derivative (eps = (z - mean) / std). Values are standardized by multiplying with
    1 / std, not dividing by std: a std broadcast over many values (a likelihood's
    scale) then costs one division, not one per value and two more in the gradient.
    """

    _torch_class = td.Normal
    support = constraints.real
    _last_draw = None  # (z, eps) of the latest reparameterized draw

    def _build(self, mean, std=None, logstd=None):
        return td.Normal(mean, self._scale(std, logstd), validate_args=False)

    def _std(self):
        std = self.params.get("std")
        return std if std is not None else self.params["logstd"].exp()

    def _rsample(self, shape):
        mean = self.params["mean"]
        eps = torch.empty(shape + self.batch_shape, dtype=mean.dtype,
                          device=mean.device).normal_()  # as torch's Normal.rsample
        z = mean + eps * self._std()
        self._last_draw = (z, eps)
        return z

    def _log_density(self, given):
        mean, std_number = self.params["mean"], self._numbers.get("std")
        if self.use_path_derivative:  # parameters detached: the general formula in z
            mean = mean.detach()
        elif self._last_draw is not None and given is self._last_draw[0]:
            return (-0.5 * self._last_draw[1] ** 2 - _HALF_LOG_2PI) - self.logstd
        if std_number is not None:
            difference = given - mean
            standardized = difference if std_number == 1 else difference * (1 / std_number)
            return -0.5 * standardized ** 2 - (_HALF_LOG_2PI + math.log(std_number))
        std, log_std = self._std(), self.logstd
        if self.use_path_derivative:
            std, log_std = std.detach(), log_std.detach()
        return (-0.5 * ((given - mean) * std.reciprocal()) ** 2 - _HALF_LOG_2PI) - log_std


class FoldNormal(_ScaleFamily):
    """|X| with X ~ Normal(mean, std | logstd)."""

    def _build(self, mean, std=None, logstd=None):
        return torch_extra.FoldedNormal(mean, self._scale(std, logstd))


class LogNormal(_ScaleFamily):
    """exp(X) with X ~ Normal(mean, std | logstd)."""

    def _build(self, mean, std=None, logstd=None):
        return td.LogNormal(mean, self._scale(std, logstd), validate_args=False)


class _Discrete(Distribution):
    is_continuous = False

    def __init__(self, params, dtype=None, group_ndims=0, check_numerics=False, **kwargs):
        kwargs.pop("is_reparameterized", None)
        super().__init__(params, dtype=dtype, group_ndims=group_ndims,
                         is_reparameterized=False, check_numerics=check_numerics, **kwargs)


class _CategoryLogits(constraints.Constraint):
    """Logits over a non-empty last axis (the categories) that normalize to probabilities:
    no NaN or +inf, and not all -inf on any row (one check: the row's max is finite).

    A 0-d tensor passes: the distribution's own axis check reports it.
    """

    event_dim = 1

    def check(self, value):
        if value.dim() == 0:
            return torch.ones((), dtype=torch.bool, device=value.device)
        if value.shape[-1] == 0:
            return torch.zeros(value.shape[:-1], dtype=torch.bool, device=value.device)
        return torch.isfinite(value.amax(-1))

    def __str__(self):
        return ("logits over a non-empty last axis (the categories), without NaN or +inf "
                "and not all -inf on any row")


category_logits = _CategoryLogits()


class _NotNaN(constraints.Constraint):
    """Real values, +-inf included, but no NaN: torch's `real` check as another object, since
    the parameter checks skip `constraints.real` (for speed: see `Distribution`)."""

    def check(self, value):
        return value == value

    def __str__(self):
        return "free of NaN"


not_nan = _NotNaN()


def _logits_or_probs(dist_name, logits, probs):
    if (logits is None) == (probs is None):
        raise ValueError(f"{dist_name}: give exactly one of `logits` and `probs`")


class Bernoulli(_Discrete):
    """Bernoulli(logits | probs); samples are float (0./1.) unless `dtype` says otherwise."""

    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    float_args = ("logits", "probs")

    def __init__(self, logits=None, dtype=None, group_ndims=0, *, probs=None, **kwargs):
        _logits_or_probs("Bernoulli", logits, probs)
        super().__init__({"logits": logits, "probs": probs}, dtype=dtype,
                         group_ndims=group_ndims, **kwargs)

    _torch_class = td.Bernoulli
    support = constraints.boolean

    def _build(self, logits=None, probs=None):
        return td.Bernoulli(probs=probs, logits=logits, validate_args=False)

    def _log_density(self, given):
        """torch's Bernoulli.log_prob written out (it runs on every training step)."""
        logits = self.params.get("logits")
        if logits is None:  # given `probs`: torch's clamped conversion to logits
            return super()._log_density(given)
        if self.use_path_derivative:
            logits = logits.detach()
        if logits.shape != given.shape:
            logits, given = torch.broadcast_tensors(logits, given)
        return -F.binary_cross_entropy_with_logits(logits, given, reduction="none")


class Categorical(_Discrete):
    """Categorical(logits | probs) over the last axis; samples are int64 indices."""

    arg_constraints = {"probs": constraints.simplex, "logits": category_logits}
    float_args = ("logits", "probs")
    native_dtype = torch.int64

    def __init__(self, logits=None, dtype=None, group_ndims=0, *, probs=None, **kwargs):
        _logits_or_probs("Categorical", logits, probs)
        super().__init__({"logits": logits, "probs": probs}, dtype=dtype,
                         group_ndims=group_ndims, **kwargs)

    def _check_params(self, params):
        (name, value), = params.items()
        if value.dim() < 1:
            raise self._error(f"argument `{name}` needs at least 1 axis (the categories), "
                              f"got shape {tuple(value.shape)}")

    @property
    def n_categories(self):
        return self._dist.param_shape[-1]

    def _build(self, logits=None, probs=None):
        return td.Categorical(probs=probs, logits=logits, validate_args=False)


Discrete = Categorical


class Uniform(_Continuous):
    """Uniform(minval, maxval) on [minval, maxval)."""

    float_args = ("minval", "maxval")

    def __init__(self, minval=0., maxval=1., group_ndims=0, is_reparameterized=True,
                 check_numerics=False, **kwargs):
        super().__init__({"minval": minval, "maxval": maxval}, group_ndims=group_ndims,
                         is_reparameterized=is_reparameterized,
                         check_numerics=check_numerics, **kwargs)

    def _check_params(self, params):
        if not bool((params["minval"] < params["maxval"]).all()):
            raise self._error("argument `maxval` must be greater than `minval` everywhere")

    def _build(self, minval, maxval):
        return td.Uniform(minval, maxval, validate_args=False)


class Gamma(_Continuous):
    """Gamma(alpha, beta) with shape `alpha` and rate `beta`."""

    arg_constraints = {"alpha": constraints.positive, "beta": constraints.positive}
    float_args = ("alpha", "beta")

    def __init__(self, alpha, beta, group_ndims=0, check_numerics=False, **kwargs):
        super().__init__({"alpha": alpha, "beta": beta}, group_ndims=group_ndims,
                         check_numerics=check_numerics, **kwargs)

    def _build(self, alpha, beta):
        return td.Gamma(alpha, beta, validate_args=False)


class InverseGamma(Gamma):
    """InverseGamma(alpha, beta): 1/X with X ~ Gamma(alpha, beta)."""

    def _build(self, alpha, beta):
        return td.InverseGamma(alpha, beta, validate_args=False)


class Beta(_Continuous):
    """Beta(alpha, beta)."""

    arg_constraints = {"alpha": constraints.positive, "beta": constraints.positive}
    float_args = ("alpha", "beta")

    def __init__(self, alpha, beta, group_ndims=0, check_numerics=False, **kwargs):
        super().__init__({"alpha": alpha, "beta": beta}, group_ndims=group_ndims,
                         check_numerics=check_numerics, **kwargs)

    def _build(self, alpha, beta):
        return td.Beta(alpha, beta, validate_args=False)


class Poisson(_Discrete):
    """Poisson(rate); samples are float counts unless `dtype` says otherwise.

    Rates above 2**62 are drawn from the normal approximation (torch's sampler
    overflows int64 there; see `torch_extra.Poisson`); an infinite rate draws
    inf. An integer `dtype` too narrow for a draw is an error, never a
    wrapped-around negative count.
    """

    arg_constraints = {"rate": constraints.nonnegative}
    float_args = ("rate",)

    def __init__(self, rate, dtype=None, group_ndims=0, check_numerics=False, **kwargs):
        super().__init__({"rate": rate}, dtype=dtype, group_ndims=group_ndims,
                         check_numerics=check_numerics, **kwargs)

    def _build(self, rate):
        return torch_extra.Poisson(rate, validate_args=False)

    def _cast(self, samples):
        if not self.dtype.is_floating_point and self.dtype != torch.bool:
            bound = torch.iinfo(self.dtype).max + 1  # a power of two: exact as a float
            if bool((samples >= bound).any()):
                raise self._error(f"a draw is too large for dtype {self.dtype} (largest rate "
                                  f"{self.params['rate'].max().item():.3g}): give a wider "
                                  f"integer or a floating-point `dtype`")
        return samples.to(self.dtype)


class Binomial(_Discrete):
    """Binomial(logits, n_experiments): successes in `n_experiments` trials."""

    arg_constraints = {"logits": not_nan, "n_experiments": constraints.nonnegative_integer}
    float_args = ("logits",)

    def __init__(self, logits, n_experiments, dtype=None, group_ndims=0, check_numerics=False,
                 **kwargs):
        super().__init__({"logits": logits, "n_experiments": n_experiments}, dtype=dtype,
                         group_ndims=group_ndims, check_numerics=check_numerics, **kwargs)

    def _build(self, logits, n_experiments):
        return td.Binomial(n_experiments.to(logits.dtype), logits=logits, validate_args=False)


class Laplace(_Continuous):
    """Laplace(loc, scale)."""

    arg_constraints = {"scale": constraints.positive}
    float_args = ("loc", "scale")

    def __init__(self, loc, scale, group_ndims=0, is_reparameterized=True,
                 use_path_derivative=False, check_numerics=False, **kwargs):
        super().__init__({"loc": loc, "scale": scale}, group_ndims, is_reparameterized,
                         use_path_derivative, check_numerics, **kwargs)

    def _build(self, loc, scale):
        return td.Laplace(loc, scale, validate_args=False)


class Cauchy(Laplace):
    """Cauchy(loc, scale)."""

    def _build(self, loc, scale):
        return td.Cauchy(loc, scale, validate_args=False)


class Logistic(Laplace):
    """Logistic(loc, scale)."""

    def _build(self, loc, scale):
        return torch_extra.Logistic(loc, scale)


class StudentT(_Continuous):
    """StudentT(df, loc=0, scale=1)."""

    arg_constraints = {"df": constraints.positive, "scale": constraints.positive}
    float_args = ("df", "loc", "scale")

    def __init__(self, df, loc=0., scale=1., **kwargs):
        super().__init__({"df": df, "loc": loc, "scale": scale}, **kwargs)

    def _build(self, df, loc, scale):
        return td.StudentT(df, loc, scale, validate_args=False)


class HalfNormal(_Continuous):
    """|X| with X ~ Normal(0, std)."""

    arg_constraints = {"std": constraints.positive}
    float_args = ("std",)

    def __init__(self, std=1., **kwargs):
        super().__init__({"std": std}, **kwargs)

    def _build(self, std):
        return td.HalfNormal(std, validate_args=False)


class HalfCauchy(_Continuous):
    """|X| with X ~ Cauchy(0, scale)."""

    arg_constraints = {"scale": constraints.positive}
    float_args = ("scale",)

    def __init__(self, scale=1., **kwargs):
        super().__init__({"scale": scale}, **kwargs)

    def _build(self, scale):
        return td.HalfCauchy(scale, validate_args=False)


class Exponential(_Continuous):
    """Exponential(rate)."""

    arg_constraints = {"rate": constraints.positive}
    float_args = ("rate",)

    def __init__(self, rate=1., **kwargs):
        super().__init__({"rate": rate}, **kwargs)

    def _build(self, rate):
        return td.Exponential(rate, validate_args=False)


class BinConcrete(_Continuous):
    """Binary Concrete / Gumbel-softmax relaxation of a Bernoulli, on (0, 1)."""

    arg_constraints = {"temperature": constraints.positive, "logits": constraints.real}
    float_args = ("temperature", "logits")

    def __init__(self, temperature, logits, group_ndims=0, is_reparameterized=True,
                 use_path_derivative=False, check_numerics=False, **kwargs):
        super().__init__({"temperature": temperature, "logits": logits}, group_ndims,
                         is_reparameterized, use_path_derivative, check_numerics, **kwargs)

    def _build(self, temperature, logits):
        temperature, logits = torch.broadcast_tensors(temperature, logits)  # batch from both
        return td.RelaxedBernoulli(temperature, logits=logits, validate_args=False)


BinGumbelSoftmax = BinConcrete
