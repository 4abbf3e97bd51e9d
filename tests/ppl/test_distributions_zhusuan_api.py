"""ZhuSuan's distribution signatures translate line for line (issue 20, items 7 and 8)."""
import inspect
import re

import pytest
import torch

import ppl
import ppl.distributions as D

F64 = torch.float64

# ZhuSuan 0.4's constructor arguments (zhusuan/distributions/{univariate,multivariate}.py),
# in order. Normal and FoldNormal put `_sentinel` after `mean`: the rest is keyword-only there.
ZHUSUAN = {
    "Normal": ["mean", "_sentinel", "std", "logstd", "group_ndims", "is_reparameterized",
               "use_path_derivative", "check_numerics"],
    "FoldNormal": ["mean", "_sentinel", "std", "logstd", "group_ndims", "is_reparameterized",
                   "use_path_derivative", "check_numerics"],
    "Bernoulli": ["logits", "dtype", "group_ndims"],
    "Categorical": ["logits", "dtype", "group_ndims"],
    "Uniform": ["minval", "maxval", "group_ndims", "is_reparameterized", "check_numerics"],
    "Gamma": ["alpha", "beta", "group_ndims", "check_numerics"],
    "Beta": ["alpha", "beta", "group_ndims", "check_numerics"],
    "Poisson": ["rate", "dtype", "group_ndims", "check_numerics"],
    "Binomial": ["logits", "n_experiments", "dtype", "group_ndims", "check_numerics"],
    "InverseGamma": ["alpha", "beta", "group_ndims", "check_numerics"],
    "Laplace": ["loc", "scale", "group_ndims", "is_reparameterized", "use_path_derivative",
                "check_numerics"],
    "BinConcrete": ["temperature", "logits", "group_ndims", "is_reparameterized",
                    "use_path_derivative", "check_numerics"],
    "MultivariateNormalCholesky": ["mean", "cov_tril", "group_ndims", "is_reparameterized",
                                   "use_path_derivative", "check_numerics"],
    "Multinomial": ["logits", "n_experiments", "normalize_logits", "dtype", "group_ndims"],
    "UnnormalizedMultinomial": ["logits", "normalize_logits", "dtype", "group_ndims"],
    "OnehotCategorical": ["logits", "dtype", "group_ndims"],
    "Dirichlet": ["alpha", "group_ndims", "check_numerics"],
    "ExpConcrete": ["temperature", "logits", "group_ndims", "is_reparameterized",
                    "use_path_derivative", "check_numerics"],
    "Concrete": ["temperature", "logits", "group_ndims", "is_reparameterized",
                 "use_path_derivative", "check_numerics"],
    "MatrixVariateNormalCholesky": ["mean", "u_tril", "v_tril", "group_ndims",
                                    "is_reparameterized", "use_path_derivative",
                                    "check_numerics"],
    # zhusuan/legacy/distributions/special.py
    "Empirical": ["dtype", "batch_shape", "value_shape", "group_ndims", "is_continuous"],
    "Implicit": ["samples", "value_shape", "group_ndims"],
}
ALIASES = {"BagofCategoricals": "UnnormalizedMultinomial", "OnehotDiscrete": "OnehotCategorical",
           "Discrete": "Categorical", "ExpGumbelSoftmax": "ExpConcrete",
           "GumbelSoftmax": "Concrete", "BinGumbelSoftmax": "BinConcrete"}


@pytest.mark.parametrize("name", sorted(ZHUSUAN) + sorted(ALIASES))
def test_positional_arguments_in_zhusuan_order_and_extras_keyword_only(name):
    zhusuan = ZHUSUAN[ALIASES.get(name, name)]
    positional = zhusuan[:zhusuan.index("_sentinel")] if "_sentinel" in zhusuan else zhusuan
    params = list(inspect.signature(getattr(D, name)).parameters.values())
    ours = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert ours == positional
    # The rest of ZhuSuan's arguments are accepted by name (explicitly or through **kwargs,
    # which the base class checks).
    named = {p.name for p in params}
    assert all(n in named for n in zhusuan if n != "_sentinel") or any(
        p.kind is p.VAR_KEYWORD for p in params)


def _positional_call(name):
    """A ZhuSuan-style positional call, with a non-default value for every argument."""
    logits, ones = torch.zeros(2, 3, dtype=F64), torch.ones(2, dtype=F64)
    eye = torch.eye(3, dtype=F64)
    return {
        "Bernoulli": (D.Bernoulli(logits, torch.int32, 1), torch.int32),
        "Categorical": (D.Categorical(logits, torch.int32, 1), torch.int32),
        "OnehotCategorical": (D.OnehotCategorical(logits, torch.int32, 1), torch.int32),
        "Poisson": (D.Poisson(ones, torch.int32, 1, True), torch.int32),
        "Binomial": (D.Binomial(logits, 4, torch.int32, 2, True), torch.int32),
        "Multinomial": (D.Multinomial(logits, 4, False, torch.int32, 1), torch.int32),
        "Uniform": (D.Uniform(-ones, ones, 1, False, True), F64),
        "Gamma": (D.Gamma(ones, ones, 1, True), F64),
        "Beta": (D.Beta(ones, ones, 1, True), F64),
        "Dirichlet": (D.Dirichlet(torch.ones(2, 3, dtype=F64), 1, True), F64),
        "Laplace": (D.Laplace(ones, ones, 1, False, True, True), F64),
        "Concrete": (D.Concrete(ones[0], logits, 1, False, True, True), F64),
        "MultivariateNormalCholesky": (
            D.MultivariateNormalCholesky(torch.zeros(2, 3, dtype=F64), eye, 1, False, True,
                                         True), F64),
    }[name]


@pytest.mark.parametrize("name", ["Bernoulli", "Categorical", "OnehotCategorical", "Poisson",
                                  "Binomial", "Multinomial", "Uniform", "Gamma", "Beta",
                                  "Dirichlet", "Laplace", "Concrete",
                                  "MultivariateNormalCholesky"])
def test_zhusuan_positional_calls_mean_what_they_say(name):
    dist, sample_dtype = _positional_call(name)
    assert dist.group_ndims == (2 if name == "Binomial" else 1)
    assert dist.sample().dtype == sample_dtype
    zhusuan = ZHUSUAN[name]
    if "check_numerics" in zhusuan:
        assert dist.check_numerics
    if "is_reparameterized" in zhusuan:
        assert not dist.is_reparameterized
    if "use_path_derivative" in zhusuan:
        assert dist.use_path_derivative
    if "normalize_logits" in zhusuan:
        assert dist.normalize_logits is False


# -- normalize_logits -----------------------------------------------------------------------
COUNTS = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0]], dtype=F64)


def _log_coefficient(counts):
    return torch.lgamma(counts.sum(-1) + 1) - torch.lgamma(counts + 1).sum(-1)


@pytest.mark.parametrize("cls", [D.UnnormalizedMultinomial, D.BagofCategoricals])
def test_unnormalized_multinomial_normalize_logits(cls):
    logits = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, -3.0]], dtype=F64)
    normalized = torch.log_softmax(logits, -1)
    expected = (COUNTS * normalized).sum(-1)
    torch.testing.assert_close(cls(logits).log_prob(COUNTS), expected)
    torch.testing.assert_close(cls(logits, normalize_logits=True).log_prob(COUNTS), expected)
    # False: the logits are trusted as they are (ZhuSuan's shortcut for normalized ones).
    torch.testing.assert_close(cls(logits, normalize_logits=False).log_prob(COUNTS),
                               (COUNTS * logits).sum(-1))
    torch.testing.assert_close(cls(normalized, normalize_logits=False).log_prob(COUNTS), expected)
    with pytest.raises(ValueError, match="`normalize_logits` must be a bool"):
        cls(logits, normalize_logits="no")


@pytest.mark.parametrize("n_experiments", [None, 3])
def test_multinomial_normalize_logits(n_experiments):
    logits = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, -3.0]], dtype=F64)
    normalized = torch.log_softmax(logits, -1)
    expected = _log_coefficient(COUNTS) + (COUNTS * normalized).sum(-1)
    for normalize, given_logits, value in [(True, logits, expected),
                                           (False, normalized, expected),
                                           (False, logits, _log_coefficient(COUNTS)
                                            + (COUNTS * logits).sum(-1))]:
        dist = D.Multinomial(given_logits, n_experiments, normalize_logits=normalize)
        torch.testing.assert_close(dist.log_prob(COUNTS), value)
    # Sampling does not depend on it: the draws come from softmax(logits) either way.
    torch.manual_seed(0)
    draws = D.Multinomial(logits, 3, normalize_logits=False).sample(5)
    assert draws.shape == (5, 2, 3) and (draws.sum(-1) == 3).all()


def test_normalize_logits_through_a_bayesian_net():
    bn = ppl.BayesianNet(observed={"x": COUNTS})
    logits = torch.zeros(2, 3, dtype=F64)
    x = bn.unnormalized_multinomial("x", logits, normalize_logits=False, group_ndims=1)
    assert x.log_prob(COUNTS).item() == 0.0


# -- the observation-shape error (issue 20, item 8) -------------------------------------------
def test_observation_shape_error_prints_the_leading_axes_once():
    bn = ppl.BayesianNet(observed={"x": torch.zeros(3, 4, 8)})
    with pytest.raises(ValueError) as info:
        bn.normal("x", torch.zeros(4, 8), std=1., n_samples=2)
    message = str(info.value)
    assert message.startswith("node 'x': bad observation: Normal: `given` of shape (3, 4, 8)")
    assert re.search(re.escape("(2,) + batch_shape (4, 8) + value_shape () = (2, 4, 8)"), message)
    assert "(2,) + (2," not in message


def test_given_shape_error_without_leading_axes():
    with pytest.raises(ValueError, match=re.escape(
            "`given` of shape (3, 5) does not broadcast against (...) + batch_shape (4,) + "
            "value_shape (8,) = (..., 4, 8)")):
        D.OnehotCategorical(torch.zeros(4, 8)).log_prob(torch.zeros(3, 5))
