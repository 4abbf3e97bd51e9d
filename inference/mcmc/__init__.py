"""Hamiltonian Monte Carlo for `ppl` models: batched chains, NUTS, Stan-style warm-up.

- `HMC`, `NUTS`: samplers with ZhuSuan's names (`.sample(meta_bn, observed, latent)`).
- `run`: warm-up and draws with progress bar, storage, `summary()` and `to_arviz()`;
  `SamplingWarning`: what `run` found wrong with the draws (divergences, R-hat, ESS, ...).
- `FirstCompileWarning`: a compiled run is building NUTS's tree step (once per machine;
  `python -m inference.mcmc.precompile` builds it at install).
- Building blocks (BlackJAX style: kernel = state in, state out):
  `hmc_kernel`, `nuts_kernel` (kernels), `Potential` (log density + gradient
  over flat unconstrained positions), `LatentSpace` / `transform_to`
  (constrained <-> unconstrained), `leapfrog`, metrics, and adaptation
  (`DualAveraging`, `WindowedAdaptation`, `find_initial_step_size`).
"""
from inference.mcmc.adaptation import (DualAveraging, ExponentialMovingVariance,
                                       WelfordCovariance, WindowedAdaptation,
                                       find_initial_step_size, window_schedule)
from inference.mcmc.hmc import HMC, hmc_kernel
from inference.mcmc.integrators import leapfrog
from inference.mcmc.metric import DenseMetric, DiagonalMetric, identity_metric
from inference.mcmc.nuts import NUTS, nuts_kernel
from inference.mcmc.potential import Potential, latent_nodes
from inference.mcmc.runner import MCMCResult, SamplingWarning, Summary, run
from inference.mcmc.sampler import HamiltonianSampler, HMCInfo
from inference.mcmc.shared_compile import FirstCompileWarning
from inference.mcmc.state import HMCState, TransitionInfo, init_state
from inference.mcmc.transforms import LatentSpace, LowerCholeskyTransform, transform_to

__all__ = ["HMC", "NUTS", "run", "MCMCResult", "Summary", "HMCInfo", "HamiltonianSampler",
           "hmc_kernel", "nuts_kernel", "leapfrog", "Potential", "latent_nodes", "LatentSpace",
           "transform_to", "LowerCholeskyTransform", "HMCState", "TransitionInfo", "init_state",
           "DiagonalMetric", "DenseMetric", "identity_metric", "DualAveraging",
           "WelfordCovariance", "ExponentialMovingVariance", "WindowedAdaptation",
           "find_initial_step_size", "window_schedule", "FirstCompileWarning",
           "SamplingWarning"]
