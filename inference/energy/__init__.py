"""Energy-based models (`ppl.EnergyModel`): learning by contrastive divergence, the partition
function by enumeration or AIS, and test log-likelihoods (RBM, DBN, DBM)."""
from inference.energy.contrastive_divergence import ContrastiveDivergence
from inference.energy.likelihood import (importance_log_likelihood, log_likelihood,
                                         mean_field_bound)
from inference.energy.partition import (PartitionEstimate, ais_log_partition, base_rate_logits,
                                        exact_log_partition, sm_schedule)

__all__ = ["ContrastiveDivergence", "PartitionEstimate", "ais_log_partition",
           "base_rate_logits", "exact_log_partition", "sm_schedule", "log_likelihood",
           "mean_field_bound", "importance_log_likelihood"]
