"""`is_loglikelihood`: importance-sampling estimates of log p(x) against exact marginals.

exp(estimate) is unbiased for p(x), so over R independent replicates the ratios
exp(estimate - log p(x)) average to 1 within 5 standard errors; the log
estimates themselves average to the importance weighted bound L_k (exact by
quadrature), which converges to log p(x) as k grows.
"""
import math

import pytest
import torch

import inference
import ppl
from tests.inference._vi_reference import D, NormalNormal, TwoBits, per_replicate_stats

M, LOGS = 0.6, math.log(0.9)


@pytest.fixture(scope="module")
def normal():
    return NormalNormal()


def _with_guide(normal, k, R):
    mp, lp = normal.params(R, M, LOGS)
    with torch.no_grad():
        return inference.is_loglikelihood(normal.template()(k, R), normal.observed(),
                                          proposal=normal.guide(mp, lp, k), axis=0)


def _assert_ratio_unbiased(estimates, log_px, max_se):
    mean, se = per_replicate_stats(torch.exp(estimates.to(D) - log_px))
    assert se < max_se
    assert abs(float(mean) - 1.) <= 5 * float(se), (float(mean), float(se))


def test_estimates_are_unbiased_for_the_marginal_likelihood(normal):
    estimates = _with_guide(normal, k=10, R=4000)
    assert estimates.shape == (4000,)
    _assert_ratio_unbiased(estimates, normal.log_px, max_se=0.005)


def test_estimates_converge_to_the_exact_log_marginal(normal):
    exact_bounds = {}
    for k, R in ((10, 2000), (1000, 200)):
        mean, se = per_replicate_stats(_with_guide(normal, k, R))
        exact = float(normal.iw_bound(torch.tensor(M, dtype=D), torch.tensor(LOGS, dtype=D), k))
        assert abs(float(mean) - exact) <= 5 * float(se), (k, float(mean), exact, float(se))
        exact_bounds[k] = exact
    assert normal.log_px - exact_bounds[1000] < 1e-3 < normal.log_px - exact_bounds[10]
    assert abs(float(mean) - normal.log_px) < 0.01


def test_prior_as_the_proposal_when_none_is_given(normal):
    """proposal=None: the model samples z itself (k on axis 0) and the weights are p(x | z)."""
    k, R = 20, 2000
    with torch.no_grad():
        estimates = inference.is_loglikelihood(normal.template()(k, R), normal.observed(),
                                               axis=0)
    _assert_ratio_unbiased(estimates, normal.log_px, max_se=0.01)


def test_discrete_latent_with_the_prior_as_proposal():
    bits = TwoBits()
    with torch.no_grad():
        estimates = inference.is_loglikelihood(bits.template()(8, 3000), bits.observed(),
                                               axis=0)
    _assert_ratio_unbiased(estimates, float(bits.log_px), max_se=0.01)


def test_a_proposal_node_unknown_to_the_model_is_an_error(normal):
    q = ppl.BayesianNet()
    q.normal("u", torch.zeros(3), std=1., n_samples=2)
    with pytest.raises(ValueError, match="guide node 'u' is not a node of the model"):
        inference.is_loglikelihood(normal.template()(2, 3), normal.observed(), proposal=q,
                                   axis=0)
