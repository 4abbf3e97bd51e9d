"""`log_prob` of every distribution against an independent reference, in float64.

The reference is `scipy.stats` where it has the family; for the Concrete family
and the unnormalized multinomial (which scipy lacks) it is the closed-form density
of Maddison et al. (2017) written with numpy/scipy.special. Parameters, `given`
values and their (mutually broadcasting) shapes come from hypothesis.
"""
import numpy as np
import pytest
import scipy.stats as ss
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import integrate
from scipy.special import expit, gammaln, log_softmax, logsumexp, softmax

import ppl.distributions as D

ATOL = 1e-5
SETTINGS = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CASES = {}  # case name -> (class under test, draw(data) -> (dist, given, expected log_prob))


def case(name, cls):
    def register(draw):
        CASES[name] = (cls, draw)
        return draw
    return register


# -- strategies ----------------------------------------------------------------
def batch_shapes(data, n_params, event_ndims=0):
    """Mutually broadcasting shapes for `n_params` parameters and `given` (last)."""
    shapes = data.draw(hnp.mutually_broadcastable_shapes(
        num_shapes=n_params + 1, min_dims=0, max_dims=3, min_side=1, max_side=3))
    return shapes.input_shapes, shapes.result_shape


def floats(data, shape, lo, hi):
    return data.draw(hnp.arrays(np.float64, shape, elements=st.floats(lo, hi)))


def ints(data, shape, lo, hi):
    return data.draw(hnp.arrays(np.int64, shape, elements=st.integers(lo, hi)))


def simplex(data, shape):
    """Points in the open simplex over the last axis."""
    weights = floats(data, shape, 0.05, 1.0)
    return weights / weights.sum(-1, keepdims=True)


def lower_cholesky(data, batch, d):
    """Well-conditioned lower-triangular factors with positive diagonal."""
    off = np.tril(floats(data, tuple(batch) + (d, d), -1.0, 1.0), -1)
    diag = np.exp(floats(data, tuple(batch) + (d,), -1.0, 1.0))
    return off + diag[..., None] * np.eye(d)


def n_categories(data):
    return data.draw(st.integers(2, 4))


def t(x):
    return torch.as_tensor(x, dtype=torch.float64)


# -- univariate continuous -----------------------------------------------------
def _loc_scale_case(name, cls, scipy_dist, value_range=(-10.0, 10.0)):
    @case(name, cls)
    def draw(data):
        (s_loc, s_scale, s_x), _ = batch_shapes(data, 2)
        loc = floats(data, s_loc, -5.0, 5.0)
        scale = floats(data, s_scale, 0.1, 5.0)
        x = floats(data, s_x, *value_range)
        return cls(t(loc), t(scale)), x, scipy_dist.logpdf(x, loc, scale)


_loc_scale_case("Laplace", D.Laplace, ss.laplace)
_loc_scale_case("Cauchy", D.Cauchy, ss.cauchy)
_loc_scale_case("Logistic", D.Logistic, ss.logistic, (-60.0, 60.0))


@case("Normal(std)", D.Normal)
def _(data):
    (s_mean, s_std, s_x), _ = batch_shapes(data, 2)
    mean, std = floats(data, s_mean, -5.0, 5.0), floats(data, s_std, 0.1, 5.0)
    x = floats(data, s_x, -10.0, 10.0)
    return D.Normal(t(mean), std=t(std)), x, ss.norm.logpdf(x, mean, std)


@case("Normal(logstd)", D.Normal)
def _(data):
    (s_mean, s_logstd, s_x), _ = batch_shapes(data, 2)
    mean, logstd = floats(data, s_mean, -5.0, 5.0), floats(data, s_logstd, -2.0, 1.5)
    x = floats(data, s_x, -10.0, 10.0)
    return D.Normal(t(mean), logstd=t(logstd)), x, ss.norm.logpdf(x, mean, np.exp(logstd))


@case("FoldNormal", D.FoldNormal)
def _(data):
    (s_mean, s_std, s_x), _ = batch_shapes(data, 2)
    mean, std = floats(data, s_mean, -3.0, 3.0), floats(data, s_std, 0.2, 3.0)
    x = floats(data, s_x, 0.0, 8.0)
    return (D.FoldNormal(t(mean), std=t(std)), x,
            ss.foldnorm.logpdf(x, np.abs(mean) / std, scale=std))


@case("LogNormal", D.LogNormal)
def _(data):
    (s_mean, s_logstd, s_x), _ = batch_shapes(data, 2)
    mean, logstd = floats(data, s_mean, -2.0, 2.0), floats(data, s_logstd, -1.5, 1.0)
    x = floats(data, s_x, 0.01, 20.0)
    return (D.LogNormal(t(mean), logstd=t(logstd)), x,
            ss.lognorm.logpdf(x, np.exp(logstd), scale=np.exp(mean)))


@case("Uniform", D.Uniform)
def _(data):
    (s_lo, s_width, s_u), shape = batch_shapes(data, 2)
    lo, width = floats(data, s_lo, -5.0, 5.0), floats(data, s_width, 0.1, 5.0)
    x = lo + width * floats(data, shape, 0.0, 0.999)  # inside [minval, maxval)
    return D.Uniform(t(lo), t(lo + width)), x, ss.uniform.logpdf(x, lo, width)


@case("Gamma", D.Gamma)
def _(data):
    (s_a, s_b, s_x), _ = batch_shapes(data, 2)
    alpha, beta = floats(data, s_a, 0.2, 10.0), floats(data, s_b, 0.1, 5.0)
    x = floats(data, s_x, 0.01, 20.0)
    return D.Gamma(t(alpha), t(beta)), x, ss.gamma.logpdf(x, alpha, scale=1 / beta)


@case("InverseGamma", D.InverseGamma)
def _(data):
    (s_a, s_b, s_x), _ = batch_shapes(data, 2)
    alpha, beta = floats(data, s_a, 0.2, 10.0), floats(data, s_b, 0.1, 5.0)
    x = floats(data, s_x, 0.01, 20.0)
    return D.InverseGamma(t(alpha), t(beta)), x, ss.invgamma.logpdf(x, alpha, scale=beta)


@case("Beta", D.Beta)
def _(data):
    (s_a, s_b, s_x), _ = batch_shapes(data, 2)
    alpha, beta = floats(data, s_a, 0.2, 10.0), floats(data, s_b, 0.2, 10.0)
    x = floats(data, s_x, 0.01, 0.99)
    return D.Beta(t(alpha), t(beta)), x, ss.beta.logpdf(x, alpha, beta)


@case("StudentT", D.StudentT)
def _(data):
    (s_df, s_loc, s_scale, s_x), _ = batch_shapes(data, 3)
    df, loc = floats(data, s_df, 0.5, 30.0), floats(data, s_loc, -5.0, 5.0)
    scale, x = floats(data, s_scale, 0.1, 5.0), floats(data, s_x, -20.0, 20.0)
    return D.StudentT(t(df), t(loc), t(scale)), x, ss.t.logpdf(x, df, loc, scale)


@case("HalfNormal", D.HalfNormal)
def _(data):
    (s_std, s_x), _ = batch_shapes(data, 1)
    std, x = floats(data, s_std, 0.1, 5.0), floats(data, s_x, 0.0, 10.0)
    return D.HalfNormal(t(std)), x, ss.halfnorm.logpdf(x, scale=std)


@case("HalfCauchy", D.HalfCauchy)
def _(data):
    (s_scale, s_x), _ = batch_shapes(data, 1)
    scale, x = floats(data, s_scale, 0.1, 5.0), floats(data, s_x, 0.0, 50.0)
    return D.HalfCauchy(t(scale)), x, ss.halfcauchy.logpdf(x, scale=scale)


@case("Exponential", D.Exponential)
def _(data):
    (s_rate, s_x), _ = batch_shapes(data, 1)
    rate, x = floats(data, s_rate, 0.1, 5.0), floats(data, s_x, 0.0, 20.0)
    return D.Exponential(t(rate)), x, ss.expon.logpdf(x, scale=1 / rate)


def bin_concrete_log_density(x, temperature, logits):
    """Maddison et al. (2017), binary Concrete: lam a x^(-lam-1) (1-x)^(-lam-1) / (a x^-lam + (1-x)^-lam)^2."""
    log_x, log_1mx = np.log(x), np.log1p(-x)
    return (np.log(temperature) + logits - (temperature + 1) * (log_x + log_1mx)
            - 2 * np.logaddexp(logits - temperature * log_x, -temperature * log_1mx))


@case("BinConcrete", D.BinConcrete)
def _(data):
    (s_temp, s_logits, s_x), _ = batch_shapes(data, 2)
    temperature, logits = floats(data, s_temp, 0.2, 3.0), floats(data, s_logits, -3.0, 3.0)
    x = floats(data, s_x, 0.01, 0.99)
    return (D.BinConcrete(t(temperature), t(logits)), x,
            bin_concrete_log_density(x, temperature, logits))


# -- univariate discrete -------------------------------------------------------
def maybe_int(data, x):
    """Discrete `given` may be an integer or a float tensor; both must work."""
    return x.astype(np.int64) if data.draw(st.booleans()) else x.astype(np.float64)


@case("Bernoulli(logits)", D.Bernoulli)
def _(data):
    (s_logits, s_x), _ = batch_shapes(data, 1)
    logits, x = floats(data, s_logits, -8.0, 8.0), ints(data, s_x, 0, 1)
    return D.Bernoulli(t(logits)), maybe_int(data, x), ss.bernoulli.logpmf(x, expit(logits))


@case("Bernoulli(probs)", D.Bernoulli)
def _(data):
    (s_probs, s_x), _ = batch_shapes(data, 1)
    probs, x = floats(data, s_probs, 0.01, 0.99), ints(data, s_x, 0, 1)
    return D.Bernoulli(probs=t(probs)), maybe_int(data, x), ss.bernoulli.logpmf(x, probs)


@case("Poisson", D.Poisson)
def _(data):
    (s_rate, s_x), _ = batch_shapes(data, 1)
    rate, x = floats(data, s_rate, 0.1, 20.0), ints(data, s_x, 0, 40)
    return D.Poisson(t(rate)), maybe_int(data, x), ss.poisson.logpmf(x, rate)


@case("Binomial", D.Binomial)
def _(data):
    (s_logits, s_n, s_x), shape = batch_shapes(data, 2)
    logits, n = floats(data, s_logits, -5.0, 5.0), ints(data, s_n, 0, 20)
    x = np.floor(floats(data, shape, 0.0, 1.0) * n).astype(np.int64)  # in 0..n
    return (D.Binomial(t(logits), torch.as_tensor(n)), maybe_int(data, x),
            ss.binom.logpmf(x, n, expit(logits)))


def _categorical_case(name, use_probs):
    @case(name, D.Categorical)
    def draw(data):
        k = n_categories(data)
        (s_param, s_x), shape = batch_shapes(data, 1)
        x = ints(data, s_x, 0, k - 1)
        if use_probs:
            probs = simplex(data, s_param + (k,))
            dist = D.Categorical(probs=t(probs))
        else:
            logits = floats(data, s_param + (k,), -5.0, 5.0)
            probs, dist = softmax(logits, -1), D.Categorical(t(logits))
        onehot = np.eye(k)[x]
        return dist, maybe_int(data, x), ss.multinomial.logpmf(onehot, 1, probs)


_categorical_case("Categorical(logits)", use_probs=False)
_categorical_case("Categorical(probs)", use_probs=True)


# -- multivariate --------------------------------------------------------------
def _loop(fn, batch, *arrays_and_ndims):
    """Apply `fn` to every batch element of arrays broadcast to `batch` + event shape."""
    broadcast = [np.broadcast_to(a, tuple(batch) + a.shape[a.ndim - nd:])
                 for a, nd in arrays_and_ndims]
    out = np.empty(batch)
    for idx in np.ndindex(*batch):
        out[idx] = fn(*(a[idx] for a in broadcast))
    return out


@case("MultivariateNormalCholesky", D.MultivariateNormalCholesky)
def _(data):
    d = data.draw(st.integers(1, 3))
    (s_mean, s_tril, s_x), shape = batch_shapes(data, 2)
    mean, tril = floats(data, s_mean + (d,), -3.0, 3.0), lower_cholesky(data, s_tril, d)
    x = floats(data, s_x + (d,), -5.0, 5.0)
    expected = _loop(lambda xi, m, l: ss.multivariate_normal.logpdf(xi, m, l @ l.T),
                     shape, (x, 1), (mean, 1), (tril, 2))
    return D.MultivariateNormalCholesky(t(mean), t(tril)), x, expected


@case("MatrixVariateNormalCholesky", D.MatrixVariateNormalCholesky)
def _(data):
    n, p = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    (s_mean, s_u, s_v, s_x), shape = batch_shapes(data, 3)
    mean = floats(data, s_mean + (n, p), -3.0, 3.0)
    u_tril, v_tril = lower_cholesky(data, s_u, n), lower_cholesky(data, s_v, p)
    x = floats(data, s_x + (n, p), -5.0, 5.0)
    expected = _loop(lambda xi, m, a, b: ss.matrix_normal.logpdf(xi, m, a @ a.T, b @ b.T),
                     shape, (x, 2), (mean, 2), (u_tril, 2), (v_tril, 2))
    return D.MatrixVariateNormalCholesky(t(mean), t(u_tril), t(v_tril)), x, expected


def counts(data, shape, k, n):
    """Count vectors over `k` categories summing to `n` on the last axis."""
    draws = ints(data, tuple(shape) + (n,), 0, k - 1)
    return (draws[..., None] == np.arange(k)).sum(-2)


def _multinomial_case(name, give_n):
    @case(name, D.Multinomial)
    def draw(data):
        k, n = n_categories(data), data.draw(st.integers(0, 12))
        (s_logits, s_x), _ = batch_shapes(data, 1)
        logits = floats(data, s_logits + (k,), -5.0, 5.0)
        x = counts(data, s_x, k, n)
        dist = D.Multinomial(t(logits), n_experiments=n if give_n else None)
        return dist, maybe_int(data, x), ss.multinomial.logpmf(x, n, softmax(logits, -1))


_multinomial_case("Multinomial", give_n=True)
_multinomial_case("Multinomial(n_experiments=None)", give_n=False)


@case("UnnormalizedMultinomial", D.UnnormalizedMultinomial)
def _(data):
    k = n_categories(data)
    (s_logits, s_x), _ = batch_shapes(data, 1)
    logits, x = floats(data, s_logits + (k,), -5.0, 5.0), ints(data, s_x + (k,), 0, 6)
    expected = (x * log_softmax(logits, -1)).sum(-1)  # no multinomial coefficient
    return D.UnnormalizedMultinomial(t(logits)), maybe_int(data, x), expected


@case("OnehotCategorical", D.OnehotCategorical)
def _(data):
    k = n_categories(data)
    (s_logits, s_x), _ = batch_shapes(data, 1)
    logits = floats(data, s_logits + (k,), -5.0, 5.0)
    x = np.eye(k)[ints(data, s_x, 0, k - 1)]
    return (D.OnehotCategorical(t(logits)), maybe_int(data, x),
            ss.multinomial.logpmf(x, 1, softmax(logits, -1)))


@case("Dirichlet", D.Dirichlet)
def _(data):
    k = n_categories(data)
    (s_alpha, s_x), shape = batch_shapes(data, 1)
    alpha, x = floats(data, s_alpha + (k,), 0.3, 5.0), simplex(data, s_x + (k,))
    expected = _loop(ss.dirichlet.logpdf, shape, (x, 1), (alpha, 1))
    return D.Dirichlet(t(alpha)), x, expected


def exp_concrete_log_density(y, temperature, logits):
    """Maddison et al. (2017), ExpConcrete: (k-1)! lam^(k-1) prod(a_i e^(-lam y_i)) / (sum a_i e^(-lam y_i))^k."""
    k = y.shape[-1]
    score = logits - temperature[..., None] * y
    return (gammaln(k) + (k - 1) * np.log(temperature) + score.sum(-1)
            - k * logsumexp(score, -1))


def concrete_log_density(x, temperature, logits):
    """Maddison et al. (2017), Concrete: (k-1)! lam^(k-1) prod(a_i x_i^(-lam-1)) / (sum a_i x_i^-lam)^k."""
    k = x.shape[-1]
    log_x = np.log(x)
    return (gammaln(k) + (k - 1) * np.log(temperature)
            + (logits - (temperature[..., None] + 1) * log_x).sum(-1)
            - k * logsumexp(logits - temperature[..., None] * log_x, -1))


def _relaxed_case(name, cls, in_log_space):
    @case(name, cls)
    def draw(data):
        k = n_categories(data)
        (s_temp, s_logits, s_x), _ = batch_shapes(data, 2)
        temperature = floats(data, s_temp, 0.2, 3.0)
        logits = floats(data, s_logits + (k,), -3.0, 3.0)
        x = simplex(data, s_x + (k,))
        if in_log_space:
            x = np.log(x)
            expected = exp_concrete_log_density(x, temperature, logits)
        else:
            expected = concrete_log_density(x, temperature, logits)
        return cls(t(temperature), t(logits)), x, expected


_relaxed_case("ExpConcrete", D.ExpConcrete, in_log_space=True)
_relaxed_case("Concrete", D.Concrete, in_log_space=False)


@case("ImproperUniform", D.ImproperUniform)
def _(data):
    (s_batch, s_x), shape = batch_shapes(data, 1)
    x = floats(data, s_x, 0.0, 10.0)
    dist = D.ImproperUniform(torch.distributions.constraints.nonnegative, batch_shape=s_batch,
                             dtype=torch.float64)
    return dist, x, np.zeros(shape)  # flat: log-density 0 on the support


# -- tests ---------------------------------------------------------------------
NOT_HERE = {"Distribution", "Empirical", "Implicit",  # no density: test_distributions_errors
            "Flow", "FlowDistribution",  # flows have their own tests
            "Autoregressive"}  # so has it: tests/ppl/distributions/test_autoregressive.py


def test_every_distribution_has_a_reference():
    tested = {cls for cls, _ in CASES.values()}
    public = {getattr(D, name) for name in set(D.__all__) - NOT_HERE}
    assert {cls.__name__ for cls in public - tested} == set()


@pytest.mark.parametrize("name", sorted(CASES))
@SETTINGS
@given(data=st.data())
def test_log_prob_matches_reference(name, data):
    _, draw = CASES[name]
    dist, x, expected = draw(data)
    log_p = dist.log_prob(torch.as_tensor(x))
    assert log_p.dtype == torch.float64
    assert tuple(log_p.shape) == np.shape(expected)
    np.testing.assert_allclose(log_p.numpy(), expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(dist.prob(torch.as_tensor(x)).numpy(), np.exp(expected),
                               rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("temperature,logits", [(0.3, -2.0), (0.7, 0.5), (1.0, 0.0),
                                                (2.5, 1.5)])
def test_bin_concrete_density_integrates_to_one(temperature, logits):
    """Mass 1 in total, and sigmoid(logits) above 1/2 (the relaxed Bernoulli's mean sign)."""
    dist = D.BinConcrete(t(temperature), t(logits))
    density = lambda x: dist.prob(t(x)).item()  # noqa: E731
    below, error_below = integrate.quad(density, 0.0, 0.5, limit=200)
    above, error_above = integrate.quad(density, 0.5, 1.0, limit=200)
    assert max(error_below, error_above) < 1e-6
    assert below + above == pytest.approx(1.0, abs=1e-5)
    assert above == pytest.approx(expit(logits), abs=1e-5)


@pytest.mark.parametrize("temperature,logits", [(0.5, (0.3, -1.0)), (2.0, (1.0, 1.0))])
def test_two_class_concrete_is_bin_concrete_of_the_first_coordinate(temperature, logits):
    """For k=2 the Concrete density (over x_1) is BinConcrete(logits_1 - logits_2)."""
    x1 = np.linspace(0.02, 0.98, 25)
    concrete = D.Concrete(t(temperature), t(logits))
    binary = D.BinConcrete(t(temperature), t(logits[0] - logits[1]))
    np.testing.assert_allclose(concrete.log_prob(t(np.stack([x1, 1 - x1], -1))).numpy(),
                               binary.log_prob(t(x1)).numpy(), rtol=0, atol=ATOL)


def test_extreme_logits_stay_finite():
    """Large logit gaps: probabilities underflow, log-probabilities must not."""
    logits = t([1.0, 10.0, 1000.0])
    expected = log_softmax(logits.numpy())
    np.testing.assert_allclose(D.Categorical(logits).log_prob(torch.tensor([0, 1, 2])).numpy(),
                               expected, rtol=1e-12)
    onehot = torch.eye(3, dtype=torch.float64)
    np.testing.assert_allclose(D.OnehotCategorical(logits).log_prob(onehot).numpy(), expected,
                               rtol=1e-12)
    np.testing.assert_allclose(
        D.Multinomial(logits, n_experiments=4).log_prob(t([1, 0, 3])).numpy(),
        np.log(4) + expected[0] + 3 * expected[2], rtol=1e-12)
    assert torch.isfinite(D.Bernoulli(t(-800.0)).log_prob(t(1.0)))


def test_poisson_with_zero_rate():
    dist = D.Poisson(t([0.0, 0.0]))
    np.testing.assert_array_equal(dist.log_prob(t([0.0, 2.0])).numpy(), [0.0, -np.inf])
