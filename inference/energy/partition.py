"""The partition function Z = sum_x p*(x) of a `ppl.EnergyModel`: by enumeration, or by AIS.

    exact = inference.energy.exact_log_partition(model)                 # small models
    base = {"v": inference.energy.base_rate_logits(train)}             # a data-fitted start
    est = inference.energy.ais_log_partition(model, base, n_temperatures=14500, n_runs=100)
    est.log_z, est.log_z_se                                              # log Z and its SE

AIS (Neal 2001) as Salakhutdinov & Murray (2008) run it for RBMs and
Salakhutdinov & Hinton (2009) for DBMs: the runs start from a base model of
independent units, p_A(x) ∝ exp(sum_l b_l . x_l) (the base-rate model: visible
biases fitted to the data's pixel means, hidden units uniform), whose
normalizer is known, and move through p_beta(x) ∝ p_A*(x)^(1 - beta) p*(x)^beta
for beta = beta_0 = 0 < beta_1 < ... < beta_T = 1. The layers split in two
groups that do not interact within themselves (an RBM's v and h; a DBM's h1,
and v with h2): the `summed` group is summed out analytically in each p_beta,
so the importance weights are computed on the kept layers' marginal, and the
transitions are the two-block Gibbs updates at beta (summed given kept, then
kept given summed), which leave that marginal invariant.

The importance weight of a run is prod_t p_t*(x_t) / p_{t-1}*(x_t); its mean
over runs is an unbiased estimate of Z / Z_A. `log_z` is the log of that mean
(a stochastic lower bound of log Z, by Jensen's inequality); `log_z_se` its
standard error over runs by the delta method, sd(w) / (sqrt(n_runs) mean(w)).
Z is that of the net's `log_joint` as written (an RBM's Bernoulli nodes
bring their normalizers, -sum softplus(bias)), so log Z values of two nets
differ by such constants; the log-likelihoods they give are comparable.
"""
import dataclasses
import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ppl.energy import check_binary

__all__ = ["PartitionEstimate", "exact_log_partition", "ais_log_partition",
           "base_rate_logits", "sm_schedule"]


@dataclasses.dataclass
class PartitionEstimate:
    """An AIS estimate of log Z with its standard error over `n_runs` runs."""
    log_z: float
    log_z_se: float
    log_weights: torch.Tensor  # [n_runs]: log (w_run), so that Z ≈ Z_A mean(w)
    log_z_base: float          # log Z_A of the base model

    @property
    def n_runs(self):
        return len(self.log_weights)

    def interval(self, width=3.):
        """(lower, upper) = log(Z_hat -+ width * se(Z_hat)) (Salakhutdinov & Murray's
        +-3 sd bars); the lower end is -inf when the band reaches 0."""
        spread = width * self.log_z_se
        lower = self.log_z + math.log1p(-spread) if spread < 1 else -math.inf
        return lower, self.log_z + math.log1p(spread)


def base_rate_logits(data, smoothing=1.):
    """Log-odds of each unit's mean over `data` [n, units] (0/1), with `smoothing`
    pseudo-counts each way: the biases of Salakhutdinov & Murray's base-rate model."""
    data = check_binary("data", torch.as_tensor(data)).double()
    p = (data.sum(0) + smoothing) / (len(data) + 2 * smoothing)
    return torch.logit(p).to(torch.get_default_dtype())


def sm_schedule(n_temperatures, dtype=torch.float64):
    """Inverse temperatures from 0 to 1 (n_temperatures of them, both ends included),
    spaced as Salakhutdinov & Murray's 14,500: 500 up to 0.5, 4,000 up to 0.9, 10,000
    up to 1 (in those proportions)."""
    n = n_temperatures - 1
    first, second = max(1, round(n * 500 / 14500)), max(1, round(n * 4000 / 14500))
    third = max(1, n - first - second)
    return torch.cat([torch.linspace(0, 0.5, first + 1, dtype=dtype)[:-1],
                      torch.linspace(0.5, 0.9, second + 1, dtype=dtype)[:-1],
                      torch.linspace(0.9, 1., third + 1, dtype=dtype)])


def exact_log_partition(model, summed=None, max_states=2 ** 22, chunk_size=2 ** 14):
    """log Z by enumerating every joint state of the layers not in `summed`.

    summed: layers summed out analytically (see `EnergyModel.sum_out`; default
    none). Refuses more than `max_states` states. Returns a 0-d float64 tensor,
    differentiable in the model's parameters under grad mode (exact maximum
    likelihood for small models).
    """
    summed = tuple(summed or ())
    kept = [name for name in model.layers if name not in summed]
    if not kept:
        raise ValueError("exact_log_partition: keep at least one layer to enumerate")
    n_bits = sum(model.layers[name] for name in kept)
    if 2 ** n_bits > max_states:
        raise ValueError(f"exact_log_partition: layers {kept} have 2^{n_bits} joint states, "
                         f"more than max_states={max_states}; sum some out (`summed`) or use "
                         f"ais_log_partition")
    dtype = torch.float64
    powers = 2 ** torch.arange(n_bits - 1, -1, -1)
    totals = []
    for start in range(0, 2 ** n_bits, chunk_size):
        index = torch.arange(start, min(start + chunk_size, 2 ** n_bits))
        bits = ((index[:, None] // powers) % 2).to(dtype)
        values = dict(zip(kept, torch.split(bits, [model.layers[n] for n in kept], dim=-1)))
        log_p = model.sum_out(summed, values) if summed else model.log_joint(values)
        totals.append(torch.logsumexp(log_p.double(), 0))
    return torch.logsumexp(torch.stack(totals), 0)


def ais_log_partition(model, base_logits=None, *, summed=None, n_temperatures=1000,
                      n_runs=100, betas=None, dtype=None, progress=True):
    """AIS estimate of log Z of `model` (a `ppl.EnergyModel`): a `PartitionEstimate`.

    base_logits: name -> [units] biases of the base model per layer (default
        0: uniform units); e.g. {"v": base_rate_logits(train)}.
    summed: the layers summed out analytically (default: the layers in odd
        positions, an RBM's h); they must not interact with each other, nor
        the kept layers among themselves.
    n_temperatures: how many inverse temperatures, both ends included
        (at least 2: beta = 0 and 1 is plain importance sampling from the
        base), spaced by `sm_schedule`; or `betas`, an increasing sequence
        from 0 to 1. n_runs: independent runs (at least 2, for the SE).
    dtype: of the runs' states (default: the model's parameters', else torch's).
    """
    layers = list(model.layers)
    summed = tuple(layers[1::2] if summed is None else summed)
    unknown = [name for name in summed if name not in model.layers]
    if unknown:
        raise ValueError(f"ais_log_partition: `summed` names {unknown}, not layers of the model "
                         f"(layers: {', '.join(layers)})")
    kept = [name for name in layers if name not in summed]
    if not kept or not summed:
        raise ValueError("ais_log_partition: `summed` must name some layers, not all")
    betas = _betas(n_temperatures, betas)
    if not isinstance(n_runs, int) or n_runs < 2:
        raise ValueError(f"ais_log_partition: `n_runs` must be an int >= 2 (the standard error "
                         f"is taken over runs), got {n_runs!r}")
    template = _first_tensor(model)
    dtype = dtype or (template.dtype if template is not None else torch.get_default_dtype())
    device = template.device if template is not None else None
    base = {name: torch.zeros(size, dtype=dtype, device=device)
            for name, size in model.layers.items()}
    for name, logits in (base_logits or {}).items():
        if name not in base:
            raise ValueError(f"ais_log_partition: `base_logits` names '{name}', not a layer")
        logits = torch.as_tensor(logits, dtype=dtype, device=device)
        if logits.shape != base[name].shape:
            raise ValueError(f"ais_log_partition: base_logits['{name}'] has shape "
                             f"{tuple(logits.shape)}, expected ({model.layers[name]},)")
        base[name] = logits
    log_z_base = sum(F.softplus(b).sum() for b in base.values()).item()

    state = {name: torch.bernoulli(torch.sigmoid(base[name]).expand(n_runs, -1).contiguous())
             for name in kept}
    model.check({**state, **{name: torch.bernoulli(torch.full((n_runs, model.layers[name]), 0.5,
                                                              dtype=dtype, device=device))
                             for name in summed}})  # the conditionals the runs move by
    log_w = torch.zeros(n_runs, dtype=torch.float64, device=device)
    with torch.no_grad():
        for t in tqdm(range(1, len(betas)), desc="AIS", disable=not progress, leave=False):
            beta_prev, beta = betas[t - 1], betas[t]
            f0, logits = model.linear_terms(summed, state)
            log_w += (_marginal(beta, f0, logits, state, base)
                      - _marginal(beta_prev, f0, logits, state, base)).double()
            if t == len(betas) - 1:
                break
            for name in summed:
                state[name] = torch.bernoulli(torch.sigmoid(
                    (1 - beta) * base[name] + beta * logits[name]))
            for name in kept:
                state[name] = torch.bernoulli(torch.sigmoid(
                    (1 - beta) * base[name] + beta * model.logits(name, state)))
            for name in summed:
                del state[name]
    if not bool(torch.isfinite(log_w).all()):
        raise FloatingPointError("ais_log_partition: non-finite importance weights (the "
                                 "model's log p* overflowed)")
    return _estimate(log_w, log_z_base)


def _marginal(beta, f0, logits, kept_values, base):
    """log sum over the summed layers of p_beta*(x), at the kept layers' values."""
    total = beta * f0
    for name, value in kept_values.items():
        total = total + (1 - beta) * (value * base[name]).sum(-1)
    for name, logit in logits.items():
        total = total + F.softplus((1 - beta) * base[name] + beta * logit).sum(-1)
    return total


def _estimate(log_w, log_z_base):
    n = len(log_w)
    log_mean = torch.logsumexp(log_w, 0) - math.log(n)
    w = torch.exp(log_w - log_w.max())
    se = (w.std() / (math.sqrt(n) * w.mean())).item()
    return PartitionEstimate(log_z=log_z_base + log_mean.item(), log_z_se=se,
                             log_weights=log_w, log_z_base=log_z_base)


def _betas(n_temperatures, betas):
    if betas is None:
        if not isinstance(n_temperatures, int) or isinstance(n_temperatures, bool) \
                or n_temperatures < 2:
            raise ValueError(f"ais_log_partition: `n_temperatures` must be an int >= 2 (the "
                             f"base at beta = 0 and the model at beta = 1), got "
                             f"{n_temperatures!r}")
        return sm_schedule(n_temperatures).tolist()
    betas = [float(b) for b in betas]
    if len(betas) < 2 or betas[0] != 0. or betas[-1] != 1. or \
            any(b >= a for b, a in zip(betas, betas[1:])):
        raise ValueError(f"ais_log_partition: `betas` must increase from 0 to 1 with at least "
                         f"2 temperatures, got {len(betas)} values from "
                         f"{betas[0] if betas else None} to {betas[-1] if betas else None}")
    return betas


def _first_tensor(model):
    template = getattr(model.meta_bn, "template", None)
    if template is not None:
        for tensor in template.parameters():
            return tensor
    return None
