"""ZhuSuan's examples/toy_examples/toy2d_intractable.py: mean-field VI on a 2-D funnel, ported.

p(z2) = N(0, 1.35^2), p(z1 | z2) = N(0, exp(z2)^2); a factorized Gaussian
q(z1) q(z2) is fitted by SGVB with 500 particles (ZhuSuan's 1000 Adam steps,
learning rate 0.1; no plot). The model has no observations, so its evidence
is log Z = 0 (checked by numerical integration). For this family the ELBO has
a closed form, and its maximum, -0.7679 at q = N(0, 0.675^2) N(0, 0.626^2),
is the reference: the trained q's exact ELBO must be below log Z, and within
0.01 nats of that optimum, and the library's Monte Carlo ELBO must match the
closed form within 5 standard errors.
"""
import math

import numpy as np
import scipy.integrate
import scipy.optimize
import scipy.stats
import torch

import inference
import ppl


@ppl.meta_bayesian_net(scope="model")
def build_toy2d_intractable(n_particles):
    bn = ppl.BayesianNet()
    z2 = bn.normal('z2', 0., std=1.35, n_samples=n_particles)
    bn.normal('z1', 0., logstd=z2)
    return bn


@ppl.reuse_variables(scope="variational")
def build_mean_field_variational(n_particles):
    bn = ppl.BayesianNet()
    for name in ["z1", "z2"]:
        z_mean = bn.deterministic(name + "_mean", ppl.param(name + "_mean", torch.tensor(-2.)))
        z_logstd = bn.deterministic(name + "_logstd",
                                    ppl.param(name + "_logstd", torch.tensor(-5.)))
        bn.normal(name, z_mean, logstd=z_logstd, n_samples=n_particles)
    return bn


def run(iters=1000, n_particles=500):
    """The script's main block without the plot: the trained (means, logstds)."""
    torch.manual_seed(1)
    model = build_toy2d_intractable(n_particles)
    variational = build_mean_field_variational(n_particles)
    optimizer = torch.optim.Adam(build_mean_field_variational.parameters(), lr=0.1)
    for t in range(iters):
        variational = build_mean_field_variational(n_particles)
        lower_bound = inference.elbo(model, {}, variational=variational, axis=0)
        cost = lower_bound.sgvb()
        optimizer.zero_grad()
        cost.backward()
        optimizer.step()
    z_mean = torch.stack(variational.outputs(["z1_mean", "z2_mean"])).detach()
    z_logstd = torch.stack(variational.outputs(["z1_logstd", "z2_logstd"])).detach()
    return z_mean, z_logstd


def exact_elbo(m1, logs1, m2, logs2):
    """E_q[log p(z1, z2) - log q(z1) q(z2)] in closed form (E_q[exp(-2 z2)] is lognormal)."""
    s1, s2 = np.exp(logs1), np.exp(logs2)
    log_p_z2 = -0.5 * np.log(2 * np.pi * 1.35 ** 2) - (m2 ** 2 + s2 ** 2) / (2 * 1.35 ** 2)
    log_p_z1 = (-0.5 * np.log(2 * np.pi) - m2
                - 0.5 * (m1 ** 2 + s1 ** 2) * np.exp(-2 * m2 + 2 * s2 ** 2))
    entropy = np.log(2 * np.pi * np.e) + logs1 + logs2
    return log_p_z2 + log_p_z1 + entropy


def log_evidence():
    """log of the integral of p(z1, z2) (z1 over +-12 of its scale exp(z2))."""
    def density(z1, z2):
        return math.exp(scipy.stats.norm.logpdf(z2, 0, 1.35)
                        + scipy.stats.norm.logpdf(z1, 0, math.exp(z2)))
    z, _ = scipy.integrate.dblquad(density, -10, 10, lambda z2: -12 * math.exp(z2),
                                   lambda z2: 12 * math.exp(z2))
    return math.log(z)


def test_mean_field_bound_reaches_the_best_mean_field_elbo():
    log_z = log_evidence()
    assert abs(log_z) < 1e-6
    best = scipy.optimize.minimize(lambda p: -exact_elbo(*p), [-2., -5., -2., -5.],
                                   method="BFGS")
    best_elbo = -best.fun
    assert abs(best_elbo - -0.7679) < 1e-3

    z_mean, z_logstd = run()
    trained = exact_elbo(z_mean[0].item(), z_logstd[0].item(), z_mean[1].item(),
                         z_logstd[1].item())
    assert trained < log_z
    assert best_elbo - 0.01 < trained <= best_elbo + 1e-9

    # The library's estimate of the same bound: 10^5 particles, closed form within 5 SE.
    n = 100_000
    variational = build_mean_field_variational(n)
    lower_bound = inference.elbo(build_toy2d_intractable(n), {}, variational=variational)
    per_particle = lower_bound.tensor.detach().double()
    se = per_particle.std() / math.sqrt(n)
    assert abs(per_particle.mean().item() - trained) < 5 * se
