"""ppl.EnergyModel: block conditionals, averages and sums against enumeration; its checks."""
import numpy as np
import pytest
import torch
from scipy import stats

import inference
import ppl
from tests.inference._energy_models import (block_conditional_by_enumeration, joint_table,
                                            random_dbm, random_rbm, states)


@pytest.mark.parametrize("build", [random_rbm, random_dbm], ids=["rbm", "dbm"])
def test_derived_block_conditionals_match_enumeration(build):
    model = build()
    model = model[1] if isinstance(model, tuple) else model
    torch.manual_seed(0)
    values = {name: torch.bernoulli(torch.full((7, n), 0.5, dtype=torch.float64))
              for name, n in model.layers.items()}
    for name, n in model.layers.items():
        exact = block_conditional_by_enumeration(model, name, values)
        claimed = model.conditional(name, values).log_prob(states(n)[:, None, :]).exp()
        torch.testing.assert_close(claimed, exact)
        model.check(values, [name])


def test_given_conditionals_are_used_and_a_wrong_one_is_refused():
    template, derived = random_rbm()
    W, c = template.params["W"], template.params["c"]

    def right(values):
        return ppl.distributions.Bernoulli(logits=c + values["v"] @ W, group_ndims=1)

    def wrong(values):  # forgets the hidden biases
        return ppl.distributions.Bernoulli(logits=values["v"] @ W, group_ndims=1)

    values = {"v": torch.bernoulli(torch.full((6, 5), 0.5, dtype=torch.float64)),
              "h": torch.zeros(6, 3, dtype=torch.float64)}
    given = ppl.EnergyModel(derived.meta_bn, derived.layers, conditionals={"h": right})
    given.check(values)
    torch.testing.assert_close(given.logits("h", values), derived.logits("h", values))
    bad = ppl.EnergyModel(derived.meta_bn, derived.layers, conditionals={"h": wrong})
    with pytest.raises(ValueError, match="layer 'h': the conditional does not match the energy"):
        bad.check(values)

    def reads_itself(values):  # right at h = 0 only: depends on the layer it draws
        return ppl.distributions.Bernoulli(logits=c + values["v"] @ W + values["h"].sum(-1,
                                           keepdim=True), group_ndims=1)

    with pytest.raises(ValueError, match="'h'.*not conditionally independent"):
        ppl.EnergyModel(derived.meta_bn, derived.layers,
                        conditionals={"h": reads_itself}).check(values, n_units=0)
    with pytest.raises(ValueError, match="'x', which is not a layer"):
        ppl.EnergyModel(derived.meta_bn, derived.layers, conditionals={"x": right})


def test_a_layer_whose_units_interact_fails_the_check():
    """A Boltzmann machine's visible units are coupled: its layer is no block."""
    J = torch.tensor([[0., 2.], [2., 0.]], dtype=torch.float64)

    def bm():
        bn = ppl.BayesianNet()
        x = bn.bernoulli("x", logits=torch.zeros(2, dtype=torch.float64), group_ndims=1)
        bn.factor("pairs", 0.5 * ((x @ J) * x).sum(-1))
        return bn

    model = ppl.EnergyModel(bm, {"x": 2})
    with pytest.raises(ValueError, match="layer 'x': the conditional does not match"):
        model.check({"x": torch.ones(3, 2, dtype=torch.float64)})


def test_probabilities_average_the_energy_exactly():
    """log_joint at means = E_q log p* for independent Bernoulli q (two layers averaged)."""
    model = random_dbm()
    v = torch.tensor([[1., 0., 1., 1.]], dtype=torch.float64)
    mu1 = torch.tensor([[0.2, 0.7, 0.4]], dtype=torch.float64)
    mu2 = torch.tensor([[0.9, 0.3]], dtype=torch.float64)
    h1, h2 = states(3), states(2)
    q1 = (h1 * mu1 + (1 - h1) * (1 - mu1)).prod(-1)
    q2 = (h2 * mu2 + (1 - h2) * (1 - mu2)).prod(-1)
    with torch.no_grad():
        table = model.log_joint({"v": v.expand(8, 4, 4), "h1": h1[:, None, :].expand(8, 4, 3),
                                 "h2": h2[None, :, :].expand(8, 4, 2)})
        expected = (q1[:, None] * q2[None, :] * table).sum()
        assert torch.allclose(model.log_joint({"v": v, "h1": mu1, "h2": mu2})[0], expected)


def test_sum_out_and_mean_field():
    model = random_dbm()
    values, log_p = joint_table(model)
    # v and h2 do not interact: summed out given h1
    h1 = states(3)
    summed = model.sum_out(["v", "h2"], {"h1": h1})
    index = (values["h1"][:, None, :] == h1[None]).all(-1)          # [S, 8]
    expected = torch.stack([torch.logsumexp(log_p[index[:, j]], 0) for j in range(8)])
    torch.testing.assert_close(summed, expected)
    v = torch.tensor([[1., 0., 1., 1.], [0., 0., 1., 0.]], dtype=torch.float64)
    means = model.mean_field({"v": v}, ["h1", "h2"], n_iterations=50)
    for name in ("h1", "h2"):   # a fixed point of the updates
        torch.testing.assert_close(
            means[name], torch.sigmoid(model.logits(name, {"v": v, **means})))


def test_gibbs_runs_the_model_through_its_conditionals():
    """inference.Gibbs with the derived conditionals: final states ~ exact p(v) (chi-square)."""
    _, model = random_rbm()
    values, log_p = joint_table(model)
    index = (values["v"] * 2 ** torch.arange(4, -1, -1)).sum(-1).long()
    p_v = torch.zeros(32, dtype=torch.float64).index_add_(0, index, torch.softmax(log_p, 0))
    gibbs = inference.Gibbs(conditionals=model.conditionals())
    n = 3000
    state = {"v": torch.randint(2, (n, 5)).double(), "h": torch.randint(2, (n, 3)).double()}
    for _ in range(25):
        state, _ = gibbs.sample(model.meta_bn, {}, state)
    counts = np.bincount((state["v"] * 2 ** torch.arange(4, -1, -1)).sum(-1).long().numpy(),
                         minlength=32)
    assert stats.chisquare(counts, p_v.numpy() * n).pvalue > 1e-3


def test_non_binary_data_is_refused_by_name():
    with pytest.raises(ValueError, match="layer 'v'.*not 0 or 1.*binarize"):
        ppl.energy.check_binary("v", torch.tensor([[0., 0.5, 1.]]))


def test_probabilities_average_a_coupled_layer_exactly():
    """Within-layer couplings (a Boltzmann machine): E_q[v_i v_j] = mu_i mu_j, second order."""
    J = torch.tensor([[0., 1.5, -2.], [0., 0., 0.7], [0., 0., 0.]], dtype=torch.float64)

    def bm():
        bn = ppl.BayesianNet()
        x = bn.bernoulli("x", logits=torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64),
                         group_ndims=1)
        bn.factor("pairs", ((x @ J) * x).sum(-1))
        return bn

    model = ppl.EnergyModel(bm, {"x": 3})
    mu = torch.tensor([[0.2, 0.6, 0.9]], dtype=torch.float64)
    every = states(3)
    q = (every * mu + (1 - every) * (1 - mu)).prod(-1)
    with torch.no_grad():
        expected = (q * model.log_joint({"x": every})).sum()
        torch.testing.assert_close(model.log_joint({"x": mu})[0], expected)
