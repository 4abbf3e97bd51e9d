"""inference.energy: AIS against the exact log Z, CD-k's gradient against enumeration,
log-likelihoods, training through the Trainer, and bad input."""
import math

import pytest
import torch

import inference
import ppl
from inference import energy
from tests.inference._energy_models import exact_log_z, joint_table, random_dbm, random_rbm, states


# -- the partition function --------------------------------------------------------

@pytest.mark.parametrize("case", ["rbm-base-rates", "dbm", "dbm-v-h2-summed"])
def test_ais_matches_the_exact_log_partition_within_its_standard_error(case):
    torch.manual_seed(0)
    if case.startswith("rbm"):
        model = random_rbm(n_visible=10, n_hidden=4, seed=3)[1]
        summed = None
    else:
        model = random_dbm(sizes=(6, 4, 3), seed=4)
        summed = ("v", "h2") if case.endswith("summed") else None
    exact = exact_log_z(model)
    base = {"v": torch.linspace(-1, 1, 10, dtype=torch.float64)} if "base" in case else None
    est = energy.ais_log_partition(model, base, summed=summed, n_temperatures=150, n_runs=200,
                                   progress=False)
    assert 0 < est.log_z_se < 0.1
    assert abs(est.log_z - exact) < 5 * est.log_z_se
    lower, upper = est.interval()
    assert lower < est.log_z < upper


def test_exact_log_partition_sums_out_analytically_and_refuses_huge_models():
    _, model = random_rbm(n_visible=10, n_hidden=4, seed=3)
    full = exact_log_z(model)
    for summed in (None, ["v"], ["h"]):
        with torch.no_grad():
            log_z = energy.exact_log_partition(model, summed=summed)
        assert log_z.item() == pytest.approx(full, abs=1e-9)
    big = ppl.EnergyModel(model.meta_bn, {"v": 30, "h": 4})
    with pytest.raises(ValueError, match="2\\^30 joint states"):
        energy.exact_log_partition(big, summed=["h"])


def test_ais_refuses_too_few_temperatures_runs_and_bad_layers():
    _, model = random_rbm()
    with pytest.raises(ValueError, match="`n_temperatures` must be an int >= 2"):
        energy.ais_log_partition(model, n_temperatures=1)
    with pytest.raises(ValueError, match="`betas` must increase from 0 to 1"):
        energy.ais_log_partition(model, betas=[0., 0.5, 0.4, 1.])
    with pytest.raises(ValueError, match="`n_runs` must be an int >= 2"):
        energy.ais_log_partition(model, n_runs=1)
    with pytest.raises(ValueError, match="`summed` names \\['x'\\]"):
        energy.ais_log_partition(model, summed=["x"])
    with pytest.raises(ValueError, match="base_logits\\['v'\\] has shape"):
        energy.ais_log_partition(model, {"v": torch.zeros(3)})


# -- log-likelihoods -----------------------------------------------------------------

def test_log_likelihoods_against_enumeration():
    torch.manual_seed(1)
    _, rbm = random_rbm()
    values, log_p = joint_table(rbm)
    log_z = torch.logsumexp(log_p, 0).item()
    v = states(5)[[0, 7, 19, 31]]
    exact = torch.stack([torch.logsumexp(log_p[(values["v"] == row).all(-1)], 0) for row in v])
    torch.testing.assert_close(energy.log_likelihood(rbm, log_z, {"v": v}, ["h"]), exact - log_z)
    # the DBM's mean-field bound lies below the exact log-likelihood
    dbm = random_dbm()
    values, log_p = joint_table(dbm)
    log_z = torch.logsumexp(log_p, 0).item()
    v = states(4)[[1, 6, 12]]
    exact = torch.stack([torch.logsumexp(log_p[(values["v"] == row).all(-1)], 0) for row in v])
    bound = energy.mean_field_bound(dbm, log_z, {"v": v}, ["h1", "h2"])
    assert (bound <= exact - log_z + 1e-9).all() and (bound > exact - log_z - 1.).all()
    # importance sampling over h1 (h2 summed), with q = p(h1 | v, h2 = its mean): converges
    q = dbm.logits("h1", {"v": v, "h2": torch.full((3, 2), 0.5, dtype=torch.float64)})
    estimate = energy.importance_log_likelihood(dbm, log_z, {"v": v}, {"h1": q},
                                                n_samples=4000, summed=["h2"])
    torch.testing.assert_close(estimate, exact - log_z, atol=0.02, rtol=0)


def test_non_binary_data_is_refused():
    rbm_template, rbm = random_rbm()
    with pytest.raises(ValueError, match="layer 'v'.*not 0 or 1"):
        energy.log_likelihood(rbm, 0., {"v": torch.full((2, 5), 0.3, dtype=torch.float64)},
                              ["h"])
    cd = energy.ContrastiveDivergence(rbm, k=1)
    with pytest.raises(ValueError, match="layer 'v'.*binarize"):
        cd.step(torch.rand(4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="`visible` names 'x'"):
        energy.ContrastiveDivergence(rbm, visible="x")
    with pytest.raises(ValueError, match="`k`.*positive int"):
        energy.ContrastiveDivergence(rbm, k=0)


# -- contrastive divergence against enumeration ---------------------------------------

def _exact_gradients(template, model, data, k=None):
    """The exact log-likelihood gradient (k None) or CD-k's expected gradient, by enumeration.

    CD-k's negative phase is at v_k, the data moved by k steps of T(v -> v') =
    sum_h p(h | v) p(v' | h), with the hidden layer at its conditional means.
    """
    params = dict(template.named_parameters())
    free_energy = lambda v: model.sum_out(("h",), {"v": v})  # noqa: E731
    vs = states(model.layers["v"])
    hs = states(model.layers["h"])
    with torch.no_grad():
        p_h = torch.sigmoid(model.logits("h", {"v": vs}))                     # [V, H units]
        p_h_states = (hs[None] * p_h[:, None] + (1 - hs[None]) * (1 - p_h[:, None])).prod(-1)
        p_v = torch.sigmoid(model.logits("v", {"h": hs}))
        p_v_states = (vs[None] * p_v[:, None] + (1 - vs[None]) * (1 - p_v[:, None])).prod(-1)
        transition = p_h_states @ p_v_states                                  # [V, V]
        rho = (data[:, None, :] == vs[None]).all(-1).double().mean(0)         # data histogram
    with torch.enable_grad():
        positive = sum(free_energy(row[None])[0] * w for row, w in zip(vs, rho) if w > 0)
        if k is None:
            every = states(sum(model.layers.values()))
            negative = torch.logsumexp(model.log_joint(dict(zip(
                model.layers, torch.split(every, list(model.layers.values()), -1)))), 0)
        else:
            weights = rho @ torch.linalg.matrix_power(transition, k)
            negative = (weights * free_energy(vs)).sum()
        grads = torch.autograd.grad(positive - negative, list(params.values()))
    return dict(zip(params, grads))


def test_cd_k_gradient_matches_its_expectation_and_approaches_the_exact_gradient():
    """CD-k's gradient (from the step's cost) is within 5 SE of its expectation by
    enumeration for k = 1 and 5; that expectation's distance to the exact gradient shrinks
    as k grows, and CD-1 is measurably biased."""
    torch.manual_seed(2)
    template, model = random_rbm(n_visible=5, n_hidden=3, seed=5, scale=1.5)
    params = dict(template.named_parameters())
    data = torch.bernoulli(torch.full((4000, 5), 0.3, dtype=torch.float64))
    data[:2000, :2] = 1.
    exact = _exact_gradients(template, model, data)
    distances = []
    for k in (1, 5, 50):
        expected = _exact_gradients(template, model, data, k=k)
        distances.append(max((expected[n] - exact[n]).abs().max().item() for n in params))
        if k == 50:
            continue
        cd = energy.ContrastiveDivergence(model, k=k)
        estimates = []
        for _ in range(8):
            cost, _ = cd.step(data)
            estimates.append(torch.autograd.grad(-cost, list(params.values())))
        for i, name in enumerate(params):
            draws = torch.stack([e[i] for e in estimates])
            mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
            assert ((mean - expected[name]).abs() <= 5 * se + 1e-12).all(), (k, name)
            if k == 1 and name == "W":
                assert ((mean - exact[name]).abs() > 5 * se).any()   # CD-1 is biased here
    assert distances[0] > distances[1] > distances[2] and distances[2] < 1e-3


def test_pcd_trains_through_the_trainer_and_its_chains_are_checkpointed(tmp_path):
    """PCD raises the exact log-likelihood of a small data set; the chains live in the
    checkpoint and come back on resume."""
    torch.manual_seed(3)
    template, model = random_rbm(n_visible=5, n_hidden=3, seed=6, scale=0.1)
    data = torch.bernoulli(torch.full((512, 5), 0.2, dtype=torch.float64))
    data[:256, :3] = 1.

    def mean_loglik():
        return energy.log_likelihood(model, exact_log_z(model), {"v": data}, ["h"]).mean().item()

    before = mean_loglik()
    pcd = energy.ContrastiveDivergence(model, k=1, persistent=True, n_chains=64)
    path = tmp_path / "rbm.pt"
    trainer = inference.Trainer({"rbm": template, "pcd": pcd},
                                lambda p: torch.optim.SGD(p, lr=0.2), checkpoint_path=path,
                                progress=False)
    batches = list(torch.split(data[torch.randperm(512)], 64))
    trainer.fit(pcd.step, batches, n_epochs=4)
    assert mean_loglik() > before + 0.3
    saved = inference.checkpoint.load(path)["modules"]["pcd"]
    torch.testing.assert_close(saved["chains_v"], pcd.chains["v"])
    fresh = energy.ContrastiveDivergence(model, k=1, persistent=True, n_chains=64)
    resumed = inference.Trainer({"rbm": template, "pcd": fresh},
                                lambda p: torch.optim.SGD(p, lr=0.2), checkpoint_path=path,
                                progress=False)
    resumed.fit(fresh.step, batches, n_epochs=4)   # nothing left to do: state restored
    torch.testing.assert_close(fresh.chains["h"], pcd.chains["h"])


def test_a_wrong_conditional_stops_learning_and_ais_at_once():
    template, derived = random_rbm()
    W = template.params["W"]

    def wrong(values):  # forgets the hidden biases
        return ppl.distributions.Bernoulli(logits=values["v"] @ W, group_ndims=1)

    model = ppl.EnergyModel(derived.meta_bn, derived.layers, conditionals={"h": wrong})
    data = torch.bernoulli(torch.full((16, 5), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="layer 'h': the conditional does not match"):
        energy.ContrastiveDivergence(model).step(data)
    with pytest.raises(ValueError, match="layer 'h': the conditional does not match"):
        energy.ais_log_partition(model, n_temperatures=5, n_runs=4, progress=False)


def test_overflowed_weights_are_reported_with_the_layer():
    template, model = random_rbm()
    with torch.no_grad():
        template.params["W"][0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="layer '[vh]' has non-finite values"):
        energy.ContrastiveDivergence(model).step(torch.ones(4, 5, dtype=torch.float64))
    with pytest.raises(FloatingPointError, match="layer '[vh]' has non-finite values"):
        energy.ais_log_partition(model, n_temperatures=5, n_runs=4, progress=False)
