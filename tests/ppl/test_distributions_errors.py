"""Bad input raises ValueError early, naming the distribution and the argument."""
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.distributions import constraints

import ppl.distributions as D

F64 = torch.float64


def zeros(*shape):
    return torch.zeros(shape, dtype=F64)


def ones(*shape):
    return torch.ones(shape, dtype=F64)


def eyes(batch, d):
    return torch.eye(d, dtype=F64).expand(batch, d, d)


# name -> (class, valid keyword arguments with batch_shape [2], value_shape)
VALID = {
    "Normal": (D.Normal, dict(mean=zeros(2), std=ones(2)), ()),
    "FoldNormal": (D.FoldNormal, dict(mean=zeros(2), std=ones(2)), ()),
    "LogNormal": (D.LogNormal, dict(mean=zeros(2), std=ones(2)), ()),
    "Bernoulli": (D.Bernoulli, dict(logits=zeros(2)), ()),
    "Categorical": (D.Categorical, dict(logits=zeros(2, 3)), ()),
    "Uniform": (D.Uniform, dict(minval=zeros(2), maxval=ones(2)), ()),
    "Gamma": (D.Gamma, dict(alpha=ones(2), beta=ones(2)), ()),
    "InverseGamma": (D.InverseGamma, dict(alpha=ones(2), beta=ones(2)), ()),
    "Beta": (D.Beta, dict(alpha=ones(2), beta=ones(2)), ()),
    "Poisson": (D.Poisson, dict(rate=ones(2)), ()),
    "Binomial": (D.Binomial, dict(logits=zeros(2), n_experiments=torch.tensor([5, 5])), ()),
    "Laplace": (D.Laplace, dict(loc=zeros(2), scale=ones(2)), ()),
    "Cauchy": (D.Cauchy, dict(loc=zeros(2), scale=ones(2)), ()),
    "Logistic": (D.Logistic, dict(loc=zeros(2), scale=ones(2)), ()),
    "StudentT": (D.StudentT, dict(df=ones(2), loc=zeros(2), scale=ones(2)), ()),
    "HalfNormal": (D.HalfNormal, dict(std=ones(2)), ()),
    "HalfCauchy": (D.HalfCauchy, dict(scale=ones(2)), ()),
    "Exponential": (D.Exponential, dict(rate=ones(2)), ()),
    "BinConcrete": (D.BinConcrete, dict(temperature=ones(2), logits=zeros(2)), ()),
    "MultivariateNormalCholesky": (D.MultivariateNormalCholesky,
                                   dict(mean=zeros(2, 3), cov_tril=eyes(2, 3)), (3,)),
    "MatrixVariateNormalCholesky": (D.MatrixVariateNormalCholesky,
                                    dict(mean=zeros(2, 2, 3), u_tril=eyes(2, 2),
                                         v_tril=eyes(2, 3)), (2, 3)),
    "Multinomial": (D.Multinomial, dict(logits=zeros(2, 3), n_experiments=4), (3,)),
    "UnnormalizedMultinomial": (D.UnnormalizedMultinomial, dict(logits=zeros(2, 3)), (3,)),
    "OnehotCategorical": (D.OnehotCategorical, dict(logits=zeros(2, 3)), (3,)),
    "Dirichlet": (D.Dirichlet, dict(alpha=ones(2, 3)), (3,)),
    "ExpConcrete": (D.ExpConcrete, dict(temperature=ones(2), logits=zeros(2, 3)), (3,)),
    "Concrete": (D.Concrete, dict(temperature=ones(2), logits=zeros(2, 3)), (3,)),
    "ImproperUniform": (D.ImproperUniform, dict(support=constraints.positive, batch_shape=[2],
                                                dtype=F64), ()),
}
NOT_HERE = {"Distribution", "Empirical", "Implicit",  # tested at the end of this file
            "Flow", "FlowDistribution",  # flows have their own tests
            "Autoregressive"}  # so has it: tests/ppl/distributions/test_autoregressive.py
SAMPLEABLE = sorted(set(VALID) - {"UnnormalizedMultinomial"})


def make(name, **overrides):
    cls, kwargs, _ = VALID[name]
    return cls(**{**kwargs, **overrides})


def value_shape(name):
    return VALID[name][2]


def test_every_distribution_is_listed():
    public = {getattr(D, name) for name in set(D.__all__) - NOT_HERE}
    listed = {cls for cls, _, _ in VALID.values()}
    assert {cls.__name__ for cls in public - listed} == set()


def raises(name, *patterns):
    """pytest.raises(ValueError) whose message starts with `name:` and contains the patterns."""
    regex = "".join(f"(?=.*{p})" for p in patterns)
    return pytest.raises(ValueError, match=re.compile(rf"^{name}: {regex}", re.S))


# -- shapes ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(VALID))
def test_given_that_does_not_broadcast(name):
    dist = make(name)
    bad = zeros(3, *value_shape(name))  # batch_shape is [2]
    full = ", ".join(["...", "2", *map(str, value_shape(name))])
    with raises(name, re.escape("`given` of shape (3"), "does not broadcast",
                re.escape(f"(...) + batch_shape (2,) + value_shape {value_shape(name)} = "
                          f"({full})")):
        dist.log_prob(bad)


@pytest.mark.parametrize("name", [n for n in VALID if value_shape(n)])
def test_given_without_the_value_axes(name):
    with raises(name, "`given` of shape", "does not broadcast"):
        make(name).log_prob(zeros(*value_shape(name)[1:]))


@pytest.mark.parametrize("name", sorted(VALID))
def test_group_ndims_too_large(name):
    with raises(name, "`group_ndims`=2", "exceeds", re.escape("batch_shape (2,)")):
        make(name, group_ndims=2)


@pytest.mark.parametrize("group_ndims", [-1, 1.0, True, "1"])
def test_group_ndims_not_a_non_negative_int(group_ndims):
    with raises("Normal", "`group_ndims` must be a non-negative int", re.escape(repr(group_ndims))):
        make("Normal", group_ndims=group_ndims)


@pytest.mark.parametrize("name", SAMPLEABLE)
@pytest.mark.parametrize("n_samples", [0, -2, 1.5, True, "3", torch.tensor(2)])
def test_bad_n_samples(name, n_samples):
    with raises(name, "`n_samples` must be None or a positive int"):
        make(name).sample(n_samples)


BINARY = {"Normal": ("mean", "std"), "FoldNormal": ("mean", "std"), "LogNormal": ("mean", "std"),
          "Uniform": ("minval", "maxval"), "Gamma": ("alpha", "beta"),
          "InverseGamma": ("alpha", "beta"), "Beta": ("alpha", "beta"),
          "Binomial": ("logits", "n_experiments"), "Laplace": ("loc", "scale"),
          "Cauchy": ("loc", "scale"), "Logistic": ("loc", "scale"), "StudentT": ("df", "scale"),
          "BinConcrete": ("temperature", "logits"), "ExpConcrete": ("temperature", "logits"),
          "Concrete": ("temperature", "logits"), "MultivariateNormalCholesky": ("mean", "cov_tril"),
          "MatrixVariateNormalCholesky": ("mean", "u_tril")}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_parameters_that_do_not_broadcast(name):
    first, second = BINARY[name]
    kwargs = VALID[name][1]
    # Three copies of the second parameter against two of the first.
    wide = kwargs[second][:1].expand((3,) + kwargs[second].shape[1:])
    with raises(name, "do not broadcast", f"{first}: {re.escape(str(tuple(kwargs[first].shape)))}",
                f"{second}: {re.escape(str(tuple(wide.shape)))}"):
        make(name, **{second: wide})


def test_multivariate_normal_mean_and_cov_tril_disagree():
    with raises("MultivariateNormalCholesky", "`cov_tril` must end in \\(3, 3\\)"):
        make("MultivariateNormalCholesky", cov_tril=eyes(2, 2))


@pytest.mark.parametrize("arg,bad", [("u_tril", eyes(2, 3)), ("v_tril", eyes(2, 2))])
def test_matrix_normal_factors_disagree_with_mean(arg, bad):
    with raises("MatrixVariateNormalCholesky", f"`{arg}` must end in"):
        make("MatrixVariateNormalCholesky", **{arg: bad})


@pytest.mark.parametrize("name,arg,bad", [
    ("Categorical", "logits", zeros()), ("OnehotCategorical", "logits", zeros()),
    ("Dirichlet", "alpha", ones()), ("Multinomial", "logits", zeros()),
    ("UnnormalizedMultinomial", "logits", zeros()), ("Concrete", "logits", zeros()),
    ("MultivariateNormalCholesky", "mean", zeros()),
    ("MatrixVariateNormalCholesky", "mean", zeros(3)),
])
def test_parameters_without_the_event_axes(name, arg, bad):
    with raises(name, f"`{arg}`", "at least [12] ax(i|e)s"):
        make(name, **{arg: bad})


# -- dtypes ------------------------------------------------------------------------------
FLOAT_ARGS = [(name, arg) for name in sorted(VALID) for arg in VALID[name][1]
              if arg in getattr(VALID[name][0], "float_args", ())]


@pytest.mark.parametrize("name,arg", FLOAT_ARGS)
def test_integer_parameter_tensor(name, arg):
    value = VALID[name][1][arg]
    with raises(name, f"argument `{arg}` must be floating point", "int64"):
        make(name, **{arg: value.round().long()})


@pytest.mark.parametrize("name", ["Normal", "Gamma", "Dirichlet"])
def test_non_numeric_parameter(name):
    arg = next(iter(VALID[name][1]))
    with raises(name, f"argument `{arg}` must be a tensor or number", "str"):
        make(name, **{arg: "one"})


CONTINUOUS = sorted(n for n in VALID if make(n).is_continuous)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_integer_given_for_a_continuous_distribution(name):
    given = torch.ones((2,) + value_shape(name), dtype=torch.int64)
    with raises(name, "`given` must be floating point", "int64"):
        make(name).log_prob(given)


# -- supports ----------------------------------------------------------------------------
OUT_OF_SUPPORT = [
    ("Gamma", -1.0), ("Gamma", float("nan")), ("InverseGamma", -1.0), ("Beta", 1.5),
    ("Bernoulli", 2.0), ("Bernoulli", 0.5), ("Categorical", 3.0), ("Categorical", -1.0),
    ("Categorical", 1.5), ("Poisson", -1.0), ("Poisson", 2.5), ("Binomial", 6.0),
    ("Uniform", 1.5), ("Uniform", -0.1), ("HalfNormal", -1.0), ("HalfCauchy", -1.0),
    ("Exponential", -1.0), ("LogNormal", -1.0), ("FoldNormal", -0.5), ("BinConcrete", 1.5),
    ("ImproperUniform", -1.0),
    ("Dirichlet", [0.2, 0.2, 0.2]), ("Dirichlet", [1.2, -0.1, -0.1]),
    ("Concrete", [0.5, 0.6, 0.1]), ("OnehotCategorical", [1.0, 1.0, 0.0]),
    ("OnehotCategorical", [0.5, 0.5, 0.0]), ("Multinomial", [1.0, 1.0, 1.0]),
    ("Multinomial", [5.0, -1.0, 0.0]), ("Multinomial", [1.5, 2.5, 0.0]),
    ("UnnormalizedMultinomial", [1.0, -1.0, 0.0]), ("UnnormalizedMultinomial", [0.5, 0.0, 0.0]),
]


@pytest.mark.parametrize("name,bad", OUT_OF_SUPPORT)
def test_given_outside_the_support(name, bad):
    with raises(name, "`given`", "(outside the support|must sum to)"):
        make(name).log_prob(torch.tensor(bad, dtype=F64))


NOT_POSITIVE = [
    ("Normal", "std", "positive"), ("FoldNormal", "std", "positive"),
    ("LogNormal", "std", "positive"), ("Gamma", "alpha", "positive"),
    ("Gamma", "beta", "positive"), ("InverseGamma", "beta", "positive"),
    ("Beta", "alpha", "positive"), ("Poisson", "rate", "non-negative"),
    ("Laplace", "scale", "positive"), ("Cauchy", "scale", "positive"),
    ("Logistic", "scale", "positive"), ("StudentT", "df", "positive"),
    ("StudentT", "scale", "positive"), ("HalfNormal", "std", "positive"),
    ("HalfCauchy", "scale", "positive"), ("Exponential", "rate", "positive"),
    ("BinConcrete", "temperature", "positive"), ("Concrete", "temperature", "positive"),
    ("ExpConcrete", "temperature", "positive"), ("Dirichlet", "alpha", "positive"),
]


@pytest.mark.parametrize("name,arg,expected,value", [
    (name, arg, expected, value) for name, arg, expected in NOT_POSITIVE
    for value in [-1.0, 0.0, float("nan")]
    if not (value == 0.0 and expected == "non-negative")])  # a Poisson rate may be 0
def test_parameter_not_positive(name, arg, expected, value):
    bad = VALID[name][1][arg].clone()
    bad[(0,) * bad.dim()] = value
    with raises(name, f"argument `{arg}` must be {expected}"):
        make(name, **{arg: bad})


@pytest.mark.parametrize("name,arg,bad,expected", [
    ("MultivariateNormalCholesky", "cov_tril", -eyes(2, 3), "lower-triangular"),
    ("MultivariateNormalCholesky", "cov_tril", ones(2, 3, 3), "lower-triangular"),
    ("MatrixVariateNormalCholesky", "u_tril", -eyes(2, 2), "lower-triangular"),
    ("MatrixVariateNormalCholesky", "v_tril", ones(2, 3, 3), "lower-triangular"),
    ("Bernoulli", "probs", torch.tensor([0.5, 1.5], dtype=F64), "in \\[0, 1\\]"),
    ("Categorical", "probs", torch.full((2, 3), 0.5, dtype=F64), "on the simplex"),
    ("OnehotCategorical", "probs", torch.full((2, 3), 0.5, dtype=F64), "on the simplex"),
    ("Binomial", "n_experiments", torch.tensor([-1, 2]), "a non-negative integer"),
    ("Binomial", "n_experiments", torch.tensor([2.5, 2.0]), "a non-negative integer"),
])
def test_parameter_outside_its_domain(name, arg, bad, expected):
    with raises(name, f"argument `{arg}` must be {expected}"):
        if arg == "probs":
            VALID[name][0](probs=bad)
        else:
            make(name, **{arg: bad})


def test_uniform_bounds_in_the_wrong_order():
    with raises("Uniform", "`maxval` must be greater than `minval`"):
        make("Uniform", maxval=torch.tensor([1.0, -1.0], dtype=F64))


@pytest.mark.parametrize("n_experiments", [-1, 2.5, True, "3", torch.tensor(3)])
def test_multinomial_bad_n_experiments(n_experiments):
    with raises("Multinomial", "`n_experiments` must be a non-negative int or None"):
        make("Multinomial", n_experiments=n_experiments)


@pytest.mark.parametrize("name,both,neither", [
    ("Normal", dict(mean=zeros(2), std=ones(2), logstd=zeros(2)), dict(mean=zeros(2))),
    ("FoldNormal", dict(mean=zeros(2), std=ones(2), logstd=zeros(2)), dict(mean=zeros(2))),
    ("Bernoulli", dict(logits=zeros(2), probs=ones(2) / 2), dict()),
    ("Categorical", dict(logits=zeros(2, 3), probs=ones(2, 3) / 3), dict()),
    ("OnehotCategorical", dict(logits=zeros(2, 3), probs=ones(2, 3) / 3), dict()),
])
def test_exactly_one_parameterization(name, both, neither):
    cls = VALID[name][0]
    for kwargs in (both, neither):
        with raises(name, "give exactly one of"):
            cls(**kwargs)


def test_check_numerics_reports_non_finite_log_prob():
    dist = make("Normal", check_numerics=True)
    with raises("Normal", "non-finite", "check_numerics"):
        dist.log_prob(torch.tensor([0.0, float("inf")], dtype=F64))
    assert torch.isfinite(dist.log_prob(zeros(2))).all()


# -- non-finite and empty parameters (issue 29, item 10) ----------------------------------
CATEGORY_LOGITS = {  # name -> builder from logits [..., n_categories]
    "Categorical": lambda logits: D.Categorical(logits),
    "OnehotCategorical": lambda logits: D.OnehotCategorical(logits),
    "Multinomial": lambda logits: D.Multinomial(logits, 3),
    "UnnormalizedMultinomial": lambda logits: D.UnnormalizedMultinomial(logits),
    "ExpConcrete": lambda logits: D.ExpConcrete(0.5, logits),
    "Concrete": lambda logits: D.Concrete(0.5, logits),
}
INF = float("inf")


@pytest.mark.parametrize("name", sorted(CATEGORY_LOGITS))
@pytest.mark.parametrize("bad", [[0.0, float("nan")], [0.0, INF], [-INF, -INF],
                                 [[0.0, 1.0], [INF, 0.0]]], ids=["nan", "inf", "all-inf", "row"])
def test_category_logits_with_nan_inf_or_all_minus_inf(name, bad):
    with raises(name, "argument `logits` must be", "without NaN or \\+inf", "not all -inf"):
        CATEGORY_LOGITS[name](torch.tensor(bad, dtype=F64))


@pytest.mark.parametrize("name", sorted(CATEGORY_LOGITS))
@pytest.mark.parametrize("shape", [(0,), (3, 0)])
def test_empty_category_axis(name, shape):
    with raises(name, "argument `logits` must be", "non-empty last axis",
                re.escape(f"shape {shape}")):
        CATEGORY_LOGITS[name](zeros(*shape))


@pytest.mark.parametrize("probs", [zeros(0), zeros(3, 0)])
def test_empty_category_axis_given_probs(probs):
    for name in ("Categorical", "OnehotCategorical"):
        with raises(name, "argument `probs` must be on the simplex"):
            VALID[name][0](probs=probs)


def test_dirichlet_with_an_empty_category_axis():
    with raises("Dirichlet", "argument `alpha` has an empty last axis", re.escape("(3, 0)")):
        D.Dirichlet(ones(3, 0))


def test_minus_inf_logits_are_categories_never_drawn():
    logits = torch.tensor([[-INF, 0.0, -INF]], dtype=F64)
    assert (D.Categorical(logits).sample(50) == 1).all()
    assert (D.Multinomial(logits, 4).sample(5)[..., 1] == 4).all()
    counts = torch.tensor([[0.0, 2.0, 0.0]], dtype=F64)
    assert D.Multinomial(logits, 2).log_prob(counts).item() == 0.0
    assert D.UnnormalizedMultinomial(logits).log_prob(counts).item() == 0.0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(set(CATEGORY_LOGITS) - {"UnnormalizedMultinomial"})),
       logits=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), max_size=4))
def test_any_logits_give_a_draw_or_a_clear_error(name, logits):
    """No raw torch error, whatever the logits: a valid draw or a ValueError naming them."""
    try:
        dist = CATEGORY_LOGITS[name](torch.tensor(logits, dtype=F64))
    except ValueError as err:
        assert str(err).startswith(f"{name}: argument `logits` must be")
        return
    sample = dist.sample(3)
    assert sample.shape == (3,) + tuple(dist.batch_shape) + tuple(dist.value_shape)
    assert not torch.isnan(sample).any()


@settings(max_examples=100, deadline=None)
@given(logits=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1,
                       max_size=4),
       name=st.sampled_from(["Bernoulli", "BinConcrete"]))
def test_binary_logits_give_a_draw_or_a_clear_error(logits, name):
    logits = torch.tensor(logits, dtype=F64)
    dist = (D.Bernoulli(logits) if name == "Bernoulli"
            else None if torch.isnan(logits).any() else D.BinConcrete(0.5, logits))
    if dist is None:
        with raises(name, "argument `logits` holds NaN or inf"):
            D.BinConcrete(0.5, logits)
        return
    if torch.isnan(logits).any():
        with raises(name, "cannot sample", "argument `logits` holds NaN or inf"):
            dist.sample()
    else:
        assert dist.sample().shape == logits.shape


def test_binomial_nan_logits_are_refused_and_infinite_ones_are_certain():
    with raises("Binomial", "argument `logits` must be free of NaN"):
        D.Binomial(torch.tensor([0.0, float("nan")], dtype=F64), 3)
    draws = D.Binomial(torch.tensor([INF, -INF], dtype=F64), 3).sample(4)
    assert (draws[:, 0] == 3).all() and (draws[:, 1] == 0).all()


@pytest.mark.parametrize("rate", [1e19, 2.0 ** 63])
def test_poisson_with_a_huge_rate_draws_no_negative_count(rate):
    torch.manual_seed(0)
    n = 4000
    draws = D.Poisson(torch.tensor([rate, 3.0], dtype=F64)).sample(n)
    assert (draws >= 0).all()
    # Poisson(rate): mean and variance `rate`; each within 5 standard errors (the float64
    # spacing there, 2048, is negligible against the standard deviation, 3e9).
    big = draws[:, 0]
    assert abs(big.mean().item() - rate) < 5 * (rate / n) ** 0.5
    assert abs(big.std().item() / rate ** 0.5 - 1) < 5 / (2 * n) ** 0.5
    assert (D.Poisson(torch.tensor([1e30, 2e19])).sample(10) > 0).all()  # float32 too


def test_poisson_infinite_rate_draws_inf():
    draws = D.Poisson(torch.tensor([INF, 2.0], dtype=F64)).sample(3)
    assert torch.isinf(draws[:, 0]).all() and (draws[:, 1] >= 0).all()


@pytest.mark.parametrize("dtype,rate", [(torch.int64, 1e19), (torch.int64, INF),
                                        (torch.int32, 3e9)])
def test_poisson_draw_too_large_for_an_integer_dtype(dtype, rate):
    with raises("Poisson", "a draw is too large for dtype", re.escape(str(dtype))):
        D.Poisson(torch.tensor([rate, 1.0], dtype=F64), dtype=dtype).sample()
    assert D.Poisson(torch.tensor([2e9], dtype=F64), dtype=torch.int64).sample().item() > 0


# -- no density ---------------------------------------------------------------------------
def test_empirical_cannot_be_sampled_or_scored():
    dist = D.Empirical(F64, batch_shape=[2], value_shape=[3])
    with raises("Empirical", "cannot be sampled", "observed"):
        dist.sample()
    with raises("Empirical", "cannot be sampled"):
        dist.sample(4)
    with raises("Empirical", "has no density", "log_prob"):
        dist.log_prob(zeros(2, 3))


def test_empirical_group_ndims_too_large():
    with raises("Empirical", "`group_ndims`=2", "exceeds"):
        D.Empirical(F64, batch_shape=[2], group_ndims=2)


def test_implicit_has_no_density_and_cannot_draw_more():
    samples = torch.randn(4, 2, dtype=F64, requires_grad=True)
    dist = D.Implicit(samples)
    with raises("Implicit", "has no density", "log_prob"):
        dist.log_prob(samples)
    with raises("Implicit", "`n_samples`=3", re.escape("(4, 2)"), "cannot draw new samples"):
        dist.sample(3)


@pytest.mark.parametrize("samples,value_shape,expected", [
    ([1.0, 2.0], None, "`samples` must be a tensor"),
    (torch.zeros(4, 2), [3], "does not end in value_shape"),
    (torch.zeros(2), [1, 2], "does not end in value_shape"),
])
def test_implicit_bad_samples(samples, value_shape, expected):
    with raises("Implicit", expected):
        D.Implicit(samples, value_shape=value_shape)
