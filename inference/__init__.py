"""Inference for `ppl` models: variational objectives, importance sampling, MCMC."""
from inference.model import LogJoint

__all__ = ["LogJoint"]

from inference.sgmcmc import PSGLD, SGHMC, SGLD, SGMCMC, SGNHT  # noqa: E402
__all__ += ["SGMCMC", "SGLD", "PSGLD", "SGHMC", "SGNHT"]

from inference.variational import (EvidenceLowerBoundObjective,  # noqa: E402
                                   ImportanceWeightedObjective, InclusiveKLObjective,
                                   MovingAverage, VariationalObjective, elbo,
                                   importance_weighted_objective, iw_objective, klpq)
from inference.utils import log_mean_exp, log_sum_exp  # noqa: E402
from inference.importance import is_loglikelihood  # noqa: E402
from inference.ais import AIS  # noqa: E402
from inference.trainer import Trainer  # noqa: E402
from inference.traced import TracedObjective, TracedStep  # noqa: E402
__all__ += ["TracedStep", "TracedObjective", "elbo", "importance_weighted_objective", "iw_objective", "klpq",
            "VariationalObjective", "EvidenceLowerBoundObjective", "ImportanceWeightedObjective",
            "InclusiveKLObjective", "MovingAverage", "is_loglikelihood", "AIS", "Trainer",
            "log_mean_exp", "log_sum_exp"]

from inference import diagnostics, mcmc  # noqa: E402
from inference.mcmc import HMC, NUTS  # noqa: E402
__all__ += ["mcmc", "diagnostics", "HMC", "NUTS"]

from inference.gibbs import Gibbs  # noqa: E402
__all__ += ["Gibbs"]

from inference import energy  # noqa: E402
from inference.energy import ContrastiveDivergence  # noqa: E402
__all__ += ["energy", "ContrastiveDivergence"]

from inference.adversarial import AdversarialTrainer  # noqa: E402
__all__ += ["AdversarialTrainer"]
