"""ZhuSuan's examples/toy_examples/gaussian.py: HMC on a Gaussian, ported line by line.

1000 chains, 200 iterations of 5 leapfrog steps, step size and mass adapted in
the first 50, the last 100 kept (as ZhuSuan's script). The sample mean and
standard deviation must match the exact ones within 5 Monte Carlo standard
errors (from the effective sample size, `inference.diagnostics`).
"""
import numpy as np
import torch

import inference
import ppl
from inference import diagnostics


@ppl.meta_bayesian_net()
def gaussian(n_x, stdev, n_particles):
    bn = ppl.BayesianNet()
    bn.normal('x', torch.zeros([n_x]), std=stdev, n_samples=n_particles,
              group_ndims=1)
    return bn


def run(n_x=1):
    """The script's main block without the plot: samples [n_iters - burnin, n_chains, n_x]."""
    torch.manual_seed(1)

    # Define model parameters
    stdev = 1 / (torch.arange(n_x, dtype=torch.float32) + 1)

    # Define HMC parameters
    n_chains = 1000
    n_iters = 200
    burnin = n_iters // 2
    n_leapfrogs = 5

    # Build the computation graph
    model = gaussian(n_x, stdev, n_chains)
    hmc = inference.HMC(step_size=1e-3, n_leapfrogs=n_leapfrogs,
                        adapt_step_size=True, adapt_mass=True,
                        target_acceptance_rate=0.9)
    x = torch.zeros([n_chains, n_x])

    # Run the inference
    samples = []
    for i in range(n_iters):
        # ZhuSuan feeds these two placeholders
        hmc.adapt_step_size = i < burnin // 2
        hmc.adapt_mass = i < burnin // 2
        _, hmc_info = hmc.sample(model, {}, {'x': x})   # moves x, as ZhuSuan's sample_op
        if i >= burnin:
            samples.append(hmc_info.samples['x'].clone())
    return torch.stack(samples), stdev, hmc_info


def test_hmc_recovers_the_gaussian_moments():
    samples, stdev, info = run(n_x=1)
    draws = samples.permute(1, 0, 2).numpy().astype(np.float64)    # (chain, draw, n_x)
    mean = draws.mean(axis=(0, 1))
    std = draws.reshape(-1, draws.shape[-1]).std(axis=0)
    mean_se = diagnostics.mcse_mean(draws)
    std_se = diagnostics.mcse_sd(draws)
    assert float(info.acceptance_rate.mean()) > 0.7
    np.testing.assert_array_less(np.abs(mean - 0.), 5 * mean_se)
    np.testing.assert_array_less(np.abs(std - stdev.numpy()), 5 * std_se)
