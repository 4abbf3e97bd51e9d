"""Hamiltonian Monte Carlo for `ppl` models: batched chains, NUTS, Stan-style warm-up.

- `HMC`, `NUTS`: samplers with ZhuSuan's names (`.sample(meta_bn, observed, latent)`).
- `run`: warm-up and draws with progress bar, storage, `summary()` and `to_arviz()`;
  `SamplingWarning`: what `run` found wrong with the draws (divergences, R-hat, ESS, ...).
- `FirstCompileWarning`: a compiled run (`jit_compile=True`) is building NUTS's tree step
  (once per machine; `python -m inference.mcmc.precompile` builds it at install);
  `NotPrecompiledWarning`: a default run goes without it, as it is not built.
- Building blocks (BlackJAX style: kernel = state in, state out; states and infos
  are named tuples): `hmc_kernel`, `nuts_kernel` (kernels: `hmc`, `nuts`, built
  from `integrators`, `metric`, `termination`, `proposals` and `trajectory`),
  `run_transitions` (`batching`: many NUTS transitions, each chain at its own
  pace, randomness from per-chain `streams`), `run_doublings` (`doubling`: the
  same transitions uncompiled, all chains a doubling at a time), `Potential` (log
  density + gradient over flat unconstrained positions), `LatentSpace` / `transform_to`
  (constrained <-> unconstrained), and adaptation outside the kernels (pure
  dual averaging `dual_averaging_init` / `dual_averaging_update`,
  `WindowedAdaptation`, `find_initial_step_size`). Compilation is an adapter
  around the kernels' pure steps (`jit`).
"""
from inference.mcmc.adaptation import (DualAveraging, DualAveragingState,
                                       ExponentialMovingVariance, WelfordCovariance,
                                       WindowedAdaptation, dual_averaging_init,
                                       dual_averaging_update, find_initial_step_size,
                                       window_schedule)
from inference.mcmc.batching import run_transitions
from inference.mcmc.doubling import run_doublings
from inference.mcmc.hmc import hmc_kernel
from inference.mcmc.integrators import IntegratorState, leapfrog
from inference.mcmc.metric import DenseMetric, DiagonalMetric, identity_metric
from inference.mcmc.nuts import TreeState, nuts_kernel
from inference.mcmc.potential import Potential, latent_nodes
from inference.mcmc.proposals import Proposal
from inference.mcmc.runner import MCMCResult, SamplingWarning, Summary, run
from inference.mcmc.sampler import HMC, NUTS, HamiltonianSampler, HMCInfo
from inference.mcmc.shared_compile import FirstCompileWarning, NotPrecompiledWarning
from inference.mcmc.state import HMCState, TransitionInfo, init_state
from inference.mcmc.trajectory import Trajectory
from inference.mcmc.transforms import LatentSpace, LowerCholeskyTransform, transform_to

__all__ = ["HMC", "NUTS", "run", "MCMCResult", "Summary", "HMCInfo", "HamiltonianSampler",
           "hmc_kernel", "nuts_kernel", "run_transitions", "run_doublings", "leapfrog",
           "IntegratorState",
           "Trajectory", "Proposal", "TreeState", "DualAveragingState", "dual_averaging_init",
           "dual_averaging_update", "Potential", "latent_nodes", "LatentSpace",
           "transform_to", "LowerCholeskyTransform", "HMCState", "TransitionInfo", "init_state",
           "DiagonalMetric", "DenseMetric", "identity_metric", "DualAveraging",
           "WelfordCovariance", "ExponentialMovingVariance", "WindowedAdaptation",
           "find_initial_step_size", "window_schedule", "FirstCompileWarning",
           "NotPrecompiledWarning", "SamplingWarning"]
