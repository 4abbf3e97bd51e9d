"""ZhuSuan's examples/toy_examples/mixture_sgnht.py: SGNHT on a two-Gaussian mixture, ported.

The target is the equal mixture of N(-1, 0.5^2) and N(3, 0.5^2), written as a
plain `log_joint(observed)` function; 1000 chains start uniform on [-5, 5] and
run SGNHT with ZhuSuan's settings (one scalar thermostat, first-order
integrator). Kept: every 100th iteration of the last third.

The sample mean must match the mixture's exact mean within 5 Monte Carlo
standard errors (from the effective sample size, `inference.diagnostics`).
At ZhuSuan's learning rate SGNHT is not exact: its stationary standard
deviation within a mode is 0.483, not 0.5 (the discrete-time chain's variance,
below), so the sample standard deviation is compared, within 5 standard
errors, with that of the discretized chain (2.0574; the mixture's is 2.0616).
"""
import math

import numpy as np
import scipy.linalg
import scipy.optimize
import torch

import inference
from inference import diagnostics

# Define model parameters
stdev = 0.5
mu1 = -1
mu2 = 3


def log_joint(observed):
    x = observed['x']
    a1 = -0.5 * ((x - mu1) / stdev) ** 2
    a2 = -0.5 * ((x - mu2) / stdev) ** 2
    amax = torch.maximum(a1, a2)
    return amax + torch.log(torch.exp(a1 - amax) + torch.exp(a2 - amax))


def discretized_stationary_stdev(learning_rate=0.2, variance_extra=0.1):
    """Total stdev of SGNHT's stationary law, each mode treated as a Gaussian.

    Per mode (curvature w2 = 1 / stdev^2; the other mode's pull is e^-8 small),
    one first-order step is linear in (x, v):
    v' = (1 - alpha) v - lr w2 x + noise, x' = x + v'. Its stationary
    covariance solves a discrete Lyapunov equation; the scalar thermostat
    settles at the alpha where E[v^2] = lr.
    """
    lr, w2 = learning_rate, 1 / stdev ** 2

    def covariance(alpha):
        step = np.array([[1 - lr * w2, 1 - alpha], [-lr * w2, 1 - alpha]])
        return scipy.linalg.solve_discrete_lyapunov(
            step, 2 * variance_extra * lr * np.ones((2, 2)))

    alpha = scipy.optimize.brentq(lambda a: covariance(a)[1, 1] - lr, 1e-4, 1.9)
    between = 0.5 * (mu1 ** 2 + mu2 ** 2) - (0.5 * (mu1 + mu2)) ** 2
    return math.sqrt(covariance(alpha)[0, 0] + between)


def run(n_iters=15000):
    """The script's main block without the plot: samples [n_kept, n_chains].

    ZhuSuan runs 30000 iterations; half of them give the same checks in 10 s.
    """
    torch.manual_seed(1)

    # Define HMC parameters
    n_chains = 1000
    burnin = n_iters * 2 // 3

    sgmcmc = inference.SGNHT(learning_rate=0.2, variance_extra=0.1, tune_rate=0.01,
                             second_order=False, use_vector_alpha=False)
    x = torch.rand([n_chains]) * 10 - 5

    # Run the inference
    samples = []
    for t in range(n_iters):
        _, info = sgmcmc.sample(log_joint, observed={}, latent={'x': x})   # moves x
        if t >= burnin and t % 100 == 0:
            samples.append(info.q['x'].clone())
    return torch.stack(samples), info


def test_sgnht_recovers_the_mixture_moments():
    samples, info = run()
    draws = samples.T.numpy().astype(np.float64)          # (chain, draw)
    expected_mean = 0.5 * (mu1 + mu2)
    total_stdev = math.sqrt(stdev ** 2 + 0.5 * (mu1 ** 2 + mu2 ** 2) - (0.5 * (mu1 + mu2)) ** 2)
    assert abs(draws.mean() - expected_mean) < 5 * diagnostics.mcse_mean(draws)
    assert abs(discretized_stationary_stdev() - total_stdev) < 0.005 * total_stdev
    assert abs(draws.std() - discretized_stationary_stdev()) < 5 * diagnostics.mcse_sd(draws)
