"""MCMC on a CUDA device: the chains, their adaptation and the compiled steps stay on the
device and recover known posteriors (skipped where torch sees no CUDA device)."""
import warnings

import pytest
import torch

import inference
import ppl
from tests.inference._mcmc_targets import assert_moments, correlated_gaussian

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@ppl.meta_bayesian_net()
def normal_normal(obs):
    """mu ~ N(0, 2^2 I), obs[i] ~ N(mu, I): the prior's tensors on the data's device."""
    bn = ppl.BayesianNet()
    mu = bn.normal("mu", torch.zeros(obs.shape[-1], device=obs.device), std=2., group_ndims=1)
    bn.normal("y", mu[..., None, :].expand(mu.shape[:-1] + obs.shape), std=1., group_ndims=2)
    return bn


# Seen on an H200 (torch 2.11): Inductor's C++ wrapper for CUDA embeds each kernel's absolute
# cubin path, and a step built in a folder renamed afterwards failed at its first call; on
# CUDA the cache builds it in its entry's own folder (`cache.compiled_entry`'s `in_place`).
@pytest.mark.parametrize("metric, jit_compile", [("diag", False), ("diag", True),
                                                 ("dense", True)])
def test_nuts_recovers_a_correlated_gaussian_on_cuda(metric, jit_compile):
    log_joint, mean, second = correlated_gaussian(10, device="cuda")
    kernel = inference.NUTS(adapt_mass=metric, jit_compile=jit_compile)
    with warnings.catch_warnings():  # the gradient and the tree step both compiled
        warnings.filterwarnings("error", message="jit_compile: could not compile")
        result = inference.mcmc.run(kernel, log_joint,
                                    init={"z": torch.zeros(64, 10, device="cuda")},
                                    n_warmup=200, n_samples=150, progress=False, seed=2)
    assert result.samples["z"].device.type == "cuda"
    assert_moments(result.samples["z"], mean, second, name=f"gaussian-10d {metric}")
    assert int(result.num_divergences.sum()) == 0
    if jit_compile:
        (shared,) = kernel._shared.values()
        assert shared.is_compiled, shared.reason


@pytest.mark.parametrize("kernel", [inference.NUTS(), inference.HMC(
    trajectory_length=2., adapt_step_size=True, adapt_mass="diag")], ids=["nuts", "hmc"])
def test_a_model_on_cuda_starts_from_its_prior_and_recovers_the_conjugate_posterior(kernel):
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(5, 3, generator=g) + torch.tensor([1., -2., 0.5])
    precision = 1. / 4. + 5.
    mean = (obs.sum(0) / precision).numpy()
    result = inference.mcmc.run(kernel, normal_normal(obs.cuda()), {"y": obs.cuda()},
                                n_chains=32, n_warmup=150, n_samples=150, progress=False,
                                seed=1)
    assert result.samples["mu"].shape == (32, 150, 3)
    assert result.samples["mu"].device.type == "cuda"
    assert_moments(result.samples["mu"], mean, 1. / precision + mean ** 2, name="normal-normal")
