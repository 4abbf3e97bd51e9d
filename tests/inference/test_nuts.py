"""NUTS recovers known posteriors; the tree, divergences, bad regions and dtypes behave."""
import math
import warnings

import numpy as np
import pytest
import torch

import inference
import ppl
from inference.mcmc import (DiagonalMetric, DualAveraging, HMCState, identity_metric, nuts_kernel,
                            Potential)
from inference.mcmc import batching, nuts, streams
from inference.mcmc.termination import checkpoint_slots, leaf_table
from tests.inference._mcmc_targets import assert_moments, conjugate_cases, correlated_gaussian

CONJUGATE = conjugate_cases()


@pytest.mark.parametrize("case", CONJUGATE, ids=[c[0] for c in CONJUGATE])
def test_conjugate_posteriors(case):
    name, model, observed, latent, mean, second = case
    result = inference.mcmc.run(inference.NUTS(jit_compile=False), model, observed, n_chains=8,
                                n_warmup=200,
                                n_samples=250, progress=False, seed=1)
    draws = result.samples[latent]
    assert draws.shape[:2] == (8, 250)
    assert_moments(draws, mean, second, name=name)
    assert result.num_divergences.sum() == 0


def test_correlated_gaussian_50d_dense_mass():
    log_joint, mean, second = correlated_gaussian(50)
    result = inference.mcmc.run(inference.NUTS(adapt_mass="dense", jit_compile=False), log_joint,
                                init={"z": torch.zeros(16, 50)}, n_warmup=300, n_samples=200,
                                progress=False, seed=2)
    assert_moments(result.samples["z"], mean, second, name="gaussian-50d")
    # the adapted metric makes the target nearly isotropic: short trees
    assert result.stats["tree_depth"].mean() < 5


def test_stationary_start_stays_stationary_without_adaptation():
    """Exact draws in, a fixed small step: the kernel must keep N(0, diag(1, 100, 0.01))."""
    scales = torch.tensor([1., 10., 0.1])

    def log_joint(v):
        return -0.5 * ((v["z"] / scales) ** 2).sum(-1)

    torch.manual_seed(0)
    init = {"z": torch.randn(400, 3) * scales}
    kernel = inference.NUTS(step_size=0.1, adapt_step_size=False, adapt_mass=None,
                            max_tree_depth=12, jit_compile=False)
    result = inference.mcmc.run(kernel, log_joint, init=init, n_warmup=0, n_samples=30,
                                progress=False, seed=3)
    assert_moments(result.samples["z"], np.zeros(3), scales.numpy() ** 2, name="stationary")
    # trajectories must be long enough to cross the wide direction: depth > 5 on average
    assert result.stats["tree_depth"].mean() > 5


@pytest.mark.parametrize("max_tree_depth", [1, 2, 3, 7, 12])
def test_leaf_table_rows_follow_the_tree(max_tree_depth):
    """The vectorized table against its definition, leaf by leaf: depth, first, last,
    deepest, then the checkpoint slots written (even leaf) or checked (odd), as bits."""
    expected = []
    for depth in range(max_tree_depth):
        for leaf in range(2 ** depth):
            lo, hi = checkpoint_slots(leaf)
            slots = sum(1 << slot for slot in range(lo, hi + 1))
            expected.append([depth, leaf == 0, leaf == 2 ** depth - 1,
                             depth == max_tree_depth - 1, 0 if leaf % 2 else slots,
                             slots if leaf % 2 else 0])
    table = leaf_table(max_tree_depth)
    assert table.dtype == torch.int64
    assert table.tolist() == expected


def test_checkpoint_slots_cover_every_aligned_block():
    """At each odd leaf, the slots lo..hi hold exactly the starts of the blocks ending there."""
    for n_leaves in [2, 8, 64]:
        stored = {}
        for leaf in range(n_leaves):
            lo, hi = checkpoint_slots(leaf)
            if leaf % 2 == 0:
                stored[hi] = leaf
                continue
            starts = [leaf + 1 - 2 ** k for k in range(1, n_leaves.bit_length())
                      if (leaf + 1) % 2 ** k == 0]
            assert sorted(stored[s] for s in range(lo, hi + 1)) == sorted(starts)


def test_max_tree_depth_caps_the_trajectory():
    def log_joint(v):
        return -0.5 * (v["z"] ** 2).sum(-1)

    kernel = inference.NUTS(step_size=1e-3, adapt_step_size=False, adapt_mass=None,
                            max_tree_depth=4, jit_compile=False)
    result = inference.mcmc.run(kernel, log_joint, init={"z": torch.ones(3, 2)}, n_warmup=0,
                                n_samples=5, progress=False, seed=0)
    assert (result.stats["tree_depth"] == 4).all() and (result.stats["n_steps"] == 15).all()


def test_funnel_divergences_are_counted_and_never_propagated():
    @ppl.meta_bayesian_net()
    def funnel():
        bn = ppl.BayesianNet()
        v = bn.normal("v", torch.tensor(0.), std=3.)
        bn.normal("x", torch.zeros(9), std=torch.exp(v / 2.)[..., None], group_ndims=1)
        return bn

    # start in the neck, where the scale of x (exp(-2.5)) is far below the step size
    init = {"v": torch.full((4,), -5.), "x": 0.05 * torch.randn(4, 9)}
    kernel = inference.NUTS(step_size=0.5, adapt_step_size=False, adapt_mass=None,
                            jit_compile=False)
    result = inference.mcmc.run(kernel, funnel(), init=init, n_warmup=0, n_samples=50,
                                progress=False, seed=0)
    assert result.num_divergences.sum() > 0
    assert torch.isfinite(result.samples["v"]).all() and torch.isfinite(result.samples["x"]).all()
    assert np.isfinite(result.stats["energy"]).all()


@pytest.mark.parametrize("bad", [-math.inf, math.nan])
def test_region_with_non_finite_log_joint_is_never_entered(bad):
    def log_joint(v):
        z = v["z"]
        inside = -0.5 * (z ** 2).sum(-1)
        return torch.where(z[:, 0] > 0.5, torch.full_like(inside, bad), inside)

    # 150 warm-up iterations: Stan's schedule then ends with a 50-iteration step size
    # window. With 100 (a 10-iteration one) a chain near the wall can restart dual
    # averaging at a tiny heuristic step and keep it, making 1023-step trees (a minute).
    result = inference.mcmc.run(inference.NUTS(jit_compile=False), log_joint,
                                init={"z": torch.zeros(4, 2)},
                                n_warmup=150, n_samples=100, progress=False, seed=0)
    z = result.samples["z"]
    assert torch.isfinite(z).all() and (z[..., 0] <= 0.5).all()
    assert result.warmup_stats["diverging"].sum() + result.stats["diverging"].sum() > 0


def test_chains_with_different_tree_depths_are_masked():
    """Short trees stop counting while long ones go on; every chain ends at a valid point."""
    def log_joint(v):
        return -0.5 * (v["z"] ** 2 * torch.tensor([1., 25.])).sum(-1)

    potential = Potential(log_joint, None, {"z": torch.zeros(5, 2)})
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    state = HMCState(x, *potential(x))
    step = torch.tensor([0.01, 0.05, 0.1, 0.3, 0.39])
    torch.manual_seed(7)
    new, info = nuts_kernel(state, potential, step, identity_metric(5, 2))
    assert len(set(info.tree_depth.tolist())) > 1
    # a tree of depth d did d - 1 full doublings and part of the last one
    assert (info.n_steps <= 2 ** info.tree_depth - 1).all()
    assert (info.n_steps >= 2 ** (info.tree_depth - 1)).all()
    assert info.tree_depth[0] > info.tree_depth[-1]
    log_prob, _ = potential(new.position)
    assert torch.allclose(log_prob, new.log_prob)
    assert torch.isfinite(new.position).all()


def test_zhusuan_sample_interface_adapts_then_samples():
    case = CONJUGATE[1]
    _, model, observed, latent, mean, second = case
    nuts = inference.NUTS(jit_compile=False)
    values = {latent: torch.ones(8)}
    draws = []
    for it in range(500):
        nuts.adapt_step_size = it < 200
        nuts.adapt_mass = "diag" if it < 200 else None
        values, info = nuts.sample(model, observed, values)
        if it >= 200:
            draws.append(values[latent])
    assert info.acceptance_rate.shape == (8,) and info.log_prob.shape == (8,)
    assert (info.updated_step_size > 0).all()
    assert_moments(torch.stack(draws, 1), mean, second, name="online NUTS")


def _anisotropic_chains():
    """5 chains on N(0, diag(1, 1/25)) with very different step sizes (tree depths)."""
    def log_joint(v):
        return -0.5 * (v["z"] ** 2 * torch.tensor([1., 25.])).sum(-1)

    potential = Potential(log_joint, None, {"z": torch.zeros(5, 2)})
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    step = torch.tensor([0.01, 0.05, 0.1, 0.3, 0.39])
    return potential, HMCState(x, *potential(x)), step


def test_chains_run_their_transitions_unsynchronized():
    """One step call advances every chain by one leapfrog of its own tree: the calls needed
    for k transitions are the largest per-chain total of leapfrogs (a chain never waits
    for another; the driver asks whether all are through every 8 steps), not the sum over
    transitions of the batch's longest tree."""
    potential, state, step_size = _anisotropic_chains()
    calls = []

    def value_and_grad(x):
        calls.append(1)
        return potential(x)

    step = nuts.eager_leaf_step(value_and_grad, DiagonalMetric)
    torch.manual_seed(1)
    state = state._replace(rng=streams.new_streams(5))
    step_size = torch.full((5,), 0.1)  # no chain makes the longest tree every time
    _, _, positions, stats = batching.run_transitions(step, state, step_size,
                                                      identity_metric(5, 2), 10, 20)
    most = int(stats.n_steps.sum(0).max())  # [transition, chain]
    assert most <= len(calls) < most + 8
    assert len(calls) < int(stats.n_steps.max(1).values.sum())  # what lock-step trees take
    assert positions.shape == (20, 5, 2) and torch.isfinite(positions).all()


def test_the_kernel_and_the_driver_draw_the_same_transitions():
    """`nuts_kernel` (one transition, state in, state out) called k times and
    `run_transitions` for k transitions draw from the same per-chain streams by the same
    counts: the same points and statistics."""
    potential, state, step_size = _anisotropic_chains()
    state = state._replace(rng=streams.new_streams(5))
    metric = identity_metric(5, 2)
    after, _, positions, stats = batching.run_transitions(
        nuts.eager_leaf_step(potential, DiagonalMetric), state, step_size, metric, 10, 6)
    for k in range(6):
        state, info = nuts_kernel(state, potential, step_size, metric)
        assert torch.equal(state.position, positions[k])
        assert torch.equal(info.n_steps, stats.n_steps[k])
        assert torch.equal(info.accept_prob, stats.accept_prob[k])
    assert torch.equal(state.rng, after.rng)


def test_chains_paused_below_the_end_need_a_hook_that_moves_them_on():
    """A per-chain `target` below n_iterations pauses chains there: without `at_target`,
    or with one that leaves them where they are, they would wait forever."""
    potential, state, step_size = _anisotropic_chains()
    state = state._replace(rng=streams.new_streams(5))
    step, metric = nuts.eager_leaf_step(potential, DiagonalMetric), identity_metric(5, 2)
    target = torch.tensor([6, 6, 3, 6, 6])
    with pytest.raises(ValueError, match="needs `at_target`"):
        batching.run_transitions(step, state, step_size, metric, 10, 6, target=target)

    def stays(tree, iterations, target, value_and_grad):
        return batching.Restart(iterations >= target, metric, tree.adaptation, target)
    with pytest.raises(RuntimeError, match="without a later target"):
        batching.run_transitions(step, state, step_size, metric, 10, 6, target=target,
                                 at_target=stays)


def test_dual_averaging_inside_the_step_matches_the_eager_updates():
    """Each chain updates its step size after each of its transitions, as `DualAveraging`
    does with the acceptance statistics of those transitions."""
    potential, state, step_size = _anisotropic_chains()
    kernel = inference.NUTS(jit_compile=False)
    dual = DualAveraging(step_size, target_acceptance_rate=0.8)
    torch.manual_seed(2)
    _, _, stats, final = kernel.iterate(state, potential, step_size, identity_metric(5, 2), 30,
                                        dual)
    replay = DualAveraging(step_size, target_acceptance_rate=0.8)
    used = [step_size]
    for accept_prob in stats["accept_prob"]:
        used.append(replay.update(accept_prob))
    assert torch.allclose(stats["step_size"], torch.stack(used[:-1]), rtol=1e-5)
    assert torch.allclose(final, replay.step_size, rtol=1e-5)
    assert torch.allclose(dual.final_step_size, replay.final_step_size, rtol=1e-5)
    assert torch.equal(dual.count, torch.full((5,), 30.))


@ppl.meta_bayesian_net()
def _float32_normal_mean():
    bn = ppl.BayesianNet()
    mu = bn.normal("mu", torch.zeros(2), std=torch.ones(2), group_ndims=1)
    bn.normal("y", mu[..., None, :].expand(mu.shape[:-1] + (5, 2)), std=torch.ones(()),
              group_ndims=2)
    return bn


@pytest.mark.parametrize("jit_compile", [False, pytest.param(True, marks=pytest.mark.slow)])
@pytest.mark.parametrize("adapt_mass", ["diag", "dense"])
def test_float64_observation_of_a_float32_model(adapt_mass, jit_compile):
    """The chains keep the latents' dtype (float32) whatever the data's: the log density is
    cast to it, as HMC and the Trainer handle the same input."""
    y = torch.linspace(-1., 2., 10, dtype=torch.float64).reshape(5, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = inference.mcmc.run(
            inference.NUTS(adapt_mass=adapt_mass, jit_compile=jit_compile),
            _float32_normal_mean(), {"y": y}, n_chains=2, n_warmup=20, n_samples=10,
            progress=False, seed=0)
    assert result.samples["mu"].dtype == torch.float32
    assert result.last_state.log_prob.dtype == torch.float32
    assert np.isfinite(result.stats["energy"]).all()
    assert result.samples["mu"].shape == (2, 10, 2)


def test_each_chain_draws_from_its_own_counts_across_calls():
    """Chain c's k-th transition starts with the momentum noise of count k of its stream and
    its s-th leapfrog step uses the uniforms of count s, however the transitions are split
    into calls and blocks (so meeting points, e.g. checkpoints, do not change the draws)."""
    scales = torch.tensor([1., 4., 9., 100.])

    def value_and_grad(x):
        return -0.5 * (x ** 2 * scales).sum(-1), -x * scales

    eager = nuts.eager_leaf_step(value_and_grad, DiagonalMetric)
    seen = []  # (tree going into leaf_begin, its noise, its uniforms, target)

    def begin(tree, inverse_mass, factor, noise, uniform, table, target):
        seen.append((tree, noise, uniform, target))
        return eager.begin(tree, inverse_mass, factor, noise, uniform, table, target)

    def end_begin(*args):
        out = eager.end_begin(*args)
        tree, steps, draws, target = args[0], args[8], args[9], args[11]
        _, noise, uniform = nuts.next_numbers(tree.iteration, target, steps, draws)
        seen.append((nuts.leaf_end(DiagonalMetric, nuts.NO_ADAPTATION.update, *args[:6], args[7],
                                   *args[10:], 1000., ())[0], noise, uniform, target))
        return out

    step = eager._replace(begin=begin, end_begin=end_begin)
    torch.manual_seed(0)
    n, dim = 3, 4
    x = torch.randn(n, dim)
    state = HMCState(x, *value_and_grad(x), streams.new_streams(n))
    for k in (5, 3, 7):
        state, _, _, _ = batching.run_transitions(step, state, torch.full((n,), 0.3),
                                                  identity_metric(n, dim), 10, k, block=4,
                                                  check_every=4)
    rng = state.rng
    key = rng[:, 0]
    for c in range(n):
        running = [(t, z, u) for t, z, u, target in seen if t.iteration[c] < target[c]]
        noise = torch.stack([z[c] for t, z, u in running if t.leaf[c] == 0])
        uniform = torch.stack([u[c] for t, z, u in running])
        assert len(noise) == 15 and rng[c, 2] == 15 and rng[c, 1] == len(uniform)
        counts = torch.arange(len(noise))[:, None].expand(-1, n)
        assert torch.equal(noise, streams.normals(key, counts, dim, torch.float32)[:, c])
        counts = torch.arange(len(uniform))[:, None].expand(-1, n)
        assert torch.equal(uniform, streams.uniforms(key, counts, torch.float32)[:, c])


def test_the_running_chains_gradient_alone_gives_the_same_draws():
    """Once few chains still run, `run_transitions` asks a gradient that takes rows
    (`takes_rows`) for the aligned groups of `row_group` rows that hold them alone: the
    draws are the same as with every row at every step."""
    scales = torch.tensor([1., 25.])

    class Gradient:
        row_group = 2

        def __init__(self, takes_rows):
            self.takes_rows, self.rows = takes_rows, []

        def __call__(self, x):
            self.rows.append(x.shape[0])
            return -0.5 * (x ** 2 * scales).sum(-1), -x * scales

    n = 8
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    step_size = torch.linspace(0.02, 0.4, n)  # very different tree lengths
    results = []
    for gradient in (Gradient(False), Gradient(True)):
        torch.manual_seed(0)  # the same streams
        state = HMCState(x, *gradient(x), streams.new_streams(n))
        results.append((gradient, batching.run_transitions(
            nuts.eager_leaf_step(gradient, DiagonalMetric), state, step_size,
            identity_metric(n, 2), 10, 12, block=16, check_every=4)))
    (every, (after, _, positions, stats)), (rows, (after_rows, _, positions_rows, stats_rows)) \
        = results
    assert set(every.rows) == {n} and {2, 4} <= set(rows.rows) <= {2, 4, n}
    assert len(rows.rows) == len(every.rows)
    assert torch.equal(positions_rows, positions) and torch.equal(after_rows.rng, after.rng)
    for table, table_rows in zip(stats, stats_rows):
        assert torch.equal(table_rows, table)


def test_the_running_chains_rows_keep_their_place_in_a_group():
    """The rows asked for hold every running chain at its place modulo `row_group` (so its
    bits are as in the whole batch), in as few groups as that allows, filled up with paused
    chains; only where they are half the rows or fewer."""
    class Gradient:
        takes_rows, row_group = True, 4

        def __call__(self, x):
            return x.sum(-1), x

    gradient = batching.RunningRowsGradient(Gradient(), torch.float32)
    running = torch.zeros(18, dtype=torch.bool)
    running[[5, 10]] = True
    assert gradient.rows_for(running) and gradient.index is None  # nothing computed yet
    gradient(torch.zeros(18, 2))
    assert gradient.rows_for(running) and gradient.index.tolist() == [0, 5, 10, 3]
    running[17] = True  # 17 = 1 mod 4, as 5: two groups
    assert gradient.rows_for(running) and gradient.index.tolist() == [0, 5, 10, 3,
                                                                      4, 17, 2, 7]
    running[[1, 9]] = True  # three chains at place 1: 12 rows, over half
    assert gradient.rows_for(running) and gradient.index is None
    assert not gradient.rows_for(torch.zeros(18, dtype=torch.bool))
    log_prob, grad = gradient(torch.ones(18, 2))
    assert torch.equal(log_prob, torch.full((18,), 2.))
