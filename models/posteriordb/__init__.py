"""posteriordb posteriors written as ppl models, with their data and Stan reference draws.

    post = models.posteriordb.load("eight_schools-eight_schools_noncentered")
    post.model, post.observed           # MetaBayesianNet and its observations
    post.reference["theta"]             # Stan's draws: (10 chains, 1000 draws, 8)
    result = inference.mcmc.run(inference.NUTS(), post.model, post.observed, n_chains=4)
    compare_to_reference(post, result.samples).max_abs_z_mean

Files come from `$PPL_DATA/posteriordb` (posteriordb's own layout); one module
per model holds the ppl translation of its Stan program.
"""
from models.posteriordb.conformance import Comparison, compare_to_reference
from models.posteriordb.loader import (read_data, read_posterior_info, read_reference_draws,
                                       read_reference_info, read_reference_means,
                                       read_stan_code)
from models.posteriordb.posterior import POSTERIOR_NAMES, Posterior, load

__all__ = ["POSTERIOR_NAMES", "Posterior", "load", "Comparison", "compare_to_reference",
           "read_data", "read_posterior_info", "read_reference_draws", "read_reference_info",
           "read_reference_means", "read_stan_code"]
