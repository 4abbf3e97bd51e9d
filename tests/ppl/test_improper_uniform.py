"""`ImproperUniform`: a flat density on a support, for Stan's parameters without a prior."""
import pytest
import torch
from torch.distributions import biject_to, constraints

import ppl
from ppl.distributions import ImproperUniform

SUPPORTS = [constraints.real, constraints.positive, constraints.interval(-1., 3.),
            constraints.greater_than(2.)]


@pytest.mark.parametrize("support", SUPPORTS, ids=str)
def test_log_prob_is_zero_on_the_support_with_zero_gradient(support):
    dist = ImproperUniform(support, batch_shape=[3], dtype=torch.float64, group_ndims=1)
    given = biject_to(support)(torch.randn(5, 3, dtype=torch.float64)).requires_grad_()
    log_p = dist.log_prob(given)
    assert log_p.shape == (5,) and log_p.dtype == torch.float64
    assert torch.equal(log_p, torch.zeros(5, dtype=torch.float64))
    (grad,) = torch.autograd.grad(log_p.sum(), given)
    assert torch.equal(grad, torch.zeros_like(given))


@pytest.mark.parametrize("support", SUPPORTS, ids=str)
def test_samples_are_points_of_the_support_with_stan_init_spread(support):
    torch.manual_seed(0)
    samples = ImproperUniform(support, batch_shape=[2], dtype=torch.float64).sample(4000)
    assert samples.shape == (4000, 2) and samples.dtype == torch.float64
    assert bool(support.check(samples).all())
    unconstrained = biject_to(support).inv(samples)   # Uniform(-2, 2) there
    assert float(unconstrained.min()) >= -2. and float(unconstrained.max()) <= 2.
    # mean 0 and variance 4/3 within 5 standard errors (n = 8000 draws; var of the
    # sample variance ~ (mu4 - sigma^4) / n = (16/5 - 16/9) / n)
    assert abs(float(unconstrained.mean())) < 5 * (4 / 3 / 8000) ** 0.5
    assert abs(float(unconstrained.var()) - 4 / 3) < 5 * (64 / 45 / 8000) ** 0.5


def test_log_prob_broadcasts_leading_axes_and_sums_group_ndims():
    dist = ImproperUniform(constraints.positive, batch_shape=[2, 3], group_ndims=1)
    assert dist.log_prob(torch.ones(3)).shape == (2,)
    assert dist.log_prob(torch.ones(7, 1, 3)).shape == (7, 2)


def test_values_outside_the_support_are_rejected_by_name():
    bn = ppl.BayesianNet(observed={"sigma": -torch.ones(4)})
    with pytest.raises(ValueError, match=r"node 'sigma'.*outside the support \(positive\)"):
        bn.improper_uniform("sigma", constraints.positive)


def test_bad_supports_are_rejected():
    with pytest.raises(ValueError, match="must be a torch.distributions constraint"):
        ImproperUniform("positive")
    with pytest.raises(ValueError, match="continuous univariate"):
        ImproperUniform(constraints.nonnegative_integer)
    with pytest.raises(ValueError, match="continuous univariate"):
        ImproperUniform(constraints.simplex)


def test_a_flat_prior_leaves_the_likelihood_as_the_log_joint():
    """beta with a flat prior: log p(y, beta) is the likelihood alone."""
    y = torch.tensor([0.5, 1.5, -0.2])
    beta = torch.tensor([0.3, -1.0])
    bn = ppl.BayesianNet(observed={"beta": beta, "y": y[:, None]})
    b = bn.improper_uniform("beta", constraints.real, [2])
    bn.normal("y", b, std=1.)
    expected = torch.distributions.Normal(beta, 1.).log_prob(y[:, None])
    torch.testing.assert_close(bn.log_joint(), expected)
