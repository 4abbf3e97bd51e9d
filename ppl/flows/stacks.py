"""MAF and IAF stacks: masked autoregressive layers with permutations between them."""
from torch import nn

from ppl.flows.autoregressive import MaskedAutoregressive
from ppl.flows.batchnorm import BatchNorm
from ppl.flows.permutation import Permutation

__all__ = ["maf", "iaf", "autoregressive_stack"]


def autoregressive_stack(dim, n_layers, hidden, *, sampling, permutation="reverse",
                         batch_norm=False, generator=None, max_log_scale=None):
    """`n_layers` `MaskedAutoregressive` layers (`sampling` sets MAF or IAF), base -> value.

    A `Permutation(dim, permutation)` ("reverse", "random") sits between
    consecutive layers, so each sees the coordinates in another order; with
    `batch_norm`, a `BatchNorm(dim)` follows each layer on the value side
    (Papamakarios et al. 2017); `max_log_scale` is passed to each layer. Returns an
    `nn.ModuleList` for `FlowDistribution`.
    """
    if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers < 1:
        raise ValueError(f"autoregressive_stack: `n_layers` must be a positive int, "
                         f"got {n_layers!r}")
    layers = []
    for i in range(n_layers):
        if i:
            layers.append(Permutation(dim, permutation, generator=generator))
        layers.append(MaskedAutoregressive(dim, hidden, sampling=sampling,
                                           max_log_scale=max_log_scale))
        if batch_norm:
            layers.append(BatchNorm(dim))
    return nn.ModuleList(layers)


def maf(dim, n_layers, hidden, **options):
    """A masked autoregressive flow (Papamakarios et al. 2017): one pass to score data,
    `dim` passes per layer to sample. Options as `autoregressive_stack`."""
    return autoregressive_stack(dim, n_layers, hidden, sampling="sequential", **options)


def iaf(dim, n_layers, hidden, **options):
    """An inverse autoregressive flow (Kingma et al. 2016): one pass to sample and score
    its own samples, `dim` passes per layer to score other values."""
    return autoregressive_stack(dim, n_layers, hidden, sampling="parallel", **options)
