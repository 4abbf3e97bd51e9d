"""NUTS a doubling at a time (`inference.mcmc.doubling`, the uncompiled path) makes the
transitions of the leaf step (`nuts` + `batching`): the same points, tree sizes and
statistics from the same per-chain streams."""
import math

import pytest
import torch

from inference.mcmc import HMCState, Potential, batching, nuts, streams
from inference.mcmc.adaptation import dual_averaging
from inference.mcmc.doubling import run_doublings
from inference.mcmc.metric import DenseMetric, DiagonalMetric, identity_metric

F64 = torch.float64
SCALES = torch.tensor([1., 25., 100.], dtype=F64)
# per chain: a step size from one that hits max_tree_depth to one that diverges
STEP_SIZES = torch.tensor([0.01, 0.05, 0.1, 0.3, 0.39, 0.2, 0.25, 1.5], dtype=F64)


def _chains(log_joint, n=8, dim=3, seed=0):
    potential = Potential(log_joint, None, {"z": torch.zeros(n, dim, dtype=F64)})
    x = 0.3 * torch.randn(n, dim, dtype=F64, generator=torch.Generator().manual_seed(seed))
    x = x.clamp(-0.9, 0.9)  # a finite log density at the start, as `run` requires
    torch.manual_seed(seed + 1)
    return potential, HMCState(x, *potential(x), streams.new_streams(n))


def gaussian(values):
    return -0.5 * (values["z"] ** 2 * SCALES).sum(-1)


def _both(potential, state, metric, max_tree_depth, n_iterations, **kwargs):
    """(leaf step's, doublings') (state, adaptation, positions, stats)."""
    adaptation = dual_averaging()
    leaf = nuts.eager_leaf_step(potential, type(metric), adaptation=adaptation)
    by_leaf = batching.run_transitions(leaf, state, STEP_SIZES, metric, max_tree_depth,
                                       n_iterations, **kwargs)
    by_doubling = run_doublings(potential, type(metric), state, STEP_SIZES, metric,
                                max_tree_depth, n_iterations, adaptation, **kwargs)
    return by_leaf, by_doubling


def _assert_same(by_leaf, by_doubling):
    (state_a, adapted_a, positions_a, stats_a), (state_b, adapted_b, positions_b, stats_b) = \
        by_leaf, by_doubling
    torch.testing.assert_close(positions_b, positions_a, rtol=1e-12, atol=1e-12)
    for name in ("n_steps", "tree_depth", "diverging"):
        assert torch.equal(getattr(stats_b, name), getattr(stats_a, name)), name
    for name in ("accept_prob", "step_size", "energy", "orig_energy"):
        torch.testing.assert_close(getattr(stats_b, name), getattr(stats_a, name),
                                   rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(adapted_b.step_size, adapted_a.step_size, rtol=1e-12, atol=0)
    assert torch.equal(state_b.rng, state_a.rng)
    torch.testing.assert_close(state_b.position, state_a.position, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dense", [False, True])
def test_doublings_make_the_leaf_steps_transitions(dense):
    potential, state = _chains(gaussian)
    metric = identity_metric(8, 3, dense=dense, dtype=F64)
    by_leaf, by_doubling = _both(potential, state, metric, 6, 30, adapting=True)
    _assert_same(by_leaf, by_doubling)
    stats = by_doubling[3]
    # the comparison covers trees stopped by divergences, by U-turns and at the depth limit
    assert stats.diverging.any() and (stats.tree_depth == 6).any()
    assert ((stats.tree_depth < 6) & ~stats.diverging).any()


def test_a_dense_metric_with_correlations_and_no_adaptation():
    potential, state = _chains(gaussian, seed=3)
    covariance = torch.tensor([[1., 0.5, 0.], [0.5, 1., 0.3], [0., 0.3, 0.2]], dtype=F64)
    metric = DenseMetric(covariance.expand(8, 3, 3).clone())
    _assert_same(*_both(potential, state, metric, 10, 12))


def test_non_finite_leaves_stop_the_subtree_as_divergences():
    """Half of the space has log density -inf, and the gradient is NaN beyond |z| > 3: the
    doublings take the unmasked gradient (`Potential(..., mask_nonfinite=False)`) and stop
    at such leaves as the leaf step stops at its masked ones; no chain ever moves there."""
    def walled(values):
        z = values["z"]
        inside = (z[..., 0] > -1.) & (z.abs() < 3.).all(-1)
        density = -0.5 * (z ** 2 * SCALES).sum(-1) + torch.sqrt(3. - z.abs()).sum(-1)
        return torch.where(inside, density, -math.inf)

    potential, state = _chains(walled, seed=5)
    metric = identity_metric(8, 3, dtype=F64)
    adaptation = dual_averaging()
    leaf = nuts.eager_leaf_step(potential, type(metric), adaptation=adaptation)
    by_leaf = batching.run_transitions(leaf, state, STEP_SIZES, metric, 6, 20)
    by_doubling = run_doublings(lambda x: potential(x, mask_nonfinite=False), type(metric),
                                state, STEP_SIZES, metric, 6, 20, adaptation)
    _assert_same(by_leaf, by_doubling)
    assert by_doubling[3].diverging.any()
    assert torch.isfinite(by_doubling[2]).all() and (by_doubling[2][..., 0] > -1.).all()


def test_chains_paused_at_their_targets_restart_through_the_hook():
    """Per-chain targets (the runner's warm-up windows): each chain pauses at its own, and
    the hook gives it a wider metric, half its step size, a later target and no more
    adaptation (its row only, as the runner's hook does); the draws are the leaf step's,
    though the drivers call the hook at other times."""
    potential, state = _chains(gaussian, seed=7)
    metric = identity_metric(8, 3, dtype=F64)
    calls = {}

    def hook_for(name):
        now = {"metric": metric, "adapting": torch.ones(8, dtype=torch.bool)}

        def at_target(tree, iterations, target, value_and_grad):
            calls[name] = calls.get(name, 0) + 1
            paused = (iterations >= target) & (target < 12)
            now["metric"] = DiagonalMetric(torch.where(paused[:, None], 0.5,
                                                       now["metric"].inverse_mass))
            now["adapting"] = now["adapting"] & ~paused
            steps = tree.adaptation.step_size
            adaptation = tree.adaptation._replace(step_size=torch.where(paused, 0.5 * steps,
                                                                        steps))
            return batching.Restart(paused, now["metric"], adaptation,
                                    torch.where(paused, torch.full_like(target, 12), target),
                                    now["adapting"].clone())
        return at_target

    target = torch.tensor([3, 5, 5, 12, 0, 7, 2, 12])
    leaf = nuts.eager_leaf_step(potential, type(metric), adaptation=dual_averaging())
    by_leaf = batching.run_transitions(leaf, state, STEP_SIZES, metric, 6, 12, adapting=True,
                                       target=target, at_target=hook_for("leaf"))
    by_doubling = run_doublings(potential, type(metric), state, STEP_SIZES, metric, 6, 12,
                                dual_averaging(), adapting=True, target=target,
                                at_target=hook_for("doubling"))
    _assert_same(by_leaf, by_doubling)
    assert calls["doubling"] > calls["leaf"] >= 1


def test_a_target_below_the_end_needs_the_hook():
    potential, state = _chains(gaussian)
    with pytest.raises(ValueError, match="needs `at_target`"):
        run_doublings(potential, DenseMetric, state, STEP_SIZES,
                      identity_metric(8, 3, dense=True, dtype=F64), 6, 4, dual_averaging(),
                      target=torch.tensor([4, 4, 2, 4, 4, 4, 4, 4]))


def test_an_uncompiled_nuts_transition_is_the_kernels():
    """`NUTS.transition` (ZhuSuan's `.sample()`, uncompiled) makes its transition a doubling
    at a time: the points and statistics of `nuts_kernel`, the leaf step's."""
    import inference
    from inference.mcmc import nuts_kernel
    potential, state = _chains(gaussian, seed=11)
    metric = identity_metric(8, 3, dtype=F64)
    kernel = inference.NUTS(max_tree_depth=6, jit_compile=False)
    by_leaf = by_doubling = state
    for _ in range(4):
        by_leaf, leaf_info = nuts_kernel(by_leaf, potential, STEP_SIZES, metric, 6)
        by_doubling, info = kernel.transition(by_doubling, potential, STEP_SIZES, metric)
        torch.testing.assert_close(by_doubling.position, by_leaf.position, rtol=1e-12,
                                   atol=1e-12)
        assert torch.equal(by_doubling.rng, by_leaf.rng)
        for name in ("n_steps", "tree_depth", "diverging", "is_accepted"):
            assert torch.equal(getattr(info, name), getattr(leaf_info, name)), name
        for name in ("accept_prob", "energy", "orig_energy"):
            torch.testing.assert_close(getattr(info, name), getattr(leaf_info, name),
                                       rtol=1e-12, atol=1e-12)


def test_a_model_whose_doublings_would_not_fit_runs_the_leaf_step(monkeypatch):
    """`sampler.DOUBLING_MEMORY` bounds the leaves a doubling keeps (at the deepest tree);
    beyond it the uncompiled kernel runs the leaf step, with the same draws."""
    import inference
    from inference.mcmc import sampler
    potential, state = _chains(gaussian, seed=13)
    metric = identity_metric(8, 3, dtype=F64)
    kernel = inference.NUTS(max_tree_depth=6, jit_compile=False)
    by_doubling = kernel.iterate(state, potential, STEP_SIZES, metric, 5)
    monkeypatch.setattr(sampler, "DOUBLING_MEMORY", 6 * 2 ** 5 * 8 * 3 * 8 - 1)
    monkeypatch.setattr(sampler, "run_doublings", None)  # (not called)
    by_leaf = kernel.iterate(state, potential, STEP_SIZES, metric, 5)
    torch.testing.assert_close(by_leaf[1], by_doubling[1], rtol=1e-12, atol=1e-12)
    assert torch.equal(by_leaf[2]["n_steps"], by_doubling[2]["n_steps"])


class _RowwiseGradient:
    """`gaussian`'s gradient, row by row (so any rows alone give the whole batch's bits), as
    a compiled gradient that `takes_rows` is called; it records how many rows each call had."""

    takes_rows, row_group = True, 4

    def __init__(self):
        self.rows = []

    def __call__(self, x):
        self.rows.append(x.shape[0])
        return -0.5 * (x ** 2 * SCALES).sum(-1), -x * SCALES


def test_doublings_compute_the_gradient_of_the_chains_still_building_alone():
    """Once half the chains or fewer are still building their trees, a gradient that takes
    rows is computed for their groups of rows alone (`batching.RunningRowsGradient`), the
    others standing still: the same draws as computing every row."""
    potential, state = _chains(gaussian)
    metric = identity_metric(8, 3, dtype=F64)
    whole, rowwise = _RowwiseGradient(), _RowwiseGradient()
    whole.takes_rows = False
    _assert_same(*(run_doublings(gradient, DiagonalMetric, state, STEP_SIZES, metric, 6, 5,
                                 dual_averaging()) for gradient in (whole, rowwise)))
    assert set(whole.rows) == {8}
    gradient = rowwise
    assert min(gradient.rows) == 4 and max(gradient.rows) == 8
