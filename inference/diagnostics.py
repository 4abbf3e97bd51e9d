"""MCMC convergence diagnostics (Vehtari, Gelman, Simpson, Carpenter & Burkner 2021).

Every function takes draws of shape (chain, draw) or (chain, draw, *shape)
(numpy arrays or tensors) and returns a float, or an array of `shape` with one
value per scalar quantity. They match ArviZ's definitions:

- `autocovariance`, `autocorrelation`: per chain, by FFT.
- `ess_mean`: split-chain ESS with Geyer's initial monotone sequence.
- `ess_bulk`: ESS of the rank-normalized split chains.
- `ess_tail`: min ESS of the indicators x <= q05 and x <= q95.
- `split_rhat`: rank-normalized split R-hat, max of bulk and folded (tail).
- `mcse_mean`, `mcse_sd`: Monte Carlo standard errors of the mean and sd.
"""
import numpy as np
import scipy.fft
import scipy.special

__all__ = ["autocovariance", "autocorrelation", "ess_mean", "ess_bulk", "ess_tail",
           "split_rhat", "mcse_mean", "mcse_sd"]


def _as_draws(x):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[None]
    if x.ndim < 2:
        raise ValueError(f"draws must have shape (chain, draw, ...), got {x.shape}")
    return x


def _per_quantity(fn, x):
    """Apply `fn` (on (chain, draw) arrays) to every scalar quantity of x (chain, draw, *shape)."""
    shape = x.shape[2:]
    flat = x.reshape(x.shape[:2] + (-1,))
    out = np.array([fn(flat[:, :, i]) for i in range(flat.shape[2])])
    return float(out[0]) if not shape else out.reshape(shape)


def autocovariance(x, axis=-1):
    """Autocovariance of `x` along `axis` for every lag (biased, divided by n), by FFT."""
    x = np.asarray(x, dtype=float)
    n = x.shape[axis]
    centered = x - x.mean(axis, keepdims=True)
    size = scipy.fft.next_fast_len(2 * n)
    spectrum = scipy.fft.rfft(centered, n=size, axis=axis)
    acov = scipy.fft.irfft(spectrum * np.conjugate(spectrum), n=size, axis=axis)
    return np.take(acov, np.arange(n), axis=axis) / n


def autocorrelation(x, axis=-1):
    """Autocorrelation of `x` along `axis` for every lag (lag 0 is 1), by FFT."""
    acov = autocovariance(x, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return acov / np.take(acov, [0], axis=axis)


def _split_chains(x):
    """(chain, draw, ...) -> (2 chain, draw // 2, ...): first and last halves."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half:]], axis=0)


def _average_ranks(values):
    """Ranks 1..n of 1-d `values`, ties given their average rank (scipy's rankdata
    'average' in less memory: checking a long run ranks its draws)."""
    order = np.argsort(values)  # in place (a stable sort takes a buffer); ties averaged below
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1., len(values) + 1.)
    ordered = values[order]
    tied = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(tied):  # each run of equal values gets the mean of its ranks
        new = np.ones(len(values), dtype=bool)
        new[tied + 1] = False
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], len(values))
        ranks[order] = ((starts + ends + 1) / 2.)[np.cumsum(new) - 1]
    return ranks


def _z_scale(x):
    """Rank-normalize per quantity: normal quantiles of the fractional ranks (Blom)."""
    flat = x.reshape((x.shape[0] * x.shape[1], -1))
    size = flat.shape[0]
    columns = []
    for j in range(flat.shape[1]):
        ranks = _average_ranks(flat[:, j])
        ranks -= 0.375
        ranks /= size + 0.25
        columns.append(scipy.special.ndtri(ranks, out=ranks))
    out = columns[0] if len(columns) == 1 else np.stack(columns, 1)
    return out.reshape(x.shape)


def _ess_2d(x):
    """ESS of (chain, draw) draws, Geyer's initial monotone sequence estimator."""
    if np.isnan(x).any():
        return np.nan
    n_chain, n_draw = x.shape
    if n_draw < 4:
        return np.nan
    if x.max() - x.min() < np.finfo(float).resolution:
        return float(x.size)
    acov = np.zeros(n_draw)  # the chains' mean autocovariance, one chain's FFT at a time
    for chain in x:
        acov += autocovariance(chain)
    acov /= n_chain
    mean_var = acov[0] * n_draw / (n_draw - 1.)
    var_plus = mean_var * (n_draw - 1.) / n_draw
    if n_chain > 1:
        var_plus += np.var(x.mean(axis=1), ddof=1)
    rho = 1. - (mean_var - acov) / var_plus
    rho[0] = 1.
    # Initial positive sequence: sum pairs (rho[2k], rho[2k+1]) while their sum is positive.
    kept = np.zeros(n_draw)
    kept[:2] = rho[:2]
    even, odd = 1., rho[1]
    t = 1
    while t < n_draw - 3 and even + odd > 0.:
        even, odd = rho[t + 1], rho[t + 2]
        if even + odd >= 0.:
            kept[t + 1], kept[t + 2] = even, odd
        t += 2
    last = t - 2
    if even > 0.:
        kept[last + 1] = even
    # Initial monotone sequence: pair sums may not increase.
    t = 1
    while t <= last - 2:
        if kept[t + 1] + kept[t + 2] > kept[t - 1] + kept[t]:
            kept[t + 1] = kept[t + 2] = (kept[t - 1] + kept[t]) / 2.
        t += 2
    total = n_chain * n_draw
    tau = -1. + 2. * kept[:last + 1].sum() + kept[last + 1:last + 2].sum()
    tau = max(tau, 1. / np.log10(total))
    return total / tau


def _rhat_2d(x):
    """Classic R-hat of (chain, draw) draws (no splitting); NaN for constant draws."""
    n_draw = x.shape[1]
    between = n_draw * np.var(x.mean(axis=1), ddof=1)
    within = np.var(x, axis=1, ddof=1).mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt((between / within + n_draw - 1.) / n_draw)


def ess_mean(x):
    """Split-chain ESS for the mean (no rank normalization)."""
    return _per_quantity(_ess_2d, _split_chains(_as_draws(x)))


def ess_bulk(x):
    """Bulk ESS: ESS of the rank-normalized split chains."""
    x = _as_draws(x)
    if x.shape[1] < 4 or np.isnan(x).any():
        return _per_quantity(lambda _: np.nan, x)
    return _per_quantity(_ess_2d, _z_scale(_split_chains(x)))


def ess_tail(x, prob=(0.05, 0.95)):
    """Tail ESS: the smaller ESS of the indicators x <= q_low and x <= q_high."""
    x = _as_draws(x)

    def tail(draws):
        if draws.shape[1] < 4 or np.isnan(draws).any():
            return np.nan
        return min(_ess_2d(_split_chains((draws <= np.quantile(draws, p)).astype(float)))
                   for p in prob)

    return _per_quantity(tail, x)


def split_rhat(x):
    """Rank-normalized split R-hat: max of the bulk and the folded (tail) R-hat."""
    x = _as_draws(x)

    def rhat(draws):
        if draws.shape[0] < 1 or draws.shape[1] < 4 or np.isnan(draws).any():
            return np.nan
        split = _split_chains(draws)
        bulk = _rhat_2d(_z_scale(split))
        folded = _rhat_2d(_z_scale(np.abs(split - np.median(split))))
        return max(bulk, folded)

    return _per_quantity(rhat, x)


def mcse_mean(x):
    """Monte Carlo standard error of the mean: sd / sqrt(ess_mean)."""
    x = _as_draws(x)
    return _per_quantity(lambda d: np.std(d, ddof=1) / np.sqrt(_ess_2d(_split_chains(d))), x)


def mcse_sd(x):
    """Monte Carlo standard error of the standard deviation (delta method on the variance)."""
    x = _as_draws(x)

    def mcse(draws):
        squares = (draws - draws.mean()) ** 2
        ess = _ess_2d(_split_chains(squares))
        var = squares.mean()
        var_of_var = ((squares ** 2).mean() - var ** 2) / ess
        return np.sqrt(var_of_var / var / 4.)

    return _per_quantity(mcse, x)
