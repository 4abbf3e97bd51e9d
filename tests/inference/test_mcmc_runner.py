"""`inference.mcmc.run`: storage layout, thinning, statistics, summaries, seeds and errors."""
import warnings

import numpy as np
import pytest
import torch
from torch.distributions import constraints

import inference
import ppl
from inference import diagnostics
from inference.checkpoint import CheckpointMismatchError
from tests.inference._mcmc_targets import assert_moments


@ppl.meta_bayesian_net()
def dirichlet_multinomial(n_total):
    bn = ppl.BayesianNet()
    theta = bn.dirichlet("theta", torch.tensor([1., 2., 3., 1.]))
    bn.multinomial("counts", torch.log(theta), n_experiments=n_total)
    return bn


COUNTS = torch.tensor([3., 10., 4., 0.])


@pytest.fixture(scope="module")
def result():
    """NUTS on a Dirichlet-multinomial: a simplex latent, sampled unconstrained."""
    model = dirichlet_multinomial(int(COUNTS.sum()))
    return inference.mcmc.run(inference.NUTS(), model, {"counts": COUNTS}, n_chains=6,
                              n_warmup=150, n_samples=300, thin=2, progress=False, seed=0)


def test_storage_layout_and_stats(result):
    assert result.samples["theta"].shape == (6, 150, 4)
    assert result.n_chains == 6 and result.n_draws == 150
    for name in ["accept_prob", "step_size", "diverging", "tree_depth", "n_steps", "energy"]:
        assert result.stats[name].shape == (6, 150), name
        assert result.warmup_stats[name].shape == (6, 150), name
    assert result.stats["diverging"].dtype == bool
    assert (result.stats["n_steps"] >= 1).all() and (result.stats["tree_depth"] >= 1).all()
    assert result.last_state.position.shape == (6, 3)  # K - 1 free coordinates


def test_constrained_latents_come_back_constrained_with_the_right_posterior(result):
    theta = result.samples["theta"]
    assert (theta > 0).all() and torch.allclose(theta.sum(-1), torch.ones(()), atol=1e-5)
    alpha = torch.tensor([1., 2., 3., 1.]) + COUNTS  # Dirichlet posterior
    mean = alpha / alpha.sum()
    var = mean * (1 - mean) / (alpha.sum() + 1)
    assert_moments(theta, mean.numpy(), (var + mean ** 2).numpy(), name="dirichlet")


def test_summary_matches_diagnostics(result):
    table = result.summary()
    assert list(table) == ["theta[0]", "theta[1]", "theta[2]", "theta[3]"]
    assert table.columns == ("mean", "sd", "5%", "50%", "95%", "mcse_mean", "mcse_sd",
                             "ess_bulk", "ess_tail", "r_hat")
    draws = result.samples["theta"][..., 2].double().numpy()
    row = table["theta[2]"]
    assert row["mean"] == pytest.approx(draws.mean())
    assert row["sd"] == pytest.approx(draws.std(ddof=1))
    assert row["95%"] == pytest.approx(np.quantile(draws, 0.95))
    assert row["ess_bulk"] == pytest.approx(diagnostics.ess_bulk(draws))
    assert row["ess_tail"] == pytest.approx(diagnostics.ess_tail(draws))
    assert row["r_hat"] == pytest.approx(diagnostics.split_rhat(draws))
    assert row["mcse_mean"] == pytest.approx(diagnostics.mcse_mean(draws))
    assert row["r_hat"] < 1.05
    text = str(table)
    assert "theta[2]" in text and "ess_bulk" in text and len(text.splitlines()) == 6
    assert text.splitlines()[-1] == "divergences: 0 (per chain: 0, 0, 0, 0, 0, 0)"
    narrow = result.summary(names=["theta"], prob=0.5)
    assert "25%" in narrow["theta[0]"] and "5%" not in narrow["theta[0]"]


def test_to_arviz(result):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        az = pytest.importorskip("arviz")
        data = result.to_arviz()
        assert data.posterior["theta"].shape == (6, 150, 4)
        assert bool(data.sample_stats["diverging"].dtype == bool)
        ess = az.ess(data, var_names=["theta"], method="bulk")["theta"].values
    assert ess == pytest.approx(diagnostics.ess_bulk(result.samples["theta"].numpy()), rel=1e-6)


def _std_normal(v):
    return -0.5 * (v["z"] ** 2).sum(-1)


def test_seed_reproduces_and_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    runs = [inference.mcmc.run(inference.NUTS(), _std_normal, init={"z": torch.zeros(2, 3)},
                               n_warmup=20, n_samples=10, progress=False, seed=5)
            for _ in range(2)]
    assert torch.equal(torch.rand(3), expected_next)
    assert torch.equal(runs[0].samples["z"], runs[1].samples["z"])
    other = inference.mcmc.run(inference.NUTS(), _std_normal, init={"z": torch.zeros(2, 3)},
                               n_warmup=20, n_samples=10, progress=False, seed=6)
    assert not torch.equal(runs[0].samples["z"], other.samples["z"])


def test_several_chain_axes_are_flattened_in_the_result():
    result = inference.mcmc.run(inference.HMC(step_size=0.5, n_leapfrogs=3), _std_normal,
                                init={"z": torch.zeros(2, 3, 4)}, n_warmup=0, n_samples=5,
                                progress=False, seed=0)
    assert result.samples["z"].shape == (6, 5, 4)
    assert result.stats["accept_prob"].shape == (6, 5)


def test_prior_initialization_is_uniform_on_the_unconstrained_scale():
    model = dirichlet_multinomial(int(COUNTS.sum()))
    kernel = inference.HMC(step_size=1e-6, n_leapfrogs=1)  # (almost) does not move
    result = inference.mcmc.run(kernel, model, {"counts": COUNTS}, n_chains=50, n_warmup=0,
                                n_samples=1, progress=False, seed=0)
    x = result.potential.unconstrain({k: v[:, 0] for k, v in result.samples.items()})
    assert (x.abs() < 2.).all() and x.std() > 0.8  # uniform(-2, 2) has sd 1.15


def test_progress_bar(capsys):
    inference.mcmc.run(inference.NUTS(), _std_normal, init={"z": torch.zeros(2, 3)},
                       n_warmup=5, n_samples=5, progress=True, seed=0)
    err = capsys.readouterr().err
    assert "sample" in err and "10/10" in err


def test_argument_errors():
    init = {"z": torch.zeros(2, 3)}
    nuts = inference.NUTS()
    with pytest.raises(ValueError, match="give `init`"):
        inference.mcmc.run(nuts, _std_normal, progress=False)
    with pytest.raises(ValueError, match="plain log_joint callable has no nodes"):
        inference.mcmc.run(nuts, _std_normal, n_chains=2, progress=False)
    with pytest.raises(ValueError, match="`n_samples` must be an int >= 1"):
        inference.mcmc.run(nuts, _std_normal, init=init, n_samples=0, progress=False)
    with pytest.raises(ValueError, match="`thin`"):
        inference.mcmc.run(nuts, _std_normal, init=init, thin=0, progress=False)
    with pytest.raises(ValueError, match="`n_chains`=3 but `init` has 2 chains"):
        inference.mcmc.run(nuts, _std_normal, init=init, n_chains=3, progress=False)

    def bounded(v):
        z = v["z"][:, 0]
        return torch.where(z > 0., -0.5 * z ** 2, torch.full_like(z, -torch.inf))
    with pytest.raises(ValueError, match=r"not finite at `init` for chains \[1\]"):
        inference.mcmc.run(nuts, bounded, init={"z": torch.tensor([[1.], [-1.]])},
                           progress=False)


def test_plain_log_joint_with_declared_support():
    def log_joint(v):
        return torch.distributions.Gamma(3., 2.).log_prob(v["rate"])

    result = inference.mcmc.run(inference.NUTS(), log_joint, init={"rate": torch.ones(4)},
                                supports={"rate": constraints.positive}, n_warmup=150,
                                n_samples=250, progress=False, seed=0)
    assert (result.samples["rate"] > 0).all()
    assert_moments(result.samples["rate"], 1.5, 3. / 4. + 2.25, name="gamma")


def test_lkj_cholesky_factor_through_corr_cholesky_support():
    """LKJ(eta=1) in 3 dims: each correlation is 2 Beta(1.5, 1.5) - 1 (mean 0, var 1/4)."""
    lkj = torch.distributions.LKJCholesky(3, concentration=1.)

    def log_joint(v):
        return lkj.log_prob(v["L"])

    result = inference.mcmc.run(inference.NUTS(), log_joint,
                                init={"L": torch.eye(3).repeat(4, 1, 1)},
                                supports={"L": constraints.corr_cholesky}, n_warmup=150,
                                n_samples=250, progress=False, seed=0)
    factor = result.samples["L"]
    corr = factor @ factor.mT
    assert torch.allclose(corr.diagonal(dim1=-2, dim2=-1), torch.ones(()), atol=1e-5)
    off = torch.stack([corr[..., 1, 0], corr[..., 2, 0], corr[..., 2, 1]], -1)
    assert_moments(off, np.zeros(3), np.full(3, 0.25), name="lkj")


def test_checkpoint_resume_gives_the_uninterrupted_run(tmp_path):
    path = tmp_path / "run.pt"
    args = dict(init={"z": torch.zeros(3, 2)}, n_warmup=30, n_samples=20, thin=2,
                progress=False, seed=4, checkpoint_every=10)
    # Chains meet at checkpoints, so the uninterrupted run checkpoints alike (elsewhere).
    full = inference.mcmc.run(inference.NUTS(), _std_normal, checkpoint=tmp_path / "full.pt",
                              **args)
    # An interrupted run: the kernel fails in the sampling phase. It runs the chains
    # between meeting points: 10, 20 (checkpoints), 27 (a window's end), 30, 40, ...
    kernel = inference.NUTS()
    calls = []
    original = kernel.iterate

    def failing(*a, **kw):
        calls.append(1)
        if len(calls) > 4:
            raise KeyboardInterrupt
        return original(*a, **kw)

    kernel.iterate = failing
    with pytest.raises(KeyboardInterrupt):
        inference.mcmc.run(kernel, _std_normal, checkpoint=path, **args)
    saved = torch.load(path, weights_only=True)
    assert saved["iteration"] == 30 and saved["draws"].shape[1] == 0
    resumed = inference.mcmc.run(inference.NUTS(), _std_normal, checkpoint=path, **args)
    assert torch.equal(resumed.samples["z"], full.samples["z"])
    for name in full.stats:
        assert np.array_equal(resumed.stats[name], full.stats[name]), name
        assert np.array_equal(resumed.warmup_stats[name], full.warmup_stats[name]), name
    assert torch.equal(resumed.step_size, full.step_size)
    with pytest.raises(CheckpointMismatchError, match="n_samples: 20 in the checkpoint, now 40"):
        inference.mcmc.run(inference.NUTS(), _std_normal, checkpoint=path,
                           **{**args, "n_samples": 40})
