"""AIS recovers exact log-normalizers.

Each batch entry r is an independent AIS run (its own chains), so the ratios
exp(log Z^_r - log Z_r) are independent with mean 1 (AIS is unbiased for Z):
their mean must be within 5 standard errors of 1. The runs' spread of
log Z^_r - log Z_r must also be small, far below plain importance sampling
from the same proposal, which shows the annealing does its job.
"""
import copy
import math

import pytest
import torch

import inference
import ppl
from tests.inference._vi_reference import per_replicate_stats

A = torch.tensor([[1.0, 0.5], [-0.3, 1.2], [0.8, -0.7]])
NOISE = 0.5


def _linear_gaussian():
    """z [chains, n, 2] ~ N(0, I); x [n, 3] | z ~ N(A z, NOISE^2 I): p(x) = N(0, AA' + s^2 I)."""
    @ppl.meta_bayesian_net(scope="linear_gaussian")
    def build(n, chains):
        bn = ppl.BayesianNet()
        z = bn.normal("z", torch.zeros(n, 2), std=1., group_ndims=1, n_samples=chains)
        bn.normal("x", (z[..., None, :] * A).sum(-1), std=NOISE, group_ndims=1)  # A z
        return bn
    return build


def _assert_recovers(estimates, exact, max_se):
    mean, se = per_replicate_stats(torch.exp(estimates.double() - exact.double()))
    assert se < max_se
    assert abs(float(mean) - 1.) <= 5 * float(se), (float(mean), float(se))


def test_ais_recovers_the_marginal_of_a_linear_gaussian_model():
    n, chains = 40, 8
    marginal = torch.distributions.MultivariateNormal(torch.zeros(3),
                                                      A @ A.T + NOISE ** 2 * torch.eye(3))
    x = marginal.sample((n,))
    exact = marginal.log_prob(x)
    build = _linear_gaussian()
    ais = inference.AIS(build(n, chains), None, inference.HMC(step_size=0.2, n_leapfrogs=5,
                                                              adapt_step_size=True,
                                                              target_acceptance_rate=0.65),
                        {"x": x}, n_temperatures=100)
    mean_estimate = ais.run()
    estimates = ais.estimates
    assert estimates.shape == (n,) and ais.log_weights.shape == (chains, n)
    torch.testing.assert_close(mean_estimate, estimates.mean())
    _assert_recovers(estimates, exact, max_se=0.05)
    spread = float((estimates - exact).std())
    with torch.no_grad():
        plain_is = inference.is_loglikelihood(build(n, chains), {"x": x}, axis=0)
    # over seeds 0-3: AIS 0.15-0.23, plain IS 2.3-4.3 (heavy-tailed, so a ratio bound)
    assert spread < 0.3 and spread < 0.2 * float((plain_is - exact).std())
    assert len(ais.step_sizes) == len(ais.acceptance_rates) == 99
    assert 0.3 < sum(ais.acceptance_rates) / 99 < 0.95


def test_ais_with_a_plain_log_joint_and_a_guide_template_as_proposal():
    """Target: an unnormalized correlated 2-D Gaussian, log Z = 3.7; proposal: a
    `@ppl.reuse_variables` template N(0, 2^2 I), scored along the chains."""
    n, chains, log_c = 30, 8, 3.7
    mean, cov = torch.tensor([1., -1.]), torch.tensor([[1., 0.8], [0.8, 1.]])
    precision, log_det = torch.linalg.inv(cov), float(torch.logdet(cov))

    def log_joint(values):
        d = values["z"] - mean
        quadratic = (d[..., :, None] * precision * d[..., None, :]).sum((-2, -1))
        return -0.5 * quadratic - math.log(2 * math.pi) - 0.5 * log_det + log_c

    @ppl.reuse_variables(scope="wide")
    def proposal():
        bn = ppl.BayesianNet()
        bn.normal("z", torch.zeros(n, 2), std=2., group_ndims=1, n_samples=chains)
        return bn

    ais = inference.AIS(log_joint, proposal, inference.HMC(step_size=0.3, n_leapfrogs=5), {},
                        n_temperatures=60)
    ais.run()
    _assert_recovers(ais.estimates, torch.full((n,), log_c), max_se=0.05)
    assert ais.step_sizes == [0.3] * 59


def test_ais_moves_a_positive_latent_through_its_bijection():
    """Gamma-Poisson: z ~ Gamma(a, b), x_i | z ~ Poisson(z), i = 1..m; p(x) in closed
    form. HMC runs on log z (the log-Jacobian enters the tempered densities)."""
    n, chains, m, a, b = 30, 8, 5, 2., 0.5
    x = torch.poisson(torch.full((n, m), 3.))

    @ppl.meta_bayesian_net(scope="gamma_poisson")
    def build():
        bn = ppl.BayesianNet()
        z = bn.gamma("z", torch.full((n,), a), torch.full((n,), b), n_samples=chains)
        bn.poisson("x", z[..., None].expand(chains, n, m), group_ndims=1)
        return bn

    total = x.sum(-1)
    exact = a * math.log(b) - math.lgamma(a) - torch.lgamma(x + 1.).sum(-1) \
        + torch.lgamma(a + total) - (a + total) * math.log(b + m)
    ais = inference.AIS(build(), None, inference.HMC(step_size=0.2, n_leapfrogs=5,
                                                     adapt_step_size=True),
                        {"x": x}, n_temperatures=60)
    ais.run()
    _assert_recovers(ais.estimates, exact, max_se=0.05)


def test_bad_input_is_reported_with_the_node():
    @ppl.meta_bayesian_net(scope="coin")
    def coin():
        bn = ppl.BayesianNet()
        bn.bernoulli("z", torch.zeros(3), n_samples=2)
        return bn
    with pytest.raises(ValueError, match="latent 'z' has a discrete support"):
        inference.AIS(coin(), observed={}, n_temperatures=3).run()

    with pytest.raises(ValueError, match="cannot sample its latents"):
        inference.AIS(lambda values: values["z"].sum(), observed={})

    def partial():
        bn = ppl.BayesianNet()
        bn.normal("z", torch.zeros(3, 2), std=1., group_ndims=1, n_samples=2)
        return bn
    with pytest.raises(ValueError, match="model node 'w' is latent"):
        @ppl.meta_bayesian_net(scope="zw")
        def two():
            bn = ppl.BayesianNet()
            z = bn.normal("z", torch.zeros(3, 2), std=1., group_ndims=1, n_samples=2)
            bn.normal("w", z, std=1., group_ndims=1)
            return bn
        inference.AIS(two(), partial, observed={}, n_temperatures=3).run()
    with pytest.raises(ValueError, match="n_temperatures"):
        inference.AIS(_linear_gaussian()(2, 2), observed={"x": torch.zeros(2, 3)},
                      n_temperatures=0)


def test_lntm_style_proposal_samples_only_the_latent_nodes():
    """ZhuSuan's LNTM evaluation: `AIS(model, proposal, hmc, observed, latent)` with the
    proposal the model with its log joint replaced by the prior of eta; the word counts x
    (UnnormalizedMultinomial) cannot be sampled, so only `latent` may be drawn from it.
    eta ~ N(0, 1) per document, x | eta ~ bag of 2 categoricals with logits (eta, 0):
    log p(x) by quadrature. The final samples are written into the latent tensor."""
    torch.manual_seed(0)
    n, chains = 30, 8
    x = torch.randint(0, 6, (n, 2)).float()

    def lntm_like():
        bn = ppl.BayesianNet()
        eta = bn.normal("eta", torch.zeros(n), std=1., n_samples=chains)
        bn.unnormalized_multinomial("x", torch.stack([eta, torch.zeros_like(eta)], -1))
        return bn

    model = ppl.meta_bayesian_net(scope="lntm_like")(lntm_like)()
    proposal = ppl.meta_bayesian_net(scope="lntm_prior",
                                     log_joint=lambda bn: bn.cond_log_prob("eta"))(lntm_like)()
    eta = torch.zeros(chains, n)
    hmc = inference.HMC(step_size=0.2, n_leapfrogs=5, adapt_step_size=True,
                        target_acceptance_rate=0.65)
    ais = inference.AIS(model, proposal, hmc, {"x": x}, {"eta": eta}, 50, 10, False)
    ais.run()

    z = torch.linspace(-12., 12., 24001, dtype=torch.float64)
    log_sig = torch.nn.functional.logsigmoid
    log_integrand = (torch.distributions.Normal(0., 1.).log_prob(z)
                     + x[:, :1].double() * log_sig(z) + x[:, 1:].double() * log_sig(-z))
    exact = torch.logsumexp(log_integrand, -1) + math.log(float(z[1] - z[0]))
    _assert_recovers(ais.estimates, exact, max_se=0.05)
    assert eta.abs().sum() > 0 and eta.shape == (chains, n)


def test_arguments_follow_zhusuan():
    build = _linear_gaussian()
    with pytest.raises(TypeError, match="pass the observations as `observed=`"):
        inference.AIS(build(2, 2), {"x": torch.zeros(2, 3)})
    with pytest.raises(TypeError, match="`hmc` must be an inference.HMC"):
        inference.AIS(build(2, 2), None, 0.1, {"x": torch.zeros(2, 3)})
    with pytest.raises(TypeError):  # axis, schedule and progress are keyword only
        inference.AIS(build(2, 2), None, None, {"x": torch.zeros(2, 3)}, None, 3, 0, False, 0)
    model = build(2, 2)
    proposal = copy.copy(model)  # ZhuSuan's LNTM sets the copy's own log_joint; this does not
    with pytest.raises(ValueError, match="proposal has the model's template and log_joint"):
        inference.AIS(model, proposal, None, {"x": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="latent 'w' is not a latent stochastic node of the "
                                         "model \\(its latent nodes: z\\)"):
        inference.AIS(build(2, 2), None, None, {"x": torch.zeros(2, 3)}, ["w"], 3).run()


def test_sigmoid_schedule_runs_from_zero_to_one():
    betas = inference.ais.sigmoid_schedule(50)
    assert betas[0] == 0. and betas[-1] == pytest.approx(1.) and len(betas) == 51
    assert all(b1 > b0 for b0, b1 in zip(betas, betas[1:]))
    assert math.isclose(betas[25], 0.5, abs_tol=1e-12)
