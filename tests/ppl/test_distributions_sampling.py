"""Sampling: shapes (with `n_samples`, `group_ndims`, broadcasting `given`) and
goodness of fit of the samples against the distribution's own law.

Statistical checks use fixed seeds and thresholds derived from the estimator
(KS/chi-square p-value > 1e-3; moments within 5 standard errors).
"""
import math
from functools import partial

import numpy as np
import pytest
import scipy.stats as ss
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import expit, logit, softmax
from torch.distributions import constraints

import ppl.distributions as D

F64 = torch.float64


def uniform(batch, lo, hi):
    return lo + (hi - lo) * torch.rand(batch, dtype=F64)


def lower_cholesky(batch, d):
    off = torch.tril(uniform(tuple(batch) + (d, d), -1.0, 1.0), -1)
    return off + torch.diag_embed(uniform(tuple(batch) + (d,), 0.5, 1.5))


# name -> batch shape -> constructor taking the remaining keyword arguments
# (group_ndims, is_reparameterized, ...). Supports do not depend on the batch
# element, so one element's value is valid for every element.
FACTORIES = {
    "Normal(std)": lambda b: partial(D.Normal, uniform(b, -2, 2), std=uniform(b, 0.5, 2)),
    "Normal(logstd)": lambda b: partial(D.Normal, uniform(b, -2, 2), logstd=uniform(b, -1, 1)),
    "FoldNormal": lambda b: partial(D.FoldNormal, uniform(b, -2, 2), std=uniform(b, 0.5, 2)),
    "LogNormal": lambda b: partial(D.LogNormal, uniform(b, -1, 1), std=uniform(b, 0.3, 1)),
    "Bernoulli(logits)": lambda b: partial(D.Bernoulli, uniform(b, -2, 2)),
    "Bernoulli(probs)": lambda b: partial(D.Bernoulli, probs=uniform(b, 0.1, 0.9)),
    "Categorical": lambda b: partial(D.Categorical, uniform(tuple(b) + (3,), -2, 2)),
    "Uniform": lambda b: partial(D.Uniform, torch.full(b, -1.0, dtype=F64),
                                 torch.full(b, 1.0, dtype=F64)),
    "Gamma": lambda b: partial(D.Gamma, uniform(b, 0.5, 4), uniform(b, 0.5, 2)),
    "InverseGamma": lambda b: partial(D.InverseGamma, uniform(b, 2.5, 6), uniform(b, 0.5, 2)),
    "Beta": lambda b: partial(D.Beta, uniform(b, 0.5, 4), uniform(b, 0.5, 4)),
    "Poisson": lambda b: partial(D.Poisson, uniform(b, 0.5, 8)),
    "Binomial": lambda b: partial(D.Binomial, uniform(b, -2, 2), 6),
    "Laplace": lambda b: partial(D.Laplace, uniform(b, -2, 2), uniform(b, 0.5, 2)),
    "Cauchy": lambda b: partial(D.Cauchy, uniform(b, -2, 2), uniform(b, 0.5, 2)),
    "Logistic": lambda b: partial(D.Logistic, uniform(b, -2, 2), uniform(b, 0.5, 2)),
    "StudentT": lambda b: partial(D.StudentT, uniform(b, 1, 10), uniform(b, -2, 2),
                                  uniform(b, 0.5, 2)),
    "HalfNormal": lambda b: partial(D.HalfNormal, uniform(b, 0.5, 2)),
    "HalfCauchy": lambda b: partial(D.HalfCauchy, uniform(b, 0.5, 2)),
    "Exponential": lambda b: partial(D.Exponential, uniform(b, 0.5, 2)),
    "BinConcrete": lambda b: partial(D.BinConcrete, uniform(b, 0.3, 2), uniform(b, -2, 2)),
    "MultivariateNormalCholesky": lambda b: partial(
        D.MultivariateNormalCholesky, uniform(tuple(b) + (2,), -2, 2), lower_cholesky(b, 2)),
    "MatrixVariateNormalCholesky": lambda b: partial(
        D.MatrixVariateNormalCholesky, uniform(tuple(b) + (2, 3), -2, 2),
        lower_cholesky(b, 2), lower_cholesky(b, 3)),
    "Multinomial": lambda b: partial(D.Multinomial, uniform(tuple(b) + (3,), -2, 2),
                                     n_experiments=5),
    "Multinomial(n_experiments=None)": lambda b: partial(
        D.Multinomial, uniform(tuple(b) + (3,), -2, 2)),
    "UnnormalizedMultinomial": lambda b: partial(D.UnnormalizedMultinomial,
                                                 uniform(tuple(b) + (3,), -2, 2)),
    "OnehotCategorical": lambda b: partial(D.OnehotCategorical, uniform(tuple(b) + (3,), -2, 2)),
    "Dirichlet": lambda b: partial(D.Dirichlet, uniform(tuple(b) + (3,), 0.5, 3)),
    "ExpConcrete": lambda b: partial(D.ExpConcrete, uniform(b, 0.3, 2),
                                     uniform(tuple(b) + (3,), -2, 2)),
    "Concrete": lambda b: partial(D.Concrete, uniform(b, 0.3, 2),
                                  uniform(tuple(b) + (3,), -2, 2)),
    "ImproperUniform": lambda b: partial(D.ImproperUniform, constraints.positive,
                                         batch_shape=b, dtype=F64),
}
VALUE_SHAPES = {"Categorical": (), "MultivariateNormalCholesky": (2,),
                "MatrixVariateNormalCholesky": (2, 3), "Multinomial": (3,),
                "Multinomial(n_experiments=None)": (3,), "UnnormalizedMultinomial": (3,),
                "OnehotCategorical": (3,), "Dirichlet": (3,), "ExpConcrete": (3,),
                "Concrete": (3,)}
# Not sampleable: their values are made here.
MAKE_VALUES = {
    "Multinomial(n_experiments=None)": lambda shape: torch.randint(0, 5, shape).to(F64),
    "UnnormalizedMultinomial": lambda shape: torch.randint(0, 5, shape).to(F64),
}
NOT_HERE = {"Distribution", "Empirical", "Implicit",  # no density: test_distributions_errors
            "Flow", "FlowDistribution",  # flows have their own tests
            "Autoregressive"}  # so has it: tests/ppl/distributions/test_autoregressive.py


def values(name, dist, lead):
    """Valid values of shape `lead + batch_shape + value_shape`."""
    shape = tuple(lead) + tuple(dist.batch_shape) + tuple(dist.value_shape)
    if name in MAKE_VALUES:
        return MAKE_VALUES[name](shape)
    if not lead:
        return dist.sample()
    return dist.sample(math.prod(lead)).reshape(shape)


def test_every_distribution_has_a_factory():
    built = {type(FACTORIES[name]((2,))()) for name in FACTORIES}
    public = {getattr(D, name) for name in set(D.__all__) - NOT_HERE}
    assert {cls.__name__ for cls in public - built} == set()


shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)


@pytest.mark.parametrize("name", sorted(FACTORIES))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=shapes, lead=hnp.array_shapes(min_dims=1, max_dims=2, max_side=3),
       n=st.integers(2, 4), data=st.data())
def test_shapes(name, batch, lead, n, data):
    make = FACTORIES[name](batch)
    dist = make()
    value_shape = VALUE_SHAPES.get(name, ())
    assert tuple(dist.batch_shape) == batch
    assert tuple(dist.value_shape) == value_shape
    if name not in MAKE_VALUES:
        assert tuple(dist.sample().shape) == batch + value_shape
        assert tuple(dist.sample(1).shape) == (1,) + batch + value_shape
        assert tuple(dist.sample(n).shape) == (n,) + batch + value_shape

    group_ndims = data.draw(st.integers(0, len(batch)))
    grouped = make(group_ndims=group_ndims)
    kept = batch[:len(batch) - group_ndims]
    x = values(name, dist, lead)
    log_p = dist.log_prob(x)
    assert tuple(log_p.shape) == lead + batch
    grouped_log_p = grouped.log_prob(x)
    assert tuple(grouped_log_p.shape) == lead + kept
    summed = log_p.sum(tuple(range(-group_ndims, 0))) if group_ndims else log_p
    torch.testing.assert_close(grouped_log_p, summed)

    # One value (no batch axes) broadcasts against every batch element.
    one = x[(0,) * (len(lead) + len(batch))]
    assert tuple(one.shape) == value_shape
    torch.testing.assert_close(grouped.log_prob(one),
                               grouped.log_prob(one.expand(batch + value_shape)))
    # Size-1 batch axes and extra leading axes broadcast too.
    ones = x[(0,) * len(lead)].reshape((1,) * len(lead) + batch + value_shape)
    assert tuple(grouped.log_prob(ones).shape) == (1,) * len(lead) + kept


@pytest.mark.parametrize("name,dtype,expected", [
    ("Bernoulli(logits)", None, F64), ("Bernoulli(logits)", torch.int32, torch.int32),
    ("Categorical", None, torch.int64), ("Categorical", torch.int32, torch.int32),
    ("Poisson", None, F64), ("Poisson", torch.int64, torch.int64),
    ("Binomial", torch.int64, torch.int64), ("Multinomial", torch.int32, torch.int32),
    ("OnehotCategorical", None, F64), ("OnehotCategorical", torch.int64, torch.int64),
])
def test_discrete_sample_dtype(name, dtype, expected):
    dist = FACTORIES[name]((2,))(dtype=dtype)
    sample = dist.sample(4)
    assert sample.dtype == expected
    assert torch.isfinite(dist.log_prob(sample)).all()  # an integer sample scores fine


@pytest.mark.parametrize("name", ["UnnormalizedMultinomial", "Multinomial(n_experiments=None)"])
def test_unsampleable_raise(name):
    dist = FACTORIES[name]((2,))()
    with pytest.raises(ValueError, match=f"{name.split('(')[0]}: cannot .*sample"):
        dist.sample()


# -- goodness of fit: continuous univariate (KS on the probability integral transform) ----
def bin_concrete_cdf(x, temperature, logits):
    """P(X <= x) = sigmoid(temperature * logit(x) - logits) (Maddison et al., 2017)."""
    return expit(temperature * logit(x) - logits)


def scipy_cdf(name, p):
    """The cdf of the distribution built by FACTORIES[name], from scipy (numpy params `p`)."""
    return {
        "Normal(std)": lambda: ss.norm(p["mean"], p["std"]).cdf,
        "Normal(logstd)": lambda: ss.norm(p["mean"], np.exp(p["logstd"])).cdf,
        "FoldNormal": lambda: ss.foldnorm(np.abs(p["mean"]) / p["std"], scale=p["std"]).cdf,
        "LogNormal": lambda: ss.lognorm(p["std"], scale=np.exp(p["mean"])).cdf,
        "Uniform": lambda: ss.uniform(p["minval"], p["maxval"] - p["minval"]).cdf,
        "Gamma": lambda: ss.gamma(p["alpha"], scale=1 / p["beta"]).cdf,
        "InverseGamma": lambda: ss.invgamma(p["alpha"], scale=p["beta"]).cdf,
        "Beta": lambda: ss.beta(p["alpha"], p["beta"]).cdf,
        "Laplace": lambda: ss.laplace(p["loc"], p["scale"]).cdf,
        "Cauchy": lambda: ss.cauchy(p["loc"], p["scale"]).cdf,
        "Logistic": lambda: ss.logistic(p["loc"], p["scale"]).cdf,
        "StudentT": lambda: ss.t(p["df"], p["loc"], p["scale"]).cdf,
        "HalfNormal": lambda: ss.halfnorm(scale=p["std"]).cdf,
        "HalfCauchy": lambda: ss.halfcauchy(scale=p["scale"]).cdf,
        "Exponential": lambda: ss.expon(scale=1 / p["rate"]).cdf,
        "BinConcrete": lambda: partial(bin_concrete_cdf, temperature=p["temperature"],
                                       logits=p["logits"]),
    }[name]()


CONTINUOUS_UNIVARIATE = ["Normal(std)", "Normal(logstd)", "FoldNormal", "LogNormal", "Uniform",
                         "Gamma", "InverseGamma", "Beta", "Laplace", "Cauchy", "Logistic",
                         "StudentT", "HalfNormal", "HalfCauchy", "Exponential", "BinConcrete"]


@pytest.mark.parametrize("name", CONTINUOUS_UNIVARIATE)
def test_continuous_samples_fit_the_cdf(name):
    """The cdf (from scipy, whose density log_prob matches) maps samples to U(0, 1)."""
    dist = FACTORIES[name]((3,))(is_reparameterized=False)
    params = {k: v.numpy() for k, v in dist.params.items()}
    samples = dist.sample(2000).numpy()
    assert samples.dtype == np.float64
    pit = scipy_cdf(name, params)(samples)
    assert ss.kstest(pit.ravel(), "uniform").pvalue > 1e-3


# -- goodness of fit: discrete (chi-square against exp(log_prob)) --------------------
def chi_square_pvalue(observed, probs):
    """Pooled chi-square over batch rows [batch, bins].

    Bins expected below 5 are merged into one, itself merged into the smallest
    other bin when still below 5. No draw may fall where the probability is 0.
    """
    observed, probs = np.atleast_2d(observed), np.atleast_2d(probs)
    assert not observed[probs < 1e-12].any(), "draws where log_prob says probability 0"
    stat, dof = 0.0, 0
    for obs, p in zip(observed, probs):
        expected = p * obs.sum()
        small = expected < 5
        if small.any():
            obs = np.append(obs[~small], obs[small].sum())
            expected = np.append(expected[~small], expected[small].sum())
            if expected[-1] < 5:
                smallest = np.argmin(expected[:-1])
                obs[smallest] += obs[-1]
                expected[smallest] += expected[-1]
                obs, expected = obs[:-1], expected[:-1]
        stat += ((obs - expected) ** 2 / expected).sum()
        dof += len(obs) - 1
    return ss.chi2.sf(stat, dof)


def support_probs(dist, support):
    """exp(log_prob) on every point of `support` (shape [m]), per batch element: [batch, m+1],
    the last column holding the mass beyond `support`."""
    grid = torch.as_tensor(support, dtype=F64).reshape((-1,) + (1,) * len(dist.batch_shape))
    probs = dist.log_prob(grid).exp().reshape(len(support), -1).T.numpy()
    return np.concatenate([probs, 1 - probs.sum(-1, keepdims=True)], -1)


def histogram(samples, support):
    """Counts per support point and beyond, per batch element: [batch, m+1]."""
    samples = samples.reshape(samples.shape[0], -1).T.numpy()
    counts = (samples[..., None] == np.asarray(support)).sum(1)
    return np.concatenate([counts, len(samples[0]) - counts.sum(-1, keepdims=True)], -1)


@pytest.mark.parametrize("name,support", [
    ("Bernoulli(logits)", [0, 1]), ("Bernoulli(probs)", [0, 1]), ("Categorical", [0, 1, 2]),
    ("Poisson", list(range(25))), ("Binomial", list(range(7))),
])
def test_discrete_samples_fit_the_pmf(name, support):
    dist = FACTORIES[name]((3,))()
    probs = support_probs(dist, support)
    assert probs[:, -1] == pytest.approx(0, abs=1e-4)  # the pmf sums to 1 on the support
    counts = histogram(dist.sample(3000), support)
    assert chi_square_pvalue(counts, probs.clip(0)) > 1e-3


def onehot_probs(dist):
    """exp(log_prob) of each one-hot vector: [batch, k]."""
    k = dist.value_shape[-1]
    onehots = torch.eye(k, dtype=F64).reshape((k,) + (1,) * len(dist.batch_shape) + (k,))
    return dist.log_prob(onehots).exp().reshape(k, -1).T.numpy()


def argmax_counts(samples):
    k = samples.shape[-1]
    winners = samples.argmax(-1).reshape(samples.shape[0], -1).T.numpy()
    return (winners[..., None] == np.arange(k)).sum(1)


def test_onehot_categorical_samples_fit_the_pmf():
    dist = FACTORIES["OnehotCategorical"]((2,))()
    probs = onehot_probs(dist)
    assert probs.sum(-1) == pytest.approx(1, abs=1e-12)
    samples = dist.sample(3000)
    assert ((samples == 0) | (samples == 1)).all() and (samples.sum(-1) == 1).all()
    assert chi_square_pvalue(argmax_counts(samples), probs) > 1e-3


@pytest.mark.parametrize("name", ["Concrete", "ExpConcrete"])
def test_relaxed_argmax_is_categorical(name):
    """Gumbel-max: the argmax of a (log-)Concrete draw is Categorical(softmax(logits))."""
    dist = FACTORIES[name]((2,))()
    samples = dist.sample(3000)
    if name == "Concrete":
        assert (samples > 0).all()
        torch.testing.assert_close(samples.sum(-1), torch.ones(3000, 2, dtype=F64))
    else:
        torch.testing.assert_close(samples.logsumexp(-1), torch.zeros(3000, 2, dtype=F64))
    probs = softmax(dist.params["logits"].numpy(), -1)
    assert chi_square_pvalue(argmax_counts(samples), probs) > 1e-3


def test_bin_concrete_is_above_one_half_with_probability_sigmoid_logits():
    dist = FACTORIES["BinConcrete"]((3,))()
    above = (dist.sample(3000) > 0.5).sum(0).numpy()
    p = expit(dist.params["logits"].numpy())
    assert chi_square_pvalue(np.stack([above, 3000 - above], -1), np.stack([p, 1 - p], -1)) > 1e-3


# -- moments: within 5 standard errors ------------------------------------------------
def assert_moments(samples, mean, cov):
    """Sample mean and covariance of flattened values [n, d] against the truth.

    Standard errors: sqrt(cov_ii / n) for means and the sample standard deviation
    of the products (x_i - m_i)(x_j - m_j) over sqrt(n) for covariances.
    """
    n = samples.shape[0]
    centered = samples - mean
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean),
                                 5 * np.sqrt(np.diag(cov) / n) + 1e-12)
    products = centered[:, :, None] * centered[:, None, :]
    np.testing.assert_array_less(np.abs(products.mean(0) - cov),
                                 5 * products.std(0) / np.sqrt(n) + 1e-12)


def per_element(samples, value_ndims):
    """[n, *batch, *value] -> list over batch elements of [n, prod(value)] arrays."""
    n = samples.shape[0]
    d = math.prod(samples.shape[samples.dim() - value_ndims:])
    flat = samples.reshape(n, -1, d).numpy()
    return [flat[:, i] for i in range(flat.shape[1])]


def test_dirichlet_moments():
    dist = FACTORIES["Dirichlet"]((2,))()
    for x, alpha in zip(per_element(dist.sample(4000), 1), dist.params["alpha"].numpy()):
        a0, m = alpha.sum(), alpha / alpha.sum()
        assert_moments(x, m, (np.diag(m) - np.outer(m, m)) / (a0 + 1))


def test_multivariate_normal_moments():
    dist = FACTORIES["MultivariateNormalCholesky"]((2,))()
    tril = dist.params["cov_tril"].numpy()
    for x, mean, l in zip(per_element(dist.sample(4000), 1), dist.params["mean"].numpy(), tril):
        assert_moments(x, mean, l @ l.T)


def test_matrix_normal_moments():
    """vec_row(X) has covariance U kron V (row-major flattening)."""
    dist = FACTORIES["MatrixVariateNormalCholesky"]((2,))()
    p = {k: v.numpy() for k, v in dist.params.items()}
    for i, x in enumerate(per_element(dist.sample(4000), 2)):
        u, v = p["u_tril"][i] @ p["u_tril"][i].T, p["v_tril"][i] @ p["v_tril"][i].T
        assert_moments(x, p["mean"][i].ravel(), np.kron(u, v))


def test_multinomial_moments():
    dist = FACTORIES["Multinomial"]((2,))()
    samples = dist.sample(4000)
    assert (samples.sum(-1) == 5).all()
    for x, logits in zip(per_element(samples, 1), dist.params["logits"].numpy()):
        probs = softmax(logits)
        assert_moments(x, 5 * probs, 5 * (np.diag(probs) - np.outer(probs, probs)))


# -- no-density nodes ------------------------------------------------------------------
def test_implicit_sample_is_the_given_tensor_and_carries_gradients():
    theta = torch.tensor([1.0, 2.0], requires_grad=True)
    samples = theta * torch.ones(3, 2)
    dist = D.Implicit(samples, value_shape=[2])
    assert dist.sample() is samples
    assert dist.sample(3) is samples
    assert tuple(dist.batch_shape) == (3,) and tuple(dist.value_shape) == (2,)
    (grad,) = torch.autograd.grad(dist.sample().sum(), theta)
    torch.testing.assert_close(grad, torch.tensor([3.0, 3.0]))
    assert dist.is_reparameterized


def test_empirical_shapes():
    dist = D.Empirical(F64, batch_shape=[4], value_shape=[2, 3], group_ndims=1)
    assert tuple(dist.batch_shape) == (4,) and tuple(dist.value_shape) == (2, 3)
    assert dist.is_continuous and not D.Empirical(torch.int64).is_continuous
