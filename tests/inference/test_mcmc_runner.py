"""`inference.mcmc.run`: storage layout, thinning, statistics, summaries, seeds, errors,
checkpoints and the sampling-problem warning."""
import functools
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch.distributions import constraints

import inference
import ppl
from inference import diagnostics
from inference.checkpoint import CheckpointInUseError, CheckpointMismatchError
from tests.inference._mcmc_targets import assert_moments

# Compilation is tested in test_compile: the kernels here run eagerly.
NUTS = functools.partial(inference.NUTS, jit_compile=False)
HMC = functools.partial(inference.HMC, jit_compile=False)


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
    return inference.mcmc.run(NUTS(), model, {"counts": COUNTS}, n_chains=6,
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
    runs = [inference.mcmc.run(NUTS(), _std_normal, init={"z": torch.zeros(2, 3)},
                               n_warmup=20, n_samples=10, progress=False, seed=5)
            for _ in range(2)]
    assert torch.equal(torch.rand(3), expected_next)
    assert torch.equal(runs[0].samples["z"], runs[1].samples["z"])
    other = inference.mcmc.run(NUTS(), _std_normal, init={"z": torch.zeros(2, 3)},
                               n_warmup=20, n_samples=10, progress=False, seed=6)
    assert not torch.equal(runs[0].samples["z"], other.samples["z"])


def test_several_chain_axes_are_flattened_in_the_result():
    result = inference.mcmc.run(HMC(step_size=0.5, n_leapfrogs=3), _std_normal,
                                init={"z": torch.zeros(2, 3, 4)}, n_warmup=0, n_samples=5,
                                progress=False, seed=0)
    assert result.samples["z"].shape == (6, 5, 4)
    assert result.stats["accept_prob"].shape == (6, 5)


def test_prior_initialization_is_uniform_on_the_unconstrained_scale():
    model = dirichlet_multinomial(int(COUNTS.sum()))
    kernel = HMC(step_size=1e-6, n_leapfrogs=1)  # (almost) does not move
    result = inference.mcmc.run(kernel, model, {"counts": COUNTS}, n_chains=50, n_warmup=0,
                                n_samples=1, progress=False, seed=0)
    x = result.potential.unconstrain({k: v[:, 0] for k, v in result.samples.items()})
    assert (x.abs() < 2.).all() and x.std() > 0.8  # uniform(-2, 2) has sd 1.15


def test_progress_bar(capsys):
    inference.mcmc.run(NUTS(), _std_normal, init={"z": torch.zeros(2, 3)},
                       n_warmup=5, n_samples=5, progress=True, seed=0)
    err = capsys.readouterr().err
    assert "sample" in err and "10/10" in err


def test_argument_errors():
    init = {"z": torch.zeros(2, 3)}
    nuts = NUTS()
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

    result = inference.mcmc.run(NUTS(), log_joint, init={"rate": torch.ones(4)},
                                supports={"rate": constraints.positive}, n_warmup=150,
                                n_samples=250, progress=False, seed=0)
    assert (result.samples["rate"] > 0).all()
    assert_moments(result.samples["rate"], 1.5, 3. / 4. + 2.25, name="gamma")


def test_lkj_cholesky_factor_through_corr_cholesky_support():
    """LKJ(eta=1) in 3 dims: each correlation is 2 Beta(1.5, 1.5) - 1 (mean 0, var 1/4)."""
    lkj = torch.distributions.LKJCholesky(3, concentration=1.)

    def log_joint(v):
        return lkj.log_prob(v["L"])

    result = inference.mcmc.run(NUTS(), log_joint,
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
    full = inference.mcmc.run(NUTS(), _std_normal, checkpoint=tmp_path / "full.pt",
                              **args)
    # An interrupted run: the kernel fails in the sampling phase. It runs the chains
    # between meeting points: 10, 20 (checkpoints), 30 (the end of warm-up), 40, ...; each
    # chain ends its window at 27 on its own, between 20 and 30.
    kernel = NUTS()
    calls = []
    original = kernel.iterate

    def failing(*a, **kw):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return original(*a, **kw)

    kernel.iterate = failing
    with pytest.raises(KeyboardInterrupt):
        inference.mcmc.run(kernel, _std_normal, checkpoint=path, **args)
    saved = torch.load(path, weights_only=True)
    assert saved["iteration"] == 30 and saved["draws"].shape[1] == 0
    resumed = inference.mcmc.run(NUTS(), _std_normal, checkpoint=path, **args)
    assert torch.equal(resumed.samples["z"], full.samples["z"])
    for name in full.stats:
        assert np.array_equal(resumed.stats[name], full.stats[name]), name
        assert np.array_equal(resumed.warmup_stats[name], full.warmup_stats[name]), name
    assert torch.equal(resumed.step_size, full.step_size)
    with pytest.raises(CheckpointMismatchError, match="n_samples: 20 in the checkpoint, now 40"):
        inference.mcmc.run(NUTS(), _std_normal, checkpoint=path,
                           **{**args, "n_samples": 40})


@ppl.meta_bayesian_net()
def normal_mean(n):
    bn = ppl.BayesianNet()
    mu = bn.normal("mu", torch.tensor(0.), std=torch.tensor(10.))
    bn.normal("y", mu[..., None].expand(mu.shape + (n,)), std=torch.tensor(1.), group_ndims=1)
    return bn


def test_checkpoint_of_other_data_is_refused(tmp_path):
    """A checkpoint records the model, the observed values and the settings: rerunning with
    other observations on the same path is an error naming them, never the old draws."""
    path = tmp_path / "run.pt"
    args = dict(n_chains=2, n_warmup=10, n_samples=10, progress=False, seed=0,
                checkpoint=path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short runs: sampling problems
        first = inference.mcmc.run(NUTS(), normal_mean(3), {"y": torch.zeros(3)},
                                   **args)
        again = inference.mcmc.run(NUTS(), normal_mean(3), {"y": torch.zeros(3)},
                                   **args)
    assert torch.equal(first.samples["mu"], again.samples["mu"])  # a finished run resumes
    with pytest.raises(CheckpointMismatchError, match=r"observed\.y\.sha256.*delete"):
        inference.mcmc.run(NUTS(), normal_mean(3), {"y": torch.full((3,), 5.)},
                           **args)
    with pytest.raises(CheckpointMismatchError, match=r"observed\.y\.shape"):
        inference.mcmc.run(NUTS(), normal_mean(4), {"y": torch.zeros(4)}, **args)
    with pytest.raises(CheckpointMismatchError, match=r"kernel\.max_tree_depth: 10 in the "
                                                      r"checkpoint, now 5"):
        inference.mcmc.run(NUTS(max_tree_depth=5), normal_mean(3),
                           {"y": torch.zeros(3)}, **args)


def test_checkpoint_of_a_model_with_other_baked_in_data_is_refused(tmp_path):
    """Data a plain log joint holds in its closure changes its log density at fixed points."""
    def model_of(data):
        def log_joint(v):
            return -0.5 * ((v["z"][..., None] - data) ** 2).sum((-2, -1))
        return log_joint

    args = dict(init={"z": torch.zeros(2, 1)}, n_warmup=5, n_samples=5, progress=False,
                seed=0, checkpoint=tmp_path / "run.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short runs: sampling problems
        inference.mcmc.run(NUTS(), model_of(torch.zeros(3)), **args)
    with pytest.raises(CheckpointMismatchError, match="log density differs"):
        inference.mcmc.run(NUTS(), model_of(torch.ones(3)), **args)


def test_second_process_on_a_checkpoint_path_gets_a_clear_error(tmp_path):
    path = tmp_path / "run.pt"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom inference import checkpoint\n"
         f"with checkpoint.writer_lock({str(path)!r}):\n    print('locked', flush=True)\n"
         "    sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointInUseError, match="in use by another run"):
            inference.mcmc.run(NUTS(), _std_normal, init={"z": torch.zeros(2, 1)},
                               n_warmup=5, n_samples=5, progress=False, checkpoint=path)
        assert not path.exists()
    finally:
        holder.communicate("")


def test_draws_do_not_depend_on_checkpoint_every(tmp_path):
    """Each chain's random numbers follow its own steps, so where the chains meet (every
    `checkpoint_every` iterations) does not change the draws."""
    args = dict(init={"z": torch.zeros(4, 3)}, n_warmup=40, n_samples=30, thin=1,
                progress=False, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short runs: sampling problems
        plain = inference.mcmc.run(NUTS(), _std_normal, **args)
        for every in (7, 12, 100):  # 12: a checkpoint where the window ends (36)
            other = inference.mcmc.run(NUTS(), _std_normal, checkpoint_every=every,
                                       checkpoint=tmp_path / f"every{every}.pt", **args)
            assert torch.equal(other.samples["z"], plain.samples["z"]), every
            for name in plain.stats:
                assert np.array_equal(other.stats[name], plain.stats[name]), (every, name)


def _skewed_scales(v):
    """A Gaussian whose scales span 10x: chains' trees differ in size during warm-up."""
    return -0.5 * ((v["z"] / torch.tensor([0.3, 1., 3.])) ** 2).sum(-1)


@pytest.mark.parametrize("mass", ["diag", "dense"])
def test_chains_that_end_their_windows_apart_draw_as_if_they_met(mass, monkeypatch):
    """NUTS chains end their warm-up windows each on its own (`windows_per_chain`), not
    waiting for the others there: the same draws, statistics, step sizes and metrics as
    when every chain waits at each window end (Stan's schedule, per chain either way).
    (Compiled: the leaf step's driver; uncompiled, the chains move in lock-step.)"""
    ended = []
    end_window = inference.mcmc.WindowedAdaptation.end_window

    def recording(self, end, chains, *args):
        ended.append((end, chains.tolist()))
        return end_window(self, end, chains, *args)
    monkeypatch.setattr(inference.mcmc.WindowedAdaptation, "end_window", recording)
    args = dict(init={"z": torch.zeros(4, 3)}, n_warmup=300, n_samples=10, progress=False,
                seed=5)  # windows end at 100, 150 and 250
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short runs: sampling problems
        apart = inference.mcmc.run(inference.NUTS(adapt_mass=mass, jit_compile=True),
                                   _skewed_scales, **args)
        by_chain, ended[:] = list(ended), []
        meeting = inference.NUTS(adapt_mass=mass, jit_compile=True)
        meeting.windows_per_chain = False
        together = inference.mcmc.run(meeting, _skewed_scales, **args)
    assert ended == [(end, [True] * 4) for end in (100, 150, 250)]
    for end in (100, 150, 250):  # each chain once, and not all at once
        groups = [chains for at, chains in by_chain if at == end]
        assert len(groups) > 1 and sorted(c for chains in groups
                                          for c, on in enumerate(chains) if on) == \
            list(range(4)), (end, groups)
    assert torch.equal(apart.samples["z"], together.samples["z"])
    for name in apart.stats:
        assert np.array_equal(apart.stats[name], together.stats[name]), name
        assert np.array_equal(apart.warmup_stats[name], together.warmup_stats[name]), name
    assert torch.equal(apart.step_size, together.step_size)
    assert torch.equal(apart.inverse_mass_matrix, together.inverse_mass_matrix)


def _funnel(v):
    """Neal's funnel, centered: y ~ N(0, 3), x ~ N(0, exp(y / 2)) (2 of them)."""
    y, x = v["z"][..., 0], v["z"][..., 1:]
    return (torch.distributions.Normal(0., 3.).log_prob(y)
            + torch.distributions.Normal(0., torch.exp(y / 2)[..., None]).log_prob(x).sum(-1))


def test_sampling_problems_are_reported_in_one_warning():
    """Divergences, R-hat and ESS of a short run on the centered funnel: one SamplingWarning
    naming them; summary() ends with the divergences per chain."""
    torch.manual_seed(0)
    init = {"z": torch.randn(4, 3)}
    with pytest.warns(inference.mcmc.SamplingWarning) as caught:
        result = inference.mcmc.run(NUTS(max_tree_depth=6), _funnel, init=init,
                                    n_warmup=60, n_samples=60, progress=False, seed=1)
    messages = [str(w.message) for w in caught if w.category is inference.mcmc.SamplingWarning]
    assert len(messages) == 1
    message = messages[0]
    n_divergent = int(result.stats["diverging"].sum())
    assert n_divergent > 0
    assert f"{n_divergent} of 240 transitions after warm-up diverged" in message
    assert "R-hat above 1.01" in message and "z[0]" in message
    assert "bulk ESS below 100 per chain (400 for 4 chains)" in message
    last = str(result.summary()).splitlines()[-1]
    per_chain = ", ".join(str(int(k)) for k in result.stats["diverging"].sum(1))
    assert last == f"divergences: {n_divergent} (per chain: {per_chain})"


def test_improper_posterior_runaway_draws_are_flagged():
    def flat(v):
        return 0. * v["z"].sum(-1)

    with pytest.warns(inference.mcmc.SamplingWarning, match="latent 'z' runs away"):
        inference.mcmc.run(NUTS(max_tree_depth=4), flat,
                           init={"z": torch.zeros(2, 2)}, n_warmup=100, n_samples=20,
                           progress=False, seed=0)


def test_good_run_gives_no_sampling_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", inference.mcmc.SamplingWarning)
        inference.mcmc.run(NUTS(), _std_normal, init={"z": torch.zeros(4, 2)},
                           n_warmup=200, n_samples=300, progress=False, seed=0)


def test_progress_bar_shows_divergences_as_they_happen(monkeypatch):
    """The bar's divergence count moves during sampling, not only at its last tick."""
    shown = []

    class Bar:
        def __init__(self, total, initial, **kwargs):
            self.n, self.total = initial, total

        def update(self, k):
            self.n += k

        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            shown.append((self.n, int({**(ordered_dict or {}), **kwargs}["divergences"])))

        def set_description(self, text):
            pass

        def close(self):
            pass

    monkeypatch.setattr(inference.mcmc.runner, "tqdm", Bar)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", inference.mcmc.SamplingWarning)
        result = inference.mcmc.run(NUTS(max_tree_depth=6), _funnel,
                                    init={"z": torch.randn(4, 3)}, n_warmup=60, n_samples=60,
                                    progress=True, seed=1)

    total = int(result.stats["diverging"].sum())
    assert shown[-1] == (120, total) and total > 0
    assert any(0 < count and n < 120 for n, count in shown)
