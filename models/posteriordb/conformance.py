"""How far MCMC draws are from a posteriordb reference, in Monte Carlo standard errors.

For every scalar parameter, the difference of posterior means (and sds) divided
by the combined MCSE sqrt(mcse_ours^2 + mcse_reference^2): each MCSE comes from
its own draws' effective sample size, so a correct sampler gives z-scores that
are roughly standard normal.
"""
from dataclasses import dataclass

import numpy as np

from inference import diagnostics

__all__ = ["Comparison", "compare_to_reference"]


@dataclass
class Comparison:
    """Per parameter (name -> array of the parameter's shape): z-scores and ESS."""

    z_mean: dict
    z_sd: dict
    ess_bulk: dict

    @property
    def max_abs_z_mean(self):
        return max(float(np.max(np.abs(z))) for z in self.z_mean.values())

    @property
    def max_abs_z_sd(self):
        return max(float(np.max(np.abs(z))) for z in self.z_sd.values())

    @property
    def min_ess_bulk(self):
        return min(float(np.min(e)) for e in self.ess_bulk.values())

    def worst(self):
        """`(param[index], statistic, z)` of the largest |z|."""
        rows = [(_label(name, z, i), stat, float(np.ravel(z)[i]))
                for stat, table in (("mean", self.z_mean), ("sd", self.z_sd))
                for name, z in table.items() for i in range(np.size(z))]
        return max(rows, key=lambda row: abs(row[2]))


def _label(name, values, flat_index):
    """`beta[2]`: the scalar at `flat_index` of `values`, 0-based like the samples."""
    if np.ndim(values) == 0:
        return name
    index = np.unravel_index(flat_index, np.shape(values))
    return f"{name}[{','.join(str(int(i)) for i in index)}]"


def compare_to_reference(posterior, samples):
    """Compare MCMC `samples` of `posterior`'s latents (dict name -> (chain, draw, ...)
    tensors) with its reference draws; returns a `Comparison`."""
    n_chains, n_draws = next(iter(samples.values())).shape[:2]
    flat = {k: v.reshape((n_chains * n_draws,) + v.shape[2:]) for k, v in samples.items()}
    params = posterior.params_from_latent(flat)
    z_mean, z_sd, ess = {}, {}, {}
    for name in posterior.param_names:
        ours = params[name].reshape((n_chains, n_draws) + params[name].shape[1:]).numpy()
        reference = posterior.reference[name]
        z_mean[name] = ((ours.mean((0, 1)) - reference.mean((0, 1)))
                        / np.hypot(diagnostics.mcse_mean(ours), diagnostics.mcse_mean(reference)))
        z_sd[name] = ((ours.std((0, 1), ddof=1) - reference.std((0, 1), ddof=1))
                      / np.hypot(diagnostics.mcse_sd(ours), diagnostics.mcse_sd(reference)))
        ess[name] = diagnostics.ess_bulk(ours)
    return Comparison(z_mean, z_sd, ess)
