"""Variational objectives with ZhuSuan's names: `elbo`, `importance_weighted_objective`, `klpq`.

Each takes the model (`meta_bn`), its observations, and a guide matched by
node name, and returns a tensor-like objective with gradient estimators:

- `elbo(...)`: `.sgvb()`, `.reinforce()` (KL(q || p), the ELBO);
- `importance_weighted_objective(...)` / `iw_objective`: `.sgvb()` (IWAE), `.vimco()`;
- `klpq(...)`: `.importance()` / `.rws()` (KL(p || q), reweighted wake-sleep).
"""
from inference.variational.base import VariationalObjective
from inference.variational.baseline import MovingAverage
from inference.variational.exclusive_kl import EvidenceLowerBoundObjective, elbo
from inference.variational.inclusive_kl import InclusiveKLObjective, klpq
from inference.variational.monte_carlo import (ImportanceWeightedObjective,
                                               importance_weighted_objective, iw_objective,
                                               log_mean_exp)

__all__ = ["VariationalObjective", "MovingAverage", "elbo", "EvidenceLowerBoundObjective",
           "importance_weighted_objective", "iw_objective", "ImportanceWeightedObjective",
           "klpq", "InclusiveKLObjective", "log_mean_exp"]
