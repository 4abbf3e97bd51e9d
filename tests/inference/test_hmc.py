"""HMC recovers known posteriors, rejects divergent moves, and has ZhuSuan's interface."""
import functools
import math

import pytest
import torch

import inference
from inference.mcmc import HMCState, Potential, hmc_kernel, identity_metric
from inference.mcmc.hmc import LeapfrogState, hmc_step
from inference.mcmc.metric import DiagonalMetric
from tests.inference._mcmc_targets import assert_moments, conjugate_cases, correlated_gaussian

# Compilation is tested in test_compile: the kernels here run eagerly.
NUTS = functools.partial(inference.NUTS, jit_compile=False)
HMC = functools.partial(inference.HMC, jit_compile=False)

CONJUGATE = conjugate_cases()


@pytest.mark.parametrize("case", CONJUGATE, ids=[c[0] for c in CONJUGATE])
def test_conjugate_posteriors(case):
    name, model, observed, latent, mean, second = case
    hmc = HMC(step_size=0.1, trajectory_length=1.5, jitter=0.2, adapt_step_size=True,
                        adapt_mass=True)
    result = inference.mcmc.run(hmc, model, observed, n_chains=8, n_warmup=200, n_samples=300,
                                progress=False, seed=1)
    assert_moments(result.samples[latent], mean, second, name=name)


def test_correlated_gaussian_50d_dense_mass():
    log_joint, mean, second = correlated_gaussian(50)
    hmc = HMC(step_size=0.1, trajectory_length=1.5, jitter=0.2, adapt_step_size=True,
                        adapt_mass="dense")
    result = inference.mcmc.run(hmc, log_joint, init={"z": torch.zeros(16, 50)}, n_warmup=400,
                                n_samples=400, progress=False, seed=2)
    assert_moments(result.samples["z"], mean, second, name="gaussian-50d")


def test_fixed_number_of_leapfrogs_and_per_chain_trajectory_length():
    def log_joint(v):
        return -0.5 * (v["z"] ** 2).sum(-1)

    potential = Potential(log_joint, None, {"z": torch.zeros(3, 2)})
    x = torch.ones(3, 2)
    state = HMCState(x, *potential(x))
    step = torch.tensor([0.1, 0.2, 0.5])
    _, info = hmc_kernel(state, potential, step, identity_metric(3, 2), 7)
    assert (info.n_steps == 7).all()
    hmc = HMC(trajectory_length=1.)
    _, info = hmc.transition(state, potential, step, identity_metric(3, 2))
    assert info.n_steps.tolist() == [10, 5, 2]
    # energy is conserved to O(step^2): tiny steps accept almost surely
    _, info = hmc_kernel(state, potential, torch.full((3,), 1e-3), identity_metric(3, 2), 20)
    assert (info.accept_prob > 0.999).all()


@pytest.mark.parametrize("bad", [-math.inf, math.nan])
def test_divergent_moves_are_rejected_and_counted(bad):
    def log_joint(v):
        z = v["z"][:, 0]
        return torch.where(z > 1., torch.full_like(z, bad), -0.5 * z ** 2)

    potential = Potential(log_joint, None, {"z": torch.zeros(200, 1)})
    x = torch.full((200, 1), 0.9)
    state = HMCState(x, *potential(x))
    torch.manual_seed(0)
    new, info = hmc_kernel(state, potential, torch.full((200,), 0.5), identity_metric(200, 1), 5)
    assert info.diverging.any() and not info.is_accepted[info.diverging].any()
    assert (info.accept_prob[info.diverging] == 0).all()
    assert torch.equal(new.position[info.diverging], x[info.diverging])
    assert torch.isfinite(new.position).all() and (new.position <= 1.).all()


def test_energy_error_above_the_limit_is_a_divergence():
    def log_joint(v):
        return -0.5 * 1e4 * (v["z"] ** 2).sum(-1)

    potential = Potential(log_joint, None, {"z": torch.zeros(4, 3)})
    x = torch.ones(4, 3)
    state = HMCState(x, *potential(x))
    _, info = hmc_kernel(state, potential, torch.full((4,), 0.1), identity_metric(4, 3), 10,
                         max_energy_error=1000.)
    assert info.diverging.all() and not info.is_accepted.any()


def test_zhusuan_sample_interface():
    _, model, observed, latent, mean, second = CONJUGATE[2]
    hmc = HMC(step_size=0.1, n_leapfrogs=3, adapt_step_size=True, adapt_mass=True,
                        mass_collect_iters=20)
    values = {latent: torch.zeros(10, 3)}
    draws, steps = [], []
    for it in range(600):
        hmc.adapt_step_size = it < 200
        hmc.adapt_mass = it < 200
        values, info = hmc.sample(model, observed, values)
        steps.append(info.updated_step_size)
        if it >= 200:
            draws.append(values[latent])
    assert values[latent].shape == (10, 3)
    assert info.acceptance_rate.shape == (10,) and info.hamiltonian.shape == (10,)
    # after burn-in the step size is frozen (the dual averaging average)
    assert torch.equal(steps[300], steps[-1]) and not torch.equal(steps[50], steps[150])
    assert_moments(torch.stack(draws, 1), mean, second, name="online HMC")


def test_zhusuan_interface_validates_arguments():
    with pytest.raises(ValueError, match="n_leapfrogs"):
        HMC(n_leapfrogs=0)
    with pytest.raises(ValueError, match="adapt_step_size"):
        HMC(adapt_mass=True)
    with pytest.raises(ValueError, match="adapt_mass"):
        HMC(adapt_step_size=True, adapt_mass="full")
    with pytest.raises(ValueError, match="target_acceptance_rate"):
        NUTS(target_acceptance_rate=1.5)
    hmc = HMC()
    with pytest.raises(ValueError, match="latent 'q' is not a node"):
        hmc.sample(CONJUGATE[0][1], CONJUGATE[0][2], {"q": torch.ones(2)})


def test_zhusuan_style_loop_updates_the_latent_tensor_in_place():
    """ZhuSuan's toy example: `sample_op, info = hmc.sample(model, {}, {'x': x})` assigns
    the new sample to the Variable x. Here x (a plain tensor) holds info.samples['x']
    after each call; the draws kept from info.samples are distinct tensors."""
    _, model, observed, latent, mean, second = CONJUGATE[2]
    hmc = HMC(1e-1, 3, True, 0.8)  # step_size, n_leapfrogs, adapt, target
    x = torch.zeros(10, 3)
    draws = []
    for it in range(600):
        hmc.adapt_step_size = it < 200
        _, info = hmc.sample(model, observed, {latent: x})
        assert torch.equal(x, info.samples[latent]) and info.samples[latent] is not x
        if it >= 200:
            draws.append(info.samples[latent])
    assert_moments(torch.stack(draws, 1), mean, second, name="in-place HMC")
    for field in ("samples", "acceptance_rate", "updated_step_size", "init_momentum",
                  "orig_hamiltonian", "hamiltonian", "orig_log_prob", "log_prob"):

        assert hasattr(info, field)


def test_init_momentum_is_zhusuans_and_gives_the_original_hamiltonian():
    """info.init_momentum: name -> the momentum each chain started from (ZhuSuan's field);
    with the identity metric, orig_hamiltonian = -log p(x) + |p|^2 / 2 exactly."""
    _, model, observed, latent, _, _ = CONJUGATE[2]
    hmc = HMC(step_size=0.1, n_leapfrogs=3)
    x = torch.randn(5, 3)
    _, info = hmc.sample(model, observed, {latent: x.clone()})
    (name, momentum), = info.init_momentum.items()
    assert name == latent and momentum.shape == (5, 3)
    kinetic = 0.5 * momentum.pow(2).sum(-1)
    torch.testing.assert_close(info.orig_hamiltonian, -info.orig_log_prob + kinetic)
    _, nuts_info = NUTS().sample(model, observed, {latent: x.clone()})
    assert nuts_info.init_momentum is None


def test_returned_samples_and_non_leaf_latents_are_not_overwritten():
    _, model, observed, latent, _, _ = CONJUGATE[2]
    hmc = HMC(step_size=0.1, n_leapfrogs=3)
    first, _ = hmc.sample(model, observed, {latent: torch.zeros(4, 3)})
    kept = first[latent].clone()
    second, _ = hmc.sample(model, observed, first)
    assert torch.equal(first[latent], kept) and not torch.equal(second[latent], kept)
    base = torch.zeros(4, 3, requires_grad=True)
    computed = base * 1.
    hmc.sample(model, observed, {latent: computed})
    assert torch.equal(computed.detach(), torch.zeros(4, 3))


def test_library_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        HMC(0.1, 10, None, 0.8, 0.05, 100, 0.75, None, 10, 0.99, 1.5)
    with pytest.raises(TypeError):
        HMC().sample(CONJUGATE[2][1], CONJUGATE[2][2], {"x": torch.zeros(2)}, None)


def test_the_leapfrog_step_moves_a_named_state_and_keeps_failed_chains_in_place():
    """`hmc_step` moves the fields of a `LeapfrogState` (no packed [n, 3, D] tensor): a chain
    reaching a non-finite density is marked diverging and keeps its point, a chain that is
    not moving keeps its point, the others move."""
    def value_and_grad(x):
        log_prob = -0.5 * x.square().sum(-1)
        return torch.where(x[:, 0] > 1., -torch.inf, log_prob), -x
    position = torch.tensor([[0., 0.], [0.9, 0.], [0., 0.]], dtype=torch.float64)
    momentum = torch.ones(3, 2, dtype=torch.float64)
    point = LeapfrogState(position, momentum, -position, torch.zeros(3, dtype=torch.float64),
                          torch.zeros(3, dtype=torch.bool))
    moving = torch.tensor([True, True, False])
    new = LeapfrogState(*hmc_step(value_and_grad, DiagonalMetric.velocity_from, *point,
                                  torch.full((3, 1), 0.5, dtype=torch.float64), torch.ones(3, 2),
                                  moving))
    assert new.diverging.dtype == torch.bool
    assert new.diverging.tolist() == [False, True, False]
    assert torch.equal(new.position[1:], position[1:])
    torch.testing.assert_close(new.position[0], torch.tensor([0.5, 0.5], dtype=torch.float64))
