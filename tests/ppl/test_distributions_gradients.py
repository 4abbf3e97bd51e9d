"""Gradients: through samples exactly when `is_reparameterized`, correct in
expectation, and `use_path_derivative` cutting log_prob's direct dependence on
the parameters."""
import numpy as np
import pytest
import scipy.stats as ss
import torch
from torch.distributions import constraints

import ppl.distributions as D

F64 = torch.float64


def eye(d):
    return np.eye(d) + np.tril(np.full((d, d), 0.3), -1)


# name -> (constructor from parameter tensors and options, parameter values,
# E[x] (of the first coordinate) as a function of the numpy parameters, or None
# when it is infinite or has no closed form here).
CONTINUOUS = {
    "Normal(std)": (lambda p, **kw: D.Normal(p["mean"], std=p["std"], **kw),
                    {"mean": 0.5, "std": 1.5}, lambda p: p["mean"]),
    "Normal(logstd)": (lambda p, **kw: D.Normal(p["mean"], logstd=p["logstd"], **kw),
                       {"mean": 0.5, "logstd": 0.2}, lambda p: p["mean"]),
    "FoldNormal": (lambda p, **kw: D.FoldNormal(p["mean"], std=p["std"], **kw),
                   {"mean": 0.5, "std": 1.5},
                   lambda p: ss.foldnorm(abs(p["mean"]) / p["std"], scale=p["std"]).mean()),
    "LogNormal": (lambda p, **kw: D.LogNormal(p["mean"], std=p["std"], **kw),
                  {"mean": 0.2, "std": 0.5}, lambda p: np.exp(p["mean"] + p["std"] ** 2 / 2)),
    "Uniform": (lambda p, **kw: D.Uniform(p["minval"], p["maxval"], **kw),
                {"minval": -1.0, "maxval": 2.0}, lambda p: (p["minval"] + p["maxval"]) / 2),
    "Gamma": (lambda p, **kw: D.Gamma(p["alpha"], p["beta"], **kw),
              {"alpha": 2.0, "beta": 1.5}, lambda p: p["alpha"] / p["beta"]),
    "InverseGamma": (lambda p, **kw: D.InverseGamma(p["alpha"], p["beta"], **kw),
                     {"alpha": 4.0, "beta": 1.5}, lambda p: p["beta"] / (p["alpha"] - 1)),
    "Beta": (lambda p, **kw: D.Beta(p["alpha"], p["beta"], **kw),
             {"alpha": 2.0, "beta": 3.0}, lambda p: p["alpha"] / (p["alpha"] + p["beta"])),
    "Laplace": (lambda p, **kw: D.Laplace(p["loc"], p["scale"], **kw),
                {"loc": 0.5, "scale": 1.5}, lambda p: p["loc"]),
    "Cauchy": (lambda p, **kw: D.Cauchy(p["loc"], p["scale"], **kw),
               {"loc": 0.5, "scale": 1.5}, None),
    "Logistic": (lambda p, **kw: D.Logistic(p["loc"], p["scale"], **kw),
                 {"loc": 0.5, "scale": 1.5}, lambda p: p["loc"]),
    "StudentT": (lambda p, **kw: D.StudentT(p["df"], p["loc"], p["scale"], **kw),
                 {"df": 5.0, "loc": 0.5, "scale": 1.5}, lambda p: p["loc"]),
    "HalfNormal": (lambda p, **kw: D.HalfNormal(p["std"], **kw),
                   {"std": 1.5}, lambda p: p["std"] * np.sqrt(2 / np.pi)),
    "HalfCauchy": (lambda p, **kw: D.HalfCauchy(p["scale"], **kw), {"scale": 1.5}, None),
    "Exponential": (lambda p, **kw: D.Exponential(p["rate"], **kw),
                    {"rate": 1.5}, lambda p: 1 / p["rate"]),
    "BinConcrete": (lambda p, **kw: D.BinConcrete(p["temperature"], p["logits"], **kw),
                    {"temperature": 0.7, "logits": 0.5}, None),
    "MultivariateNormalCholesky": (
        lambda p, **kw: D.MultivariateNormalCholesky(p["mean"], p["cov_tril"], **kw),
        {"mean": np.array([0.5, -1.0]), "cov_tril": eye(2)}, lambda p: p["mean"][0]),
    "MatrixVariateNormalCholesky": (
        lambda p, **kw: D.MatrixVariateNormalCholesky(p["mean"], p["u_tril"], p["v_tril"], **kw),
        {"mean": np.zeros((2, 3)), "u_tril": eye(2), "v_tril": eye(3)},
        lambda p: p["mean"][0, 0]),
    "Dirichlet": (lambda p, **kw: D.Dirichlet(p["alpha"], **kw),
                  {"alpha": np.array([2.0, 0.7, 3.0])}, lambda p: p["alpha"][0] / p["alpha"].sum()),
    "ExpConcrete": (lambda p, **kw: D.ExpConcrete(p["temperature"], p["logits"], **kw),
                    {"temperature": 0.7, "logits": np.array([0.5, -1.0, 0.0])}, None),
    "Concrete": (lambda p, **kw: D.Concrete(p["temperature"], p["logits"], **kw),
                 {"temperature": 0.7, "logits": np.array([0.5, -1.0, 0.0])}, None),
}

# name -> constructor from one scalar logit-like leaf and options.
DISCRETE = {
    "Bernoulli": lambda p, **kw: D.Bernoulli(p, **kw),
    "Categorical": lambda p, **kw: D.Categorical(p * torch.arange(3.0), **kw),
    "Poisson": lambda p, **kw: D.Poisson(p.exp(), **kw),
    "Binomial": lambda p, **kw: D.Binomial(p, 4, **kw),
    "Multinomial": lambda p, **kw: D.Multinomial(p * torch.arange(3.0), n_experiments=4, **kw),
    "OnehotCategorical": lambda p, **kw: D.OnehotCategorical(p * torch.arange(3.0), **kw),
}


NOT_HERE = {"Distribution", "Empirical", "Implicit",  # no density: test_distributions_errors
            "ImproperUniform",  # parameter-free: test_improper_uniform_is_not_reparameterized
            "Flow", "FlowDistribution",  # flows have their own tests
            "Autoregressive"}  # so has it: tests/ppl/distributions/test_autoregressive.py


def leaves(values, batch=()):
    """Parameters as float64 leaves requiring grad, with `batch` axes in front."""
    out = {}
    for name, value in values.items():
        value = torch.as_tensor(value, dtype=F64)
        out[name] = value.expand(tuple(batch) + value.shape).clone().requires_grad_(True)
    return out


def build(name, params, **options):
    return CONTINUOUS[name][0](params, **options)


def test_every_continuous_distribution_is_listed():
    public = {getattr(D, name) for name in set(D.__all__) - NOT_HERE}
    continuous = {cls for cls in public if cls.is_continuous}
    listed = {type(build(name, leaves(CONTINUOUS[name][1]))) for name in CONTINUOUS}
    assert {cls.__name__ for cls in continuous - listed} == set()


@pytest.mark.parametrize("name", sorted(CONTINUOUS))
def test_reparameterized_samples_carry_gradients_to_every_parameter(name):
    params = leaves(CONTINUOUS[name][1])
    dist = build(name, params)
    assert dist.is_reparameterized
    samples = dist.sample(10)
    assert samples.requires_grad
    weighted = (samples * torch.rand_like(samples)).sum()  # no cancellation by symmetry
    found = torch.autograd.grad(weighted, list(params.values()), allow_unused=True)
    for param, grad in zip(params, found):
        assert grad is not None, f"no gradient reaches `{param}`"
        assert torch.isfinite(grad).all() and (grad != 0).any(), f"`{param}`: {grad}"


@pytest.mark.parametrize("name", sorted(CONTINUOUS))
def test_non_reparameterized_samples_carry_no_gradient(name):
    params = leaves(CONTINUOUS[name][1])
    dist = build(name, params, is_reparameterized=False)
    assert not dist.is_reparameterized
    for samples in (dist.sample(), dist.sample(3)):
        assert not samples.requires_grad and samples.grad_fn is None


@pytest.mark.parametrize("name", sorted(DISCRETE))
def test_discrete_samples_carry_no_gradient(name):
    logits = torch.tensor(0.3, dtype=F64, requires_grad=True)
    dist = DISCRETE[name](logits)
    assert not dist.is_reparameterized
    assert not dist.sample(3).requires_grad
    assert dist.log_prob(dist.sample(3)).requires_grad  # the score function still works


PATHWISE = sorted(name for name, case in CONTINUOUS.items() if case[2] is not None)


@pytest.mark.parametrize("name", PATHWISE)
def test_pathwise_gradient_matches_the_derivative_of_the_mean(name):
    """The mean over draws of d x / d theta estimates d E[x] / d theta.

    One draw per copy of the parameters (a batch of n leaves), so the per-draw
    gradients give the standard error; the truth is a central difference of E[x].
    """
    make, values, mean = CONTINUOUS[name]
    n = 4000
    params = leaves(values, batch=(n,))
    samples = make(params).sample()
    first = samples.reshape(n, -1)[:, 0]  # E[x_0]: the first coordinate for vectors
    grads = torch.autograd.grad(first.sum(), list(params.values()))
    for (param, value), grad in zip(values.items(), grads):
        value = np.asarray(value, dtype=np.float64)
        grad = grad.reshape(n, -1).numpy()
        for j in range(value.size):
            step = np.zeros(value.size)
            step[j] = 1e-6
            plus = {**values, param: (value.ravel() + step).reshape(value.shape)}
            minus = {**values, param: (value.ravel() - step).reshape(value.shape)}
            truth = (mean(plus) - mean(minus)) / 2e-6
            se = grad[:, j].std() / np.sqrt(n)
            assert abs(grad[:, j].mean() - truth) < 5 * se + 1e-6, (param, j)


def grads(output, inputs):
    """d output.sum() / d inputs, zeros where an input is unused (graph kept)."""
    if not output.requires_grad:  # e.g. Uniform's density is flat in the value
        return [torch.zeros_like(x) for x in inputs]
    found = torch.autograd.grad(output.sum(), inputs, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, found)]


@pytest.mark.parametrize("name", sorted(CONTINUOUS))
def test_path_derivative_log_prob_depends_on_parameters_only_through_the_sample(name):
    params = leaves(CONTINUOUS[name][1])
    plain = build(name, params)
    path = build(name, params, use_path_derivative=True)
    theta = list(params.values())
    z = plain.sample(5)

    # With a fixed value, no gradient reaches the parameters, but the value's is intact.
    fixed = z.detach().requires_grad_(True)
    dz_path, *dtheta = grads(path.log_prob(fixed), [fixed] + theta)
    assert all((g == 0).all() for g in dtheta)
    torch.testing.assert_close(dz_path, grads(plain.log_prob(fixed), [fixed])[0])

    # Through a reparameterized sample: the total gradient minus the explicit (score) term.
    total = grads(plain.log_prob(z), theta)
    explicit = grads(plain.log_prob(z.detach()), theta)
    pathwise = grads(path.log_prob(z), theta)
    assert any((g != 0).any() for g in pathwise) or name == "Uniform"
    for t, e, p in zip(total, explicit, pathwise):
        torch.testing.assert_close(p, t - e, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(DISCRETE))
def test_path_derivative_discrete_log_prob_has_no_parameter_gradient(name):
    logits = torch.tensor(0.3, dtype=F64, requires_grad=True)
    path = DISCRETE[name](logits, use_path_derivative=True)
    assert DISCRETE[name](logits).log_prob(path.sample(3)).requires_grad
    assert not path.log_prob(path.sample(3)).requires_grad


def test_improper_uniform_is_not_reparameterized():
    dist = D.ImproperUniform(constraints.positive, batch_shape=[3])
    assert not dist.is_reparameterized and not dist.sample(2).requires_grad
