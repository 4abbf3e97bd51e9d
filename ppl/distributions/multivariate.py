"""Multivariate distributions (non-empty `value_shape`), with ZhuSuan's names."""
import torch
import torch.distributions as td
from torch.distributions import constraints

from ppl.distributions import torch_extra
from ppl.distributions.univariate import _Continuous, _Discrete, category_logits

__all__ = [
    "MultivariateNormalCholesky", "Multinomial", "UnnormalizedMultinomial",
    "BagofCategoricals", "OnehotCategorical", "OnehotDiscrete", "Dirichlet", "ExpConcrete",
    "ExpGumbelSoftmax", "Concrete", "GumbelSoftmax", "MatrixVariateNormalCholesky",
]


def _need_axes(dist, name, value, n):
    if value.dim() < n:
        raise dist._error(f"argument `{name}` needs at least {n} "
                          f"{'axis' if n == 1 else 'axes'}, got shape {tuple(value.shape)}")


class MultivariateNormalCholesky(_Continuous):
    """N(mean, L L^T) given the lower Cholesky factor `cov_tril` of the covariance."""

    arg_constraints = {"cov_tril": constraints.lower_cholesky}
    float_args = ("mean", "cov_tril")

    def __init__(self, mean, cov_tril, group_ndims=0, is_reparameterized=True,
                 use_path_derivative=False, check_numerics=False, **kwargs):
        super().__init__({"mean": mean, "cov_tril": cov_tril}, group_ndims, is_reparameterized,
                         use_path_derivative, check_numerics, **kwargs)

    def _check_params(self, params):
        _need_axes(self, "mean", params["mean"], 1)
        _need_axes(self, "cov_tril", params["cov_tril"], 2)
        d = params["mean"].shape[-1]
        if params["cov_tril"].shape[-2:] != (d, d):
            raise self._error(f"argument `cov_tril` must end in ({d}, {d}) to match `mean`, "
                              f"got shape {tuple(params['cov_tril'].shape)}")

    def _build(self, mean, cov_tril):
        return td.MultivariateNormal(mean, scale_tril=cov_tril, validate_args=False)


class MatrixVariateNormalCholesky(_Continuous):
    """MN(mean, U, V) from the Cholesky factors `u_tril` (rows) and `v_tril` (columns)."""

    arg_constraints = {"u_tril": constraints.lower_cholesky, "v_tril": constraints.lower_cholesky}
    float_args = ("mean", "u_tril", "v_tril")

    def __init__(self, mean, u_tril, v_tril, group_ndims=0, is_reparameterized=True,
                 use_path_derivative=False, check_numerics=False, **kwargs):
        super().__init__({"mean": mean, "u_tril": u_tril, "v_tril": v_tril}, group_ndims,
                         is_reparameterized, use_path_derivative, check_numerics, **kwargs)

    def _check_params(self, params):
        for name in ("mean", "u_tril", "v_tril"):
            _need_axes(self, name, params[name], 2)
        n, p = params["mean"].shape[-2:]
        for name, size in (("u_tril", n), ("v_tril", p)):
            if params[name].shape[-2:] != (size, size):
                raise self._error(f"argument `{name}` must end in ({size}, {size}) to match "
                                  f"`mean` of shape {tuple(params['mean'].shape)}, got shape "
                                  f"{tuple(params[name].shape)}")

    def _build(self, mean, u_tril, v_tril):
        return torch_extra.MatrixNormal(mean, u_tril, v_tril)


def _check_normalize_logits(dist_name, normalize_logits):
    if not isinstance(normalize_logits, bool):
        raise ValueError(f"{dist_name}: argument `normalize_logits` must be a bool, "
                         f"got {normalize_logits!r}")
    return normalize_logits


class Multinomial(_Discrete):
    """Counts of `n_experiments` draws from Categorical(logits) over the last axis.

    With `n_experiments=None` the total is taken from `given` in `log_prob`,
    and the distribution cannot be sampled (as in ZhuSuan). With
    `normalize_logits=False`, `log_prob` uses `logits` as given, trusting them
    to be normalized log-probabilities (as in ZhuSuan: it saves a logsumexp).
    """

    arg_constraints = {"logits": category_logits}
    float_args = ("logits",)

    def __init__(self, logits, n_experiments=None, normalize_logits=True, dtype=None,
                 group_ndims=0, **kwargs):
        if n_experiments is not None and (not isinstance(n_experiments, int)
                                          or isinstance(n_experiments, bool)
                                          or n_experiments < 0):
            raise ValueError(f"Multinomial: argument `n_experiments` must be a non-negative "
                             f"int or None, got {n_experiments!r}")
        self.n_experiments = n_experiments
        self.normalize_logits = _check_normalize_logits("Multinomial", normalize_logits)
        super().__init__({"logits": logits}, dtype=dtype, group_ndims=group_ndims, **kwargs)

    def _log_density(self, given):
        if self.normalize_logits:
            return super()._log_density(given)
        log_coefficient = torch.lgamma(given.sum(-1) + 1) - torch.lgamma(given + 1).sum(-1)
        unnormalized = torch_extra.UnnormalizedMultinomial(self.params["logits"],
                                                           normalize_logits=False)
        return log_coefficient + unnormalized.log_prob(given)

    def _check_params(self, params):
        _need_axes(self, "logits", params["logits"], 1)

    def _build(self, logits):
        return td.Multinomial(self.n_experiments or 1, logits=logits, validate_args=False)

    @property
    def support(self):
        """Non-negative integer counts; their total is checked against `n_experiments`
        in `log_prob` (torch's multinomial constraint lets fractional counts pass)."""
        return constraints.independent(constraints.nonnegative_integer, 1)

    def sample(self, n_samples=None):
        if self.n_experiments is None:
            raise self._error("cannot sample with `n_experiments=None`; give the number "
                              "of experiments")
        return super().sample(n_samples)

    def _check_given(self, given, leading=()):
        given = super()._check_given(given, leading)
        if self.n_experiments is not None and not bool(
                (given.sum(-1) == self.n_experiments).all()):
            raise self._error(f"`given` counts must sum to n_experiments={self.n_experiments} "
                              f"on the last axis")
        return given


class UnnormalizedMultinomial(_Discrete):
    """Bag of categoricals: log p(x) = sum_i x_i log softmax(logits)_i (no coefficient).

    With `normalize_logits=False` the logits are used as given: sum_i x_i logits_i.
    """

    arg_constraints = {"logits": category_logits}
    float_args = ("logits",)

    def __init__(self, logits, normalize_logits=True, dtype=None, group_ndims=0, **kwargs):
        self.normalize_logits = _check_normalize_logits("UnnormalizedMultinomial",
                                                        normalize_logits)
        super().__init__({"logits": logits}, dtype=dtype, group_ndims=group_ndims, **kwargs)

    def _check_params(self, params):
        _need_axes(self, "logits", params["logits"], 1)

    def _build(self, logits):
        return torch_extra.UnnormalizedMultinomial(logits, self.normalize_logits)

    def sample(self, n_samples=None):
        raise self._error("cannot be sampled: the number of draws is not part of the "
                          "distribution (use Multinomial with n_experiments)")


BagofCategoricals = UnnormalizedMultinomial


class OnehotCategorical(_Discrete):
    """One-hot Categorical(logits | probs); samples are float one-hot vectors."""

    arg_constraints = {"probs": constraints.simplex, "logits": category_logits}
    float_args = ("logits", "probs")

    def __init__(self, logits=None, dtype=None, group_ndims=0, *, probs=None, **kwargs):
        if (logits is None) == (probs is None):
            raise ValueError("OnehotCategorical: give exactly one of `logits` and `probs`")
        super().__init__({"logits": logits, "probs": probs}, dtype=dtype,
                         group_ndims=group_ndims, **kwargs)

    def _check_params(self, params):
        (name, value), = params.items()
        _need_axes(self, name, value, 1)

    @property
    def n_categories(self):
        return self.value_shape[-1]

    def _build(self, logits=None, probs=None):
        return td.OneHotCategorical(probs=probs, logits=logits, validate_args=False)


OnehotDiscrete = OnehotCategorical


class Dirichlet(_Continuous):
    """Dirichlet(alpha) over the last axis."""

    arg_constraints = {"alpha": constraints.independent(constraints.positive, 1)}
    float_args = ("alpha",)

    def __init__(self, alpha, group_ndims=0, check_numerics=False, **kwargs):
        super().__init__({"alpha": alpha}, group_ndims=group_ndims,
                         check_numerics=check_numerics, **kwargs)

    def _check_params(self, params):
        _need_axes(self, "alpha", params["alpha"], 1)
        if params["alpha"].shape[-1] == 0:
            raise self._error(f"argument `alpha` has an empty last axis (the categories), "
                              f"shape {tuple(params['alpha'].shape)}: give at least one category")

    def _build(self, alpha):
        return td.Dirichlet(alpha, validate_args=False)


class _Relaxed(_Continuous):
    arg_constraints = {"temperature": constraints.positive, "logits": category_logits}
    float_args = ("temperature", "logits")

    def __init__(self, temperature, logits, group_ndims=0, is_reparameterized=True,
                 use_path_derivative=False, check_numerics=False, **kwargs):
        super().__init__({"temperature": temperature, "logits": logits}, group_ndims,
                         is_reparameterized, use_path_derivative, check_numerics, **kwargs)

    def _check_params(self, params):
        _need_axes(self, "logits", params["logits"], 1)


class ExpConcrete(_Relaxed):
    """Log of a Concrete sample: a relaxed one-hot in log space (Maddison et al., 2017)."""

    def _build(self, temperature, logits):
        return torch_extra.ExpConcrete(temperature, logits)


class Concrete(_Relaxed):
    """Concrete / Gumbel-softmax relaxation of a one-hot categorical, on the simplex."""

    def _build(self, temperature, logits):
        return torch_extra.Concrete(temperature, logits)


ExpGumbelSoftmax = ExpConcrete
GumbelSoftmax = Concrete
