"""Gibbs: an RBM against its exact joint, a mixture against its exact posterior, errors.

Chains are a batch axis. The chi-square tests keep only each chain's final
state, so the draws are independent; the mixture tests use MCSEs from
`inference.diagnostics` (autocorrelation-aware) over the kept sweeps.
"""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

import inference
import ppl
from inference import diagnostics



def _chi_square_pvalue(states, probs, min_expected=5.):
    """p-value of the counts of integer `states` against `probs`; sparse cells pooled."""
    n = len(states)
    counts = np.bincount(states, minlength=len(probs))
    expected = probs * n
    small = expected < min_expected
    if small.any():
        counts = np.append(counts[~small], counts[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    return stats.chisquare(counts, expected).pvalue


def _binary_index(bits):
    """Rows of 0/1 values -> integers (first column most significant)."""
    weights = 2 ** torch.arange(bits.shape[-1] - 1, -1, -1)
    return (bits.long() * weights).sum(-1).numpy()


# -- an RBM: 6 visible, 4 hidden units --------------------------------------------

NV, NH = 6, 4
_g = torch.Generator().manual_seed(1)
W = 0.8 * torch.randn(NV, NH, generator=_g, dtype=torch.float64)
B = 0.5 * torch.randn(NV, generator=_g, dtype=torch.float64)
C = 0.5 * torch.randn(NH, generator=_g, dtype=torch.float64)


@ppl.meta_bayesian_net()
def rbm(n_chains):
    """p(v, h) ∝ exp(b.v + c.h + v W h): Bernoulli priors and a coupling factor."""
    bn = ppl.BayesianNet()
    v = bn.bernoulli("v", logits=B.expand(n_chains, NV), group_ndims=1)
    h = bn.bernoulli("h", logits=C.expand(n_chains, NH), group_ndims=1)
    bn.factor("coupling", ((v @ W) * h).sum(-1))
    return bn


def rbm_visible_marginal():
    """p(v) by enumerating all 2^10 joint states, indexed by `_binary_index(v)`."""
    states = torch.tensor(list(itertools.product([0., 1.], repeat=NV + NH)),
                          dtype=torch.float64)
    v, h = states[:, :NV], states[:, NV:]
    log_p = v @ B + h @ C + ((v @ W) * h).sum(-1)
    return torch.softmax(log_p, 0).reshape(2 ** NV, 2 ** NH).sum(1).numpy()


@pytest.mark.parametrize("independent", [("v", "h"), ()], ids=["block", "elementwise"])
def test_rbm_visible_marginal(independent):
    """4000 chains from random states, 30 sweeps: final visible states ~ exact p(v).

    Layers are conditionally independent given each other, so block and
    element-wise updates must both be right.
    """
    n_chains = 4000
    gibbs = inference.Gibbs(independent_elements=independent)
    latent = {"v": torch.randint(2, (n_chains, NV)).double(),
              "h": torch.randint(2, (n_chains, NH)).double()}
    model = rbm(n_chains)
    for _ in range(30):
        latent, _ = gibbs.sample(model, {}, latent)
    assert set(torch.unique(latent["v"]).tolist()) <= {0., 1.}
    p_value = _chi_square_pvalue(_binary_index(latent["v"]), rbm_visible_marginal())
    assert p_value > 1e-3


# -- explaining away: elements that are NOT conditionally independent --------------

@ppl.meta_bayesian_net()
def two_causes(n_chains):
    """h1, h2 ~ Bernoulli(0.2); v ~ Bernoulli(sigmoid(4 h1 + 4 h2 - 3)), v = 1 observed."""
    bn = ppl.BayesianNet()
    h = bn.bernoulli("h", logits=torch.full((n_chains, 2), -1.386, dtype=torch.float64),
                     group_ndims=1)
    bn.bernoulli("v", logits=4 * h.sum(-1) - 3)
    return bn


def two_causes_posterior():
    hs = torch.tensor([[0., 0.], [0., 1.], [1., 0.], [1., 1.]], dtype=torch.float64)
    log_p = (hs * -1.386).sum(-1) - 2 * F.softplus(torch.tensor(-1.386)) \
        + F.logsigmoid(4 * hs.sum(-1) - 3)
    return torch.softmax(log_p, 0).numpy()


@pytest.mark.parametrize("independent,should_pass", [((), True), (("h",), False)],
                         ids=["elementwise", "block-misused"])
def test_explaining_away_needs_elementwise_updates(independent, should_pass):
    """Given v, h1 and h2 are dependent: element-wise Gibbs is exact, a block update is not.

    The second case shows the chi-square check has power to catch a wrong sampler.
    """
    n_chains = 4000
    gibbs = inference.Gibbs(independent_elements=independent)
    latent = {"h": torch.randint(2, (n_chains, 2)).double()}
    model = two_causes(n_chains)
    for _ in range(20):
        latent, _ = gibbs.sample(model, {"v": torch.ones(())}, latent)
    p_value = _chi_square_pvalue(_binary_index(latent["h"]), two_causes_posterior())
    assert (p_value > 1e-3) == should_pass


# -- a two-component mixture: assignments by enumeration, means by HMC or conjugacy ---

X = torch.tensor([-2.1, -1.5, 0.3, 1.8, 2.5], dtype=torch.float64)
PRIOR_MEANS = torch.tensor([-2., 2.], dtype=torch.float64)


@ppl.meta_bayesian_net()
def mixture(n_chains):
    """mu_k ~ N(m_k, 1), z_i ~ Categorical(1/2, 1/2), x_i ~ N(mu_{z_i}, 1)."""
    bn = ppl.BayesianNet()
    mu = bn.normal("mu", PRIOR_MEANS.expand(n_chains, 2), std=1., group_ndims=1)
    z = bn.categorical("z", torch.zeros(n_chains, len(X), 2, dtype=torch.float64),
                       group_ndims=1)
    loc = (F.one_hot(z.long(), 2).to(mu.dtype) * mu[..., None, :]).sum(-1)
    bn.normal("x", loc, std=1., group_ndims=1)
    return bn


def mixture_posterior():
    """(E[mu | x] [2], P(z_i = 1 | x) [5]) by enumerating the 2^5 assignments.

    Given z, each mean is conjugate: x_{S_k} ~ N(m_k 1, I + 1 1^T) marginally and
    E[mu_k | z, x] = (m_k + sum_{S_k} x) / (1 + n_k).
    """
    x, m = X.numpy(), PRIOR_MEANS.numpy()
    log_w, means, assignments = [], [], []
    for z in itertools.product([0, 1], repeat=len(x)):
        z = np.array(z)
        log_w.append(sum(stats.multivariate_normal(np.full((z == k).sum(), m[k]),
                                                   np.eye((z == k).sum()) + 1.)
                         .logpdf(x[z == k]) for k in range(2) if (z == k).any()))
        means.append([(m[k] + x[z == k].sum()) / (1 + (z == k).sum()) for k in range(2)])
        assignments.append(z)
    w = np.exp(np.array(log_w) - max(log_w))
    w /= w.sum()
    return w @ np.array(means), w @ np.array(assignments)


def mu_conditional(values):
    """The conjugate full conditional of the means given the assignments."""
    one_hot = F.one_hot(values["z"].long(), 2).to(X.dtype)        # [chains, 5, 2]
    counts = one_hot.sum(-2)
    sums = (one_hot * X[:, None]).sum(-2)
    return ppl.distributions.Normal((PRIOR_MEANS + sums) / (1 + counts),
                                    std=(1 + counts) ** -0.5)


def _run_mixture(gibbs, n_chains=100, n_sweeps=250, n_warmup=50):
    latent = {"mu": PRIOR_MEANS.expand(n_chains, 2).clone(),
              "z": torch.randint(2, (n_chains, len(X)))}
    model = mixture(n_chains)
    mus, zs = [], []
    for sweep in range(n_sweeps):
        latent, info = gibbs.sample(model, {"x": X}, latent)
        if sweep >= n_warmup:
            mus.append(latent["mu"])
            zs.append(latent["z"])
    return torch.stack(mus, 1).numpy(), torch.stack(zs, 1).double().numpy(), info


@pytest.mark.parametrize("kind", ["HMC-within-Gibbs", "conjugate"])
def test_mixture_posterior(kind):
    """Posterior means of mu and P(z_i = 1) within 5 MCSE of the exact values."""
    if kind == "conjugate":
        gibbs = inference.Gibbs(conditionals={"mu": mu_conditional},
                                independent_elements=("z",))
    else:
        gibbs = inference.Gibbs(continuous_kernel=inference.HMC(step_size=0.4, n_leapfrogs=4),
                                independent_elements=("z",))
    mus, zs, info = _run_mixture(gibbs)
    if kind != "conjugate":
        assert float(info["continuous"].acceptance_rate.mean()) > 0.8
    exact_mu, exact_z = mixture_posterior()
    assert 0.05 < exact_z[2] < 0.95          # the middle point is genuinely ambiguous
    np.testing.assert_array_less(np.abs(mus.mean((0, 1)) - exact_mu),
                                 5 * diagnostics.mcse_mean(mus))
    np.testing.assert_array_less(np.abs(zs.mean((0, 1)) - exact_z),
                                 5 * diagnostics.mcse_mean(zs) + 1e-12)


# -- models that do not broadcast, errors --------------------------------------------

@ppl.meta_bayesian_net()
def mixture_by_gather(n_chains):
    """The mixture written with `gather`, which does not broadcast over extra leading axes."""
    bn = ppl.BayesianNet()
    mu = bn.normal("mu", PRIOR_MEANS.expand(n_chains, 2), std=1., group_ndims=1)
    z = bn.categorical("z", torch.zeros(n_chains, len(X), 2, dtype=torch.float64),
                       group_ndims=1)
    bn.normal("x", mu.gather(-1, z.long()), std=1., group_ndims=1)
    return bn


def test_unvectorizable_model_needs_vectorized_false():
    latent = {"mu": PRIOR_MEANS.expand(3, 2).clone(), "z": torch.randint(2, (3, len(X)))}
    gibbs = inference.Gibbs(conditionals={"mu": mu_conditional}, independent_elements="z")
    with pytest.raises(ValueError, match="'z'.*vectorized=False"):
        gibbs.sample(mixture_by_gather(3), {"x": X}, latent)
    # one candidate at a time gives the same conditional as the broadcasting model
    torch.manual_seed(3)
    slow, _ = inference.Gibbs(conditionals={"mu": mu_conditional}, independent_elements="z",
                              vectorized=False).sample(mixture_by_gather(3), {"x": X}, latent)
    torch.manual_seed(3)
    fast, _ = inference.Gibbs(conditionals={"mu": mu_conditional},
                              independent_elements="z").sample(mixture(3), {"x": X}, latent)
    torch.testing.assert_close(slow["z"], fast["z"])
    torch.testing.assert_close(slow["mu"], fast["mu"])


def test_errors_name_the_node():
    latent = {"mu": PRIOR_MEANS.expand(3, 2).clone(), "z": torch.randint(2, (3, len(X)))}
    with pytest.raises(ValueError, match=r"\['mu'\].*continuous_kernel"):
        inference.Gibbs().sample(mixture(3), {"x": X}, latent)
    with pytest.raises(ValueError, match="'mu'.*not an enumerable"):
        inference.Gibbs(independent_elements=("mu",),
                        continuous_kernel=inference.HMC()).sample(mixture(3), {"x": X}, latent)

    def wrong_shape(values):
        return ppl.distributions.Normal(torch.zeros(2), std=1.)

    with pytest.raises(ValueError, match="conditionals\\['mu'\\].*shape"):
        inference.Gibbs(conditionals={"mu": wrong_shape}).sample(mixture(3), {"x": X}, latent)
    with pytest.raises(ValueError, match="'z' is discrete"):
        inference.Gibbs(conditionals={"mu": mu_conditional}).sample(
            lambda values: torch.zeros(3), {"x": X}, latent)


def test_the_callers_latents_are_not_modified():
    """Gibbs returns new values; the tensors passed in keep theirs (HMC-within-Gibbs too)."""
    latent = {"mu": PRIOR_MEANS.expand(3, 2).clone(), "z": torch.randint(2, (3, len(X)))}
    before = {k: v.clone() for k, v in latent.items()}
    gibbs = inference.Gibbs(continuous_kernel=inference.HMC(step_size=0.4, n_leapfrogs=4),
                            independent_elements=("z",))
    new, _ = gibbs.sample(mixture(3), {"x": X}, latent)
    assert not torch.equal(new["mu"], before["mu"])
    for name, value in latent.items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
