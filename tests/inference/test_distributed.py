"""`inference.distributed`: 2 local processes on gloo give what one process gives.

One 2-rank job (module fixture) runs every scenario; the references run in the
test process (one process: every distributed function is the identity there).
- VAE training (reparameterization noise carried in the data, so that 1 and 2
  ranks use the same numbers): parameters within 1e-5 of one process's.
- SGLD and SGHMC with each rank on half of every minibatch: the same chain, step
  for step.
- NUTS, 4 chains on 2 ranks: each chain's draws as with 4 chains in one process.
- A checkpoint written by 2 ranks resumes in 1 and one written by 1 resumes in 2.
Failures: a rank that dies or hangs is named by the other; bad launches say what is
wrong.
"""
import collections
import multiprocessing
import os
import socket
import time
import traceback

import pytest
import torch
from torch import nn

import inference
import ppl
from inference import distributed

X, Z, H, N_DATA, BATCH = 6, 2, 8, 15, 5  # 2 ranks: 3 and 2 rows


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank, world, port, timeout, job, out, args):
    """One rank: join the group from torchrun's environment variables, run `job`, save
    its result (rank 0) or the error's text."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      PPL_DISTRIBUTED_TIMEOUT=str(timeout))
    distributed._session = None  # forked from the test process, which ran as one process
    torch.set_num_threads(1)
    try:
        result = job(*args)
        if rank == 0:
            torch.save(result, out / "result.pt")
    except BaseException as error:  # noqa: BLE001: the test reads it
        (out / f"error{rank}.txt").write_text(f"{type(error).__name__}: {error}\n"
                                              + traceback.format_exc())
        os._exit(1)
    os._exit(0)


def _launch(job, out, *args, world=2, timeout=60):
    """Run `job(*args)` on `world` forked ranks; returns (rank 0's result or None, exit
    codes, error texts by rank)."""
    context = multiprocessing.get_context("fork")
    port = _free_port()
    processes = [context.Process(target=_worker, args=(r, world, port, timeout, job, out, args))
                 for r in range(world)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout + 60)
    for process in processes:
        if process.is_alive():
            process.kill()
    errors = {r: (out / f"error{r}.txt").read_text() for r in range(world)
              if (out / f"error{r}.txt").exists()}
    result = torch.load(out / "result.pt", weights_only=True) \
        if (out / "result.pt").exists() else None
    return result, [p.exitcode for p in processes], errors


# -- the scenarios ----------------------------------------------------------
def _vae_templates():
    @ppl.meta_bayesian_net(scope="gen")
    def gen(n):
        bn = ppl.BayesianNet()
        z = bn.normal("z", torch.zeros(n, Z), std=1., group_ndims=1)
        h = ppl.module("h", lambda: nn.Linear(Z, H))(z).tanh()
        bn.bernoulli("x", ppl.module("logits", lambda: nn.Linear(H, X))(h), group_ndims=1)
        return bn

    @ppl.reuse_variables(scope="q")
    def encoder(x):
        h = ppl.module("h", lambda: nn.Linear(X, H))(x).tanh()
        return ppl.module("loc", lambda: nn.Linear(H, Z))(h), \
            ppl.module("logstd", lambda: nn.Linear(H, Z))(h)
    return gen, encoder


def _vae_step(gen, encoder, rows=None):
    """The SGVB step with the noise from the batch; appends the rows seen to `rows`."""
    def step(batch):
        x, eps = batch
        if rows is not None:
            rows.append(len(x))
        loc, logstd = encoder(x)
        z = loc + logstd.exp() * eps
        log_q = torch.distributions.Normal(loc, logstd.exp()).log_prob(z).sum(-1)
        lower_bound = gen(len(x)).observe(x=x, z=z).log_joint() - log_q
        return -lower_bound.mean(), lower_bound
    return step


def _vae_data():
    generator = torch.Generator().manual_seed(3)
    x = torch.bernoulli(torch.full((N_DATA, X), 0.3), generator=generator)
    eps = torch.randn(N_DATA, Z, generator=generator)
    return distributed.shuffled_batches((x, eps), BATCH, seed=7)


def _train_vae(n_epochs, checkpoint_path=None, rows=None):
    """The VAE trained for `n_epochs` (resuming from `checkpoint_path` when it exists):
    its parameters by name; the rows of each step go to `rows`."""
    torch.manual_seed(0)
    gen, encoder = _vae_templates()
    trainer = inference.Trainer({"model": gen, "guide": encoder},
                                lambda params: torch.optim.Adam(params, lr=0.05),
                                checkpoint_path=checkpoint_path, progress=False)
    trainer.fit(_vae_step(gen, encoder, rows), _vae_data(), n_epochs)
    return {f"{name}.{key}": value.detach().clone()
            for name, module in trainer.modules.items()
            for key, value in module.state_dict().items()}


SG_SAMPLERS = {"sgld": lambda: inference.SGLD(learning_rate=0.01),
               "sghmc": lambda: inference.SGHMC(learning_rate=0.01, n_iter_resample_v=3)}


def _sg_chain(name, n_steps=5):
    """SGLD / SGHMC on Bayesian linear regression, each rank on its rows of every
    minibatch: the position after each step."""
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(32, 3, generator=generator, dtype=torch.float64)
    y = x @ torch.tensor([1., -2., .5], dtype=torch.float64) \
        + torch.randn(32, generator=generator, dtype=torch.float64)

    @ppl.meta_bayesian_net(scope="blr")
    def model(x):
        bn = ppl.BayesianNet()
        w = bn.normal("w", torch.zeros(3, dtype=torch.float64), std=1., group_ndims=1)
        bn.normal("y", x @ w, std=1.)
        return bn

    torch.manual_seed(11)
    latent = {"w": torch.zeros(3, dtype=torch.float64)}
    sampler, path = SG_SAMPLERS[name](), []
    for step in range(n_steps):
        rows = slice(step * 8 % 32, step * 8 % 32 + 8)
        x_batch, y_batch = distributed.shard((x[rows], y[rows]))
        samples, _ = sampler.sample(model(x_batch), {"y": y_batch}, latent,
                                    data_scale={"y": 32 / len(y_batch)})
        path.append(samples["w"].clone())
    return torch.stack(path)


def _nuts_draws(checkpoint=None):
    """4 NUTS chains (eager, diagonal mass adapted in one window) on a 2-d Gaussian: draws
    (chain, draw, 2), step sizes, and how many chains the model was run on most often."""
    chains = []

    @ppl.meta_bayesian_net(scope="gaussian")
    def model():
        bn = ppl.BayesianNet()
        w = bn.normal("w", torch.tensor([1., -1.]), std=torch.tensor([1., 2.]), group_ndims=1)
        chains.append(w.tensor.shape[0] if w.tensor.dim() == 2 else 1)
        return bn

    result = inference.mcmc.run(inference.NUTS(jit_compile=False), model(), n_chains=4,
                                n_warmup=40, n_samples=20, progress=False, seed=4,
                                checkpoint=checkpoint, checkpoint_every=20)
    return {"w": result.samples["w"], "step_size": result.step_size,
            "chains_per_run": torch.tensor(collections.Counter(chains).most_common(1)[0][0])}


def _given_different_batches():
    """The error when each rank is given a batch of its own (it shards them itself)."""
    gen, encoder = _vae_templates()
    trainer = inference.Trainer({"model": gen, "guide": encoder},
                                lambda params: torch.optim.Adam(params, lr=0.05),
                                progress=False)
    own_batch = _vae_data()(distributed.rank())[0]
    with pytest.raises(ValueError, match="the ranks were given different batches") as error:
        trainer.step(_vae_step(gen, encoder), own_batch)
    return str(error.value)


def _all_scenarios(folder):
    _train_vae(1, folder / "written_by_2.pt")  # 2 ranks write, one process resumes
    rows = []
    return {"vae": _train_vae(2, rows=rows), "rows": torch.tensor(rows),
            "held_out": distributed.mean(distributed.shard(torch.arange(11.) ** 2)),
            "different_batches": _given_different_batches(),
            "resumed_in_2": _train_vae(2, folder / "written_by_1.pt"),
            **{name: _sg_chain(name) for name in SG_SAMPLERS},
            "nuts": _nuts_draws(folder / "nuts.pt")}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    _train_vae(1, folder / "written_by_1.pt")  # one process writes, 2 ranks resume
    result, codes, errors = _launch(_all_scenarios, folder, folder)
    assert codes == [0, 0], errors
    return folder, result


def _assert_close(actual, expected, atol):
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=atol, rtol=0,
                                   msg=lambda m: f"{key}: {m}")


def test_two_ranks_train_the_vae_as_one_process_on_the_global_batch(two_ranks):
    _, result = two_ranks
    assert result["rows"].tolist() == [3] * 6  # rank 0: 3 of the 5 rows, 3 batches x 2 epochs
    _assert_close(result["vae"], _train_vae(2), atol=1e-5)


def test_held_out_means_over_unequal_shards_are_the_global_mean(two_ranks):
    _, result = two_ranks
    assert float(result["held_out"]) == pytest.approx(float((torch.arange(11.) ** 2).mean()))


def test_ranks_given_different_batches_are_told(two_ranks):
    _, result = two_ranks
    assert "rank 0: the ranks were given different batches" in result["different_batches"]


def test_checkpoints_resume_at_another_world_size(two_ranks):
    folder, result = two_ranks
    reference = _train_vae(2)
    _assert_close(result["resumed_in_2"], reference, atol=1e-5)  # written by 1, resumed in 2
    assert not any(name.endswith(".tmp") for name in os.listdir(folder))
    _assert_close(_train_vae(2, folder / "written_by_2.pt"), reference, atol=1e-5)


@pytest.mark.parametrize("name", SG_SAMPLERS)
def test_two_rank_sgmcmc_is_the_global_minibatch_chain(two_ranks, name):
    _, result = two_ranks
    torch.testing.assert_close(result[name], _sg_chain(name), atol=1e-12, rtol=0)


@pytest.mark.filterwarnings("ignore::inference.mcmc.SamplingWarning")  # 20 draws
def test_chain_parallel_nuts_draws_each_chain_as_one_process(two_ranks):
    folder, result = two_ranks
    reference = _nuts_draws()
    assert int(result["nuts"]["chains_per_run"]) == 2 and int(reference["chains_per_run"]) == 4
    assert {"nuts.pt.rank0of2", "nuts.pt.rank1of2"} <= set(os.listdir(folder))  # each its own
    assert result["nuts"]["w"].shape == (4, 20, 2)
    torch.testing.assert_close(result["nuts"]["w"], reference["w"], atol=1e-6, rtol=0)
    torch.testing.assert_close(result["nuts"]["step_size"], reference["step_size"])


def _dies_at_step_3():
    gen, encoder = _vae_templates()
    trainer = inference.Trainer({"model": gen, "guide": encoder},
                                lambda params: torch.optim.Adam(params, lr=0.05),
                                progress=False)
    step, batches = _vae_step(gen, encoder), _vae_data()(0)
    for index in range(100):
        if distributed.rank() == 1 and index == 3:
            os._exit(3)
        trainer.step(step, batches[index % len(batches)])


def test_a_dead_rank_is_named_by_the_others(tmp_path):
    start = time.monotonic()
    _, codes, errors = _launch(_dies_at_step_3, tmp_path, timeout=30)
    assert codes == [1, 3] and list(errors) == [0]
    assert "RankFailedError: rank 1 died" in errors[0]
    assert time.monotonic() - start < 30


def _hangs_past_the_timeout():
    if distributed.rank() == 1:
        time.sleep(6)  # alive (its heartbeat beats), but not in the collective
    else:
        distributed.mean(torch.ones(3))


def test_a_hung_rank_is_named_after_the_timeout(tmp_path):
    _, codes, errors = _launch(_hangs_past_the_timeout, tmp_path, timeout=2)
    assert codes == [1, 0] and list(errors) == [0]
    assert "RankFailedError: rank 1 did not join reducing a held-out metric within the " \
           "timeout (2 s); it is alive" in errors[0]


@pytest.fixture
def fresh_session(monkeypatch):
    """A process that has not joined a group yet, with no launch variables."""
    monkeypatch.setattr(distributed, "_session", None)
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _set_launch_variables(env, rank, world_size, master=True):
    """Set RANK and WORLD_SIZE and, when `master`, MASTER_ADDR (this machine) and a free
    MASTER_PORT, through `env` (the `fresh_session` monkeypatch)."""
    if master:
        env.setenv("MASTER_ADDR", "127.0.0.1")
        env.setenv("MASTER_PORT", str(_free_port()))
    env.setenv("RANK", str(rank))
    env.setenv("WORLD_SIZE", str(world_size))


def test_missing_launch_variables_are_named(fresh_session):
    _set_launch_variables(fresh_session, rank=0, world_size=2, master=False)
    with pytest.raises(distributed.LaunchError, match="MASTER_ADDR, MASTER_PORT are not set"):
        distributed.init()


def test_a_rank_outside_the_world_size_is_a_launch_error(fresh_session):
    _set_launch_variables(fresh_session, rank=2, world_size=2)
    with pytest.raises(distributed.LaunchError, match="RANK=2 with WORLD_SIZE=2"):
        distributed.init()


def test_ranks_that_never_start_make_the_launch_fail_in_time(fresh_session):
    _set_launch_variables(fresh_session, rank=0, world_size=2)
    start = time.monotonic()
    with pytest.raises(distributed.LaunchError, match="could not join the 2 processes"):
        distributed.init(timeout=2)
    assert time.monotonic() - start < 20


def test_one_process_is_untouched(fresh_session):
    assert not distributed.init()
    batch = torch.arange(6.)
    assert distributed.shard(batch) is batch
    assert distributed.rank_path("run.pt") == "run.pt"
    assert float(distributed.mean(torch.tensor([1., 2., 6.]))) == 3.
