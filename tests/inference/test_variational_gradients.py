"""The gradient estimators are unbiased for the gradients they claim (5 standard errors).

Each test draws R independent replicates side by side: the guide's parameters
are per-replicate leaves of shape [R] (or [R, 2]), so one backward pass of the
summed per-replicate costs gives R independent gradient estimates; their mean
is compared with the exact gradient, the tolerance being 5 standard errors of
that mean (from the spread over replicates). References (see _vi_reference):
closed forms for the ELBO and KL(p || q), a 2-D quadrature for the importance
weighted bound, exact enumeration for the discrete model.
"""
import math

import pytest
import torch

import inference
from tests.inference._vi_reference import NormalNormal, TwoBits, per_replicate_stats

N_SE = 5.
M, LOGS = 0.6, math.log(0.9)     # a guide off the posterior N(1.131, 0.666)
THETA = [0.4, -0.3]              # discrete guide logits


def _grads(cost, params):
    """[R, n]: the per-replicate gradients of per-replicate costs [R]."""
    grads = torch.autograd.grad(cost.sum(), params)
    return torch.cat([g.reshape(cost.shape[0], -1) for g in grads], dim=1)


def _assert_unbiased(grads, exact, max_se):
    """Per-replicate gradients of a cost vs the exact gradient of that cost
    (minus the bound's gradient for ELBO/IW costs)."""
    mean, se = per_replicate_stats(grads)
    exact = exact.to(mean)
    assert (se < max_se).all(), f"too few replicates to test anything: SE {se}"
    assert ((mean - exact).abs() <= N_SE * se).all(), \
        f"estimate {mean} +- {se} (SE) vs exact {exact}"


# -- the Normal-Normal model ----------------------------------------------------
@pytest.fixture(scope="module")
def normal():
    return NormalNormal()


def _normal_grads(normal, estimator, R, k, reparameterized, calls=1, **guide_kwargs):
    """Per-replicate gradients of `estimator(model, observed, guide) -> cost [R]`."""
    template = normal.template()
    out = []
    for _ in range(calls):
        m, logs = normal.params(R, M, LOGS)
        q = normal.guide(m, logs, k, is_reparameterized=reparameterized, **guide_kwargs)
        out.append(_grads(estimator(template(k, R), normal.observed(), q), [m, logs]))
    return torch.cat(out)


def test_sgvb_is_unbiased_for_the_elbo_gradient(normal):
    grads = _normal_grads(normal, lambda p, o, q: inference.elbo(p, o, variational=q,
                                                                 axis=0).sgvb(),
                          R=2000, k=4, reparameterized=True)
    _assert_unbiased(grads, -normal.elbo_grad(M, LOGS), max_se=0.05)


def test_sgvb_with_path_derivative_is_unbiased(normal):
    grads = _normal_grads(normal, lambda p, o, q: inference.elbo(p, o, variational=q,
                                                                 axis=0).sgvb(),
                          R=2000, k=4, reparameterized=True, use_path_derivative=True)
    _assert_unbiased(grads, -normal.elbo_grad(M, LOGS), max_se=0.05)


def test_sgvb_with_analytic_kl_is_unbiased(normal):
    grads = _normal_grads(normal, lambda p, o, q: inference.elbo(p, o, variational=q, axis=0,
                                                                 analytic_kl=True).sgvb(),
                          R=2000, k=4, reparameterized=True)
    _assert_unbiased(grads, -normal.elbo_grad(M, LOGS), max_se=0.05)


@pytest.mark.parametrize("variance_reduction", [False, True])
def test_reinforce_is_unbiased_for_the_elbo_gradient(normal, variance_reduction):
    # Several calls, so the moving-average baseline (kept by the model template) is
    # non-zero and comes from earlier calls, as in training.
    grads = _normal_grads(
        normal, lambda p, o, q: inference.elbo(p, o, variational=q, axis=0).reinforce(
            variance_reduction=variance_reduction),
        R=800, k=8, reparameterized=False, calls=5)
    _assert_unbiased(grads, -normal.elbo_grad(M, LOGS), max_se=0.06)


def test_reinforce_with_a_learned_baseline(normal):
    """Guide gradients stay unbiased; the baseline's cost has gradient b - ELBO."""
    R, k, b0 = 4000, 8, -1.0
    template = normal.template()
    m, logs = normal.params(R, M, LOGS)
    baseline = torch.full((R,), b0, requires_grad=True)
    q = normal.guide(m, logs, k, is_reparameterized=False)
    cost, baseline_cost = inference.elbo(template(k, R), normal.observed(), variational=q,
                                         axis=0).reinforce(baseline=baseline)
    assert cost.shape == baseline_cost.shape == (R,)
    _assert_unbiased(_grads(cost, [m, logs]), -normal.elbo_grad(M, LOGS), max_se=0.05)
    exact_elbo = normal.elbo(torch.tensor(M), torch.tensor(LOGS)).double()
    _assert_unbiased(_grads(baseline_cost, [baseline]), (b0 - exact_elbo).reshape(1),
                     max_se=0.01)


def test_iw_sgvb_is_unbiased_for_the_iw_bound_gradient(normal):
    k = 5
    grads = _normal_grads(normal, lambda p, o, q: inference.iw_objective(
        p, o, variational=q, axis=0).sgvb(), R=4000, k=k, reparameterized=True)
    _assert_unbiased(grads, -normal.iw_grad(M, LOGS, k), max_se=0.02)


def test_vimco_is_unbiased_for_the_iw_bound_gradient(normal):
    k = 5
    grads = _normal_grads(normal, lambda p, o, q: inference.iw_objective(
        p, o, variational=q, axis=0).vimco(), R=4000, k=k, reparameterized=False)
    _assert_unbiased(grads, -normal.iw_grad(M, LOGS, k), max_se=0.012)


def test_klpq_importance_matches_the_kl_p_q_gradient(normal):
    """Self-normalized weights are biased by O(1/k): we compare with the exact
    gradient of KL(p || q) plus the first-order (delta method) bias
    E_p[r (f - mu)] / k computed by quadrature (~1 SE here); the O(1/k^2) rest
    is ~1e-5 at k = 200, far below the 5 SE tolerance (~0.01-0.015)."""
    k = 200
    grads = _normal_grads(normal, lambda p, o, q: inference.klpq(
        p, o, variational=q, axis=0).importance(), R=1000, k=k, reparameterized=False)
    expected = normal.klpq_grad(M, LOGS) + normal.klpq_first_order_bias(M, LOGS, k)
    _assert_unbiased(grads, expected, max_se=0.005)


# -- the discrete model ---------------------------------------------------------------
@pytest.fixture(scope="module")
def bits():
    return TwoBits()


def _bits_grads(bits, estimator, R, k, calls=1):
    template = bits.template()
    out = []
    for _ in range(calls):
        theta = bits.params(R, THETA)
        q = bits.guide(theta, k)
        out.append(_grads(estimator(template(k, R), bits.observed(), q), [theta]))
    return torch.cat(out)


@pytest.mark.parametrize("variance_reduction", [False, True])
def test_reinforce_on_a_discrete_latent(bits, variance_reduction):
    grads = _bits_grads(bits, lambda p, o, q: inference.elbo(p, o, variational=q, axis=0)
                        .reinforce(variance_reduction=variance_reduction),
                        R=1000, k=4, calls=4)
    _assert_unbiased(grads, -bits.elbo_grad(THETA), max_se=0.012)


def test_reinforce_with_a_learned_baseline_on_a_discrete_latent(bits):
    R, k = 4000, 4
    theta = bits.params(R, THETA)
    q = bits.guide(theta, k)
    baseline = torch.full((R,), -2.0, requires_grad=True)
    cost, _ = inference.elbo(bits.template()(k, R), bits.observed(), variational=q,
                             axis=0).reinforce(baseline=baseline)
    _assert_unbiased(_grads(cost, [theta]), -bits.elbo_grad(THETA), max_se=0.006)


def test_vimco_on_a_discrete_latent(bits):
    k = 4
    grads = _bits_grads(bits, lambda p, o, q: inference.iw_objective(
        p, o, variational=q, axis=0).vimco(), R=4000, k=k)
    _assert_unbiased(grads, -bits.iw_grad(THETA, k), max_se=0.006)


def test_klpq_importance_on_a_discrete_latent(bits):
    """The self-normalized estimator's exact mean at finite k (by enumerating all
    k-tuples) is what the Monte Carlo mean must match; that mean approaches the
    exact KL(p || q) gradient as k grows (consistency, checked exactly)."""
    k = 4
    grads = _bits_grads(bits, lambda p, o, q: inference.klpq(
        p, o, variational=q, axis=0).importance(), R=4000, k=k)
    _assert_unbiased(grads, bits.klpq_estimator_mean(THETA, k), max_se=0.008)
    exact = bits.klpq_grad(THETA)
    errors = [float((bits.klpq_estimator_mean(THETA, kk) - exact).norm()) for kk in (4, 8)]
    assert errors[1] < errors[0]


def test_vimco_has_lower_variance_than_reinforce_on_a_discrete_latent(bits):
    """Same sample budget (k = 4 per estimate, R = 2000 estimates each). Compared
    with plain REINFORCE of the ELBO and with the naive score-function
    estimator of the same IW bound (learning signal L for every sample). The
    measured ratios are ~0.2 and ~0.01; a ratio below 0.6 with 2000 replicates each
    cannot come from equal variances (the sampling error of a variance ratio
    is ~ +-10% here)."""
    R, k = 2000, 4
    template = bits.template()

    def variance(estimator):
        theta = bits.params(R, THETA)
        q = bits.guide(theta, k)
        grads = _grads(estimator(template(k, R), q), [theta])
        return float(grads.var(0).sum())

    def naive_iw(p, q):
        objective = inference.iw_objective(p, bits.observed(), variational=q, axis=0)
        log_q = q["z"].cond_log_p
        return -(objective.tensor.detach() * log_q.sum(0) + objective.tensor)

    v_vimco = variance(lambda p, q: inference.iw_objective(p, bits.observed(), variational=q,
                                                            axis=0).vimco())
    v_reinforce = variance(lambda p, q: inference.elbo(p, bits.observed(), variational=q,
                                                       axis=0).reinforce(
                                                           variance_reduction=False))
    v_naive = variance(naive_iw)
    assert v_vimco < 0.6 * v_reinforce, (v_vimco, v_reinforce)
    assert v_vimco < 0.6 * v_naive, (v_vimco, v_naive)
