"""Variational objectives with ZhuSuan's names: `elbo`, `importance_weighted_objective`, `klpq`.

Each takes the model (`meta_bn`), its observations, and a guide matched by
node name (`variational=`), and returns a tensor-like objective with
gradient estimators:

- `elbo(...)`: `.sgvb()`, `.reinforce()` (KL(q || p), the ELBO);
- `importance_weighted_objective(...)` / `iw_objective`: `.sgvb()` (IWAE), `.vimco()`;
- `klpq(...)`: `.importance()` / `.rws()` (KL(p || q), reweighted wake-sleep).

All take ZhuSuan's arguments, `(meta_bn, observed, latent=None, axis=None,
variational=None)`.
"""
from inference.variational.base import VariationalObjective
from inference.variational.baseline import MovingAverage
from inference.variational.exclusive_kl import EvidenceLowerBoundObjective, elbo
from inference.variational.inclusive_kl import InclusiveKLObjective, klpq
from inference.variational.monte_carlo import (ImportanceWeightedObjective,
                                               importance_weighted_objective, iw_objective)

__all__ = ["VariationalObjective", "MovingAverage", "elbo", "EvidenceLowerBoundObjective",
           "importance_weighted_objective", "iw_objective", "ImportanceWeightedObjective",
           "klpq", "InclusiveKLObjective"]
