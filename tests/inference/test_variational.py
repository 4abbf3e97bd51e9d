"""Variational objectives: values, the tensor-like surface, node matching and bad input.

Gradient estimators are checked in test_variational_gradients.py.
"""
import math

import pytest
import torch

import inference
import ppl
from tests.inference._vi_reference import D, NormalNormal, per_replicate_stats

M, LOGS = 0.6, math.log(0.9)


@pytest.fixture(scope="module")
def normal():
    return NormalNormal()


def _objective(normal, make, k, R, m=M, logs=LOGS, **guide_kwargs):
    mp, lp = normal.params(R, m, logs)
    q = normal.guide(mp, lp, k, **guide_kwargs)
    return make(normal.template()(k, R), normal.observed(), variational=q, axis=0)


# -- values -------------------------------------------------------------------------------
def test_elbo_behaves_like_its_tensor(normal):
    lower_bound = _objective(normal, inference.elbo, k=3, R=4)
    value = lower_bound.tensor
    assert value.shape == (4,)
    assert torch.equal(torch.mean(lower_bound), value.mean())
    assert torch.equal(lower_bound.mean(), value.mean())
    assert torch.equal(lower_bound + 1., value + 1.)
    assert torch.equal(1. - lower_bound, 1. - value)
    assert torch.equal(-lower_bound, -value)
    assert torch.equal(torch.stack([lower_bound, lower_bound]), torch.stack([value, value]))
    assert float(lower_bound.sum().detach()) == pytest.approx(float(value.sum().detach()))


def test_elbo_value_is_log_p_minus_log_q_at_the_guide_samples(normal):
    lower_bound = _objective(normal, inference.elbo, k=3, R=4)
    z = lower_bound.latent_values["z"]
    log_p = torch.distributions.Normal(normal.mu0, normal.s0).log_prob(z) + \
        torch.distributions.Normal(z, normal.s).log_prob(torch.tensor(normal.x))
    log_q = torch.distributions.Normal(M, math.exp(LOGS)).log_prob(z)
    torch.testing.assert_close(lower_bound.tensor, (log_p - log_q).mean(0))


def test_plain_log_joint_callable_gives_the_same_value(normal):
    k, R = 3, 4
    mp, lp = normal.params(R, M, LOGS)
    q = normal.guide(mp, lp, k)

    def log_joint(values):
        z = values["z"]
        return torch.distributions.Normal(normal.mu0, normal.s0).log_prob(z) + \
            torch.distributions.Normal(z, normal.s).log_prob(values["x"])

    plain = inference.elbo(log_joint, normal.observed(), variational=q, axis=0)
    meta = inference.elbo(normal.template()(k, R), normal.observed(), variational=q, axis=0)
    torch.testing.assert_close(plain.tensor, meta.tensor)
    latent_pairs = inference.elbo(log_joint, normal.observed(),
                                  latent={"z": (q["z"].tensor, q["z"].cond_log_p)}, axis=0)
    torch.testing.assert_close(latent_pairs.tensor, meta.tensor)


def test_elbo_estimates_are_unbiased_with_and_without_analytic_kl(normal):
    R, k = 4000, 1
    exact = float(normal.elbo(torch.tensor(M, dtype=D), torch.tensor(LOGS, dtype=D)))
    for analytic in (False, True):
        mp, lp = normal.params(R, M, LOGS)
        q = normal.guide(mp, lp, k)
        lower_bound = inference.elbo(normal.template()(k, R), normal.observed(),
                                     variational=q, axis=0, analytic_kl=analytic)
        mean, se = per_replicate_stats(lower_bound.tensor)
        assert se < 0.03
        assert abs(float(mean) - exact) <= 5 * float(se)


def test_iw_bound_with_one_sample_is_the_elbo(normal):
    mp, lp = normal.params(5, M, LOGS)
    q = normal.guide(mp, lp, 1)
    model = normal.template()(1, 5)
    lower_bound = inference.elbo(model, normal.observed(), variational=q, axis=0)
    iw = inference.iw_objective(model, normal.observed(), variational=q, axis=0)
    torch.testing.assert_close(iw.tensor, lower_bound.tensor)
    no_axis = inference.importance_weighted_objective(model, normal.observed(), variational=q)
    torch.testing.assert_close(no_axis.tensor[0], lower_bound.tensor)


def test_iw_bound_increases_with_k_towards_log_px(normal):
    """Means of R estimates within 5 SE of the exact L_k (quadrature), and
    L_1 < L_5 < L_50 < log p(x) with gaps far larger than the SEs."""
    R = 2000
    means = []
    for k in (1, 5, 50):
        iw = _objective(normal, inference.iw_objective, k=k, R=R)
        mean, se = per_replicate_stats(iw.tensor)
        exact = float(normal.iw_bound(torch.tensor(M, dtype=D), torch.tensor(LOGS, dtype=D), k))
        assert abs(float(mean) - exact) <= 5 * float(se), (k, float(mean), exact, float(se))
        means.append((float(mean), float(se)))
    for (m1, s1), (m2, s2) in zip(means, means[1:]):
        assert m2 - m1 > 5 * math.hypot(s1, s2)
    assert means[-1][0] < normal.log_px + 5 * means[-1][1]


def test_path_derivative_gradient_vanishes_at_the_posterior(normal):
    """Sticking the landing: with q = p(z|x), log p(x, z) - log q(z) = log p(x) for
    every z, so the path-derivative gradient is exactly zero per sample, while
    the ordinary reparameterization gradient is not (its score term remains)."""
    R, k = 200, 2
    m, logs = normal.post_mean, 0.5 * math.log(normal.post_var)
    per_sample = {}
    for path in (False, True):
        mp, lp = normal.params(R, m, logs)
        lower_bound = inference.elbo(normal.template()(k, R), normal.observed(),
                                     variational=normal.guide(mp, lp, k,
                                                              use_path_derivative=path),
                                     axis=0)
        grads = torch.autograd.grad(lower_bound.sgvb().sum(), [mp, lp])
        per_sample[path] = torch.stack(grads).abs().max()
    assert per_sample[True] < 1e-4
    assert per_sample[False] > 0.1


def test_iw_sgvb_refuses_path_derivative_guides_with_several_samples(normal):
    """Sticking the landing is biased for the IW bound when k > 1 (Tucker et al. 2018)."""
    iw = _objective(normal, inference.iw_objective, k=3, R=2, use_path_derivative=True)
    with pytest.raises(ValueError, match="guide node 'z' has use_path_derivative=True"):
        iw.sgvb()
    single = _objective(normal, inference.iw_objective, k=1, R=2, use_path_derivative=True)
    assert single.sgvb().shape == (2,)


def test_reinforce_subtracts_the_average_of_earlier_steps_only(normal):
    """The baseline of a step must not contain that step's samples (or it is biased):
    with log q a leaf, d cost / d log q = -(l - b) / k, b the average *before* the step."""
    k, R, previous = 4, 3, -2.5
    average = inference.MovingAverage()
    average.value.fill_(previous)
    average.n_updates.fill_(7)
    z = torch.randn(k, R)
    log_q = torch.randn(k, R, requires_grad=True)
    lower_bound = inference.elbo(normal.template()(k, R), normal.observed(),
                                 latent={"z": (z, log_q)}, axis=0)
    cost = lower_bound.reinforce(moving_average=average, decay=0.8)
    signal = lower_bound._log_weight().detach()
    (grad,) = torch.autograd.grad(cost.sum(), log_q)
    torch.testing.assert_close(grad, -(signal - previous) / k)
    torch.testing.assert_close(average.value, 0.8 * previous + 0.2 * signal.mean())


def test_reinforce_keeps_its_moving_average_in_the_model_template(normal):
    template = normal.template()
    mp, lp = normal.params(10, M, LOGS)
    q = normal.guide(mp, lp, 4, is_reparameterized=False)
    lower_bound = inference.elbo(template(4, 10), normal.observed(), variational=q, axis=0)
    lower_bound.reinforce()
    state = template.state_dict()
    assert "layers.reinforce_moving_mean.value" in state
    torch.testing.assert_close(state["layers.reinforce_moving_mean.value"],
                               lower_bound.tensor.detach().mean())
    assert int(state["layers.reinforce_moving_mean.n_updates"]) == 1
    own = inference.MovingAverage()
    lower_bound.reinforce(moving_average=own, decay=0.5)
    assert int(own.n_updates) == 1


def test_guide_template_observed_by_its_meta_bn():
    """A `@ppl.reuse_variables` guide wrapped by `ppl.as_meta_bn` can be scored at given
    values (AIS uses this to evaluate log q along its chains)."""
    @ppl.reuse_variables(scope="q")
    def q_net(n):
        bn = ppl.BayesianNet()
        bn.normal("z", ppl.param("m", torch.zeros(n)), std=1., n_samples=3)
        return bn

    z = torch.ones(3, 2)
    bn = ppl.as_meta_bn(q_net, 2).observe(z=z)
    assert bn["z"].is_observed() and torch.equal(bn["z"].tensor, z)
    assert not q_net(2)["z"].is_observed()


def test_nonfinite_node_names_the_node(normal):
    mp, lp = normal.params(3, M, LOGS)
    q = normal.guide(mp, lp, 2)
    lower_bound = inference.elbo(normal.template()(2, 3), {"x": torch.tensor(math.nan)},
                                 variational=q, axis=0)
    assert lower_bound.nonfinite_node() == "x"
    fine = inference.elbo(normal.template()(2, 3), normal.observed(), variational=q, axis=0)
    assert fine.nonfinite_node() is None


# -- bad input --------------------------------------------------------------------
def _two_latents():
    @ppl.meta_bayesian_net(scope="two")
    def build():
        bn = ppl.BayesianNet()
        z = bn.normal("z", torch.zeros(2), std=1., n_samples=3)
        w = bn.normal("w", torch.zeros(2), std=1., n_samples=3)
        bn.normal("x", z + w, std=1.)
        return bn
    return build()


def _guide(*names, k=3, **kwargs):
    q = ppl.BayesianNet()
    for name in names:
        q.normal(name, torch.zeros(2), std=1., n_samples=k, **kwargs)
    return q


def test_unmatched_latent_is_an_error_naming_it():
    with pytest.raises(ValueError, match="model node 'w' is latent"):
        inference.elbo(_two_latents(), {"x": torch.zeros(2)}, variational=_guide("z"), axis=0)


def test_guide_matching_an_observed_node_is_an_error_naming_it():
    with pytest.raises(ValueError, match="guide node 'x' is observed"):
        inference.elbo(_two_latents(), {"x": torch.zeros(2)},
                       variational=_guide("z", "w", "x"), axis=0)


def test_unknown_observed_name_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'y'"):
        inference.elbo(_two_latents(), {"x": torch.zeros(2), "y": torch.zeros(2)},
                       variational=_guide("z", "w"), axis=0)


def test_guide_node_unknown_to_the_model_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"guide node 'v' is not a node of the model "
                                         r"\(model nodes: [zwx], [zwx], [zwx]\)"):
        inference.elbo(_two_latents(), {"x": torch.zeros(2)},
                       variational=_guide("z", "w", "v"), axis=0)


@pytest.mark.parametrize("k, axis", [(1, 0), (3, None)])
def test_vimco_and_klpq_need_two_samples_on_an_axis(k, axis):
    q = _guide("z", "w", k=k, is_reparameterized=False)
    model = _model_with(k)
    with pytest.raises(ValueError, match="at least 2 samples"):
        inference.iw_objective(model, {"x": torch.zeros(2)}, variational=q, axis=axis).vimco()
    with pytest.raises(ValueError, match="at least 2 samples"):
        inference.klpq(model, {"x": torch.zeros(2)}, variational=q, axis=axis).importance()


def _model_with(k):
    @ppl.meta_bayesian_net(scope="two_k")
    def build():
        bn = ppl.BayesianNet()
        z = bn.normal("z", torch.zeros(2), std=1., n_samples=k)
        w = bn.normal("w", torch.zeros(2), std=1., n_samples=k)
        bn.normal("x", z + w, std=1.)
        return bn
    return build()


def test_estimators_check_the_guide_kind():
    observed = {"x": torch.zeros(2)}
    mean = torch.zeros(2, requires_grad=True)
    q = ppl.BayesianNet()
    q.normal("z", mean, std=1., n_samples=3)
    q.normal("w", mean, std=1., n_samples=3)
    with pytest.raises(ValueError, match="guide node 'z' is reparameterized"):
        inference.elbo(_two_latents(), observed, variational=q, axis=0).reinforce()
    with pytest.raises(ValueError, match="guide node 'z' is reparameterized"):
        inference.iw_objective(_two_latents(), observed, variational=q, axis=0).vimco()

    logits = torch.zeros(2, requires_grad=True)
    discrete = ppl.BayesianNet()
    discrete.bernoulli("z", logits, n_samples=3)

    @ppl.meta_bayesian_net(scope="bits")
    def bits():
        bn = ppl.BayesianNet()
        bn.bernoulli("z", torch.zeros(2), n_samples=3)
        return bn
    with pytest.raises(ValueError, match="guide node 'z' \\(Bernoulli\\) is not reparameterized"):
        inference.elbo(bits(), {}, variational=discrete, axis=0).sgvb()


def test_other_bad_arguments():
    observed = {"x": torch.zeros(2)}
    q = _guide("z", "w", is_reparameterized=False)
    with pytest.raises(ValueError, match="not both and not neither"):
        inference.elbo(_two_latents(), observed, axis=0)
    with pytest.raises(TypeError, match="`variational` must be"):
        inference.elbo(_two_latents(), observed, variational={"z": 1.}, axis=0)
    with pytest.raises(TypeError, match="`axis`"):
        inference.elbo(_two_latents(), observed, variational=q, axis="0")
    with pytest.raises(ValueError, match="`axis`=5 is out of range"):
        inference.elbo(_two_latents(), observed, variational=q, axis=5).tensor
    with pytest.raises(NotImplementedError, match="cannot be evaluated"):
        torch.mean(inference.klpq(_two_latents(), observed, variational=q, axis=0))

    def log_joint(values):
        return values["z"].sum(-1)
    with pytest.raises(ValueError, match="pass `moving_average="):
        inference.elbo(log_joint, {}, latent={"z": (torch.zeros(3, 2), torch.zeros(3))},
                       axis=0).reinforce()
    with pytest.raises(ValueError, match="analytic_kl needs"):
        inference.elbo(log_joint, {}, latent={"z": (torch.zeros(3, 2), torch.zeros(3))},
                       axis=0, analytic_kl=True)
    with pytest.raises(ValueError, match="torch has no closed-form KL"):
        @ppl.meta_bayesian_net(scope="cauchy")
        def cauchy():
            bn = ppl.BayesianNet()
            bn.cauchy("z", torch.zeros(2), 1., n_samples=3)
            return bn
        inference.elbo(cauchy(), {}, variational=_guide("z"), axis=0, analytic_kl=["z"])


# -- ZhuSuan's signatures ---------------------------------------------------------------
@pytest.mark.parametrize("make", [inference.elbo, inference.importance_weighted_objective,
                                  inference.iw_objective, inference.klpq])
def test_arguments_in_zhusuan_order(make):
    """ZhuSuan: (meta_bn, observed, latent=None, axis=None, variational=None)."""
    z = torch.randn(3, 2)
    log_q = torch.distributions.Normal(0., 1.).log_prob(z)
    by_position = make(_two_latents(), {"x": torch.zeros(2), "w": torch.zeros(2)},
                       {"z": (z, log_q)}, 0)
    assert by_position._axis == 0 and list(by_position.latent_values) == ["z"]
    assert by_position.latent_values["z"] is z
    keyword = make(_two_latents(), {"x": torch.zeros(2), "w": torch.zeros(2)}, None, 0,
                   _guide("z"))
    assert keyword._axis == 0 and list(keyword.latent_values) == ["z"]


def test_a_guide_network_given_as_latent_names_the_keyword():
    for make, keyword in [(inference.elbo, "variational"), (inference.klpq, "variational"),
                          (inference.iw_objective, "variational"),
                          (inference.is_loglikelihood, "proposal")]:
        with pytest.raises(TypeError, match=f"pass the guide network by keyword, `{keyword}="):
            make(_two_latents(), {"x": torch.zeros(2)}, _guide("z", "w"), 0)


def test_is_loglikelihood_errors_name_proposal():
    observed = {"x": torch.zeros(2)}
    with pytest.raises(TypeError, match="`proposal` must be"):
        inference.is_loglikelihood(_two_latents(), observed, axis=0, proposal={"z": 1.})
    with pytest.raises(ValueError, match="`proposal`"):
        inference.is_loglikelihood(_two_latents(), observed, {"z": (torch.zeros(3, 2),
                                                                    torch.zeros(3, 2))},
                                   proposal=_guide("z"), axis=0)


def test_analytic_kl_is_keyword_only():
    with pytest.raises(TypeError):
        inference.elbo(_two_latents(), {"x": torch.zeros(2)}, None, 0, _guide("z", "w"), True)


def test_float_of_an_objective_gives_no_requires_grad_warning(recwarn):
    """float(lower_bound) (a 0-d objective), as ZhuSuan's examples print it."""
    loc = torch.zeros(2, requires_grad=True)
    z = loc + torch.randn(3, 2)
    log_q = torch.distributions.Normal(loc, 1.).log_prob(z).sum(-1)
    lower_bound = inference.elbo(lambda values: -values["z"].pow(2).sum(-1), {},
                                 {"z": (z, log_q)}, axis=0)
    assert lower_bound.tensor.dim() == 0 and lower_bound.tensor.requires_grad
    assert math.isfinite(float(lower_bound))
    assert not [w for w in recwarn if "requires_grad" in str(w.message)]


def test_log_mean_exp_and_log_sum_exp_follow_zhusuan():
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(inference.log_sum_exp(x), x.exp().sum().log())
    torch.testing.assert_close(inference.log_mean_exp(x, 1), x.exp().mean(1).log())
    torch.testing.assert_close(inference.log_mean_exp(x, [0, 2], keepdims=True),
                               x.exp().mean((0, 2), keepdim=True).log())
    torch.testing.assert_close(inference.log_sum_exp(x, axis=-1, keepdims=True),
                               x.exp().sum(-1, keepdim=True).log())
    big = torch.tensor([1000., 1000.])
    assert float(inference.log_mean_exp(big)) == pytest.approx(1000.)
