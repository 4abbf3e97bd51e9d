"""MCMC convergence diagnostics (Vehtari, Gelman, Simpson, Carpenter & Burkner 2021).

Every function takes draws of shape (chain, draw) or (chain, draw, *shape)
(numpy arrays or tensors, any float dtype) and returns a float, or an array of
`shape` with one value per scalar quantity, computed in float64. They match
ArviZ's definitions:

- `autocovariance`, `autocorrelation`: per chain, by FFT.
- `ess_mean`: split-chain ESS with Geyer's initial monotone sequence.
- `ess_bulk`: ESS of the rank-normalized split chains.
- `ess_tail`: min ESS of the indicators x <= q05 and x <= q95.
- `split_rhat`: rank-normalized split R-hat, max of bulk and folded (tail).
- `mcse_mean`, `mcse_sd`: Monte Carlo standard errors of the mean and sd.

Memory: checking a long run must not cost much beside its draws, so each
quantity is handled on its own (a float64 copy of its split chains, ranked
against one sorted copy, chunk by chunk): the extra memory is a few copies of
one quantity's draws, never of all of them.
"""
import numpy as np
import scipy.fft
import scipy.special

__all__ = ["autocovariance", "autocorrelation", "ess_mean", "ess_bulk", "ess_tail",
           "split_rhat", "mcse_mean", "mcse_sd"]


def _as_draws(x):
    """x as a numpy array (chain, draw, ...), without a copy where it can: each
    quantity is converted to float64 only when it is used."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(float)
    if x.ndim == 1:
        x = x[None]
    if x.ndim < 2:
        raise ValueError(f"draws must have shape (chain, draw, ...), got {x.shape}")
    return x


def _per_quantity(fn, x):
    """Apply `fn` (on (chain, draw) views) to every scalar quantity of x (chain, draw, *shape)."""
    shape = x.shape[2:]
    out = np.array([fn(x[(slice(None), slice(None)) + index]) for index in np.ndindex(shape)])
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


def _split_chains(x, out=None):
    """(chain, draw) -> float64 (2 chain, draw // 2): first and last halves, in `out`
    (a new array if None)."""
    n_chain, n_draw = x.shape
    half = n_draw // 2
    if out is None:
        out = np.empty((2 * n_chain, half))
    out[:n_chain] = x[:, :half]
    out[n_chain:] = x[:, n_draw - half:]
    return out


_CHUNK = 1 << 15  # values ranked at a time by `_z_scale`


def _z_scale(x):
    """Rank-normalize contiguous float64 `x` in place and return it: normal quantiles
    (Blom) of the fractional ranks 1..n of all its values, ties given their average
    rank (as scipy's rankdata 'average'). Ranks come from binary search in one sorted
    copy, chunk by chunk (each chunk's values searched in order, which is fast), so
    that copy is the only full-size buffer."""
    flat = x.reshape(-1)
    ordered = np.sort(flat)
    size = len(ordered)
    for start in range(0, size, _CHUNK):
        part = flat[start:start + _CHUNK]
        order = np.argsort(part)
        values = part[order]
        left = np.searchsorted(ordered, values, "left")
        ranks = left + 1.
        # a value equal to its sorted successor is tied: equal values sit at sorted
        # positions [left, right) and share the mean rank (left + 1 + right) / 2
        tied = np.flatnonzero(ordered[np.minimum(left + 1, size - 1)] == values)
        tied = tied[left[tied] + 1 < size]
        if len(tied):
            ranks[tied] = (left[tied] + 1. + np.searchsorted(ordered, values[tied], "right")) / 2.
        ranks -= 0.375
        ranks /= size + 0.25
        part[order] = scipy.special.ndtri(ranks, out=ranks)
    return x


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
    within = np.mean([np.var(chain, ddof=1) for chain in x])  # one chain's temporaries at a time
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt((between / within + n_draw - 1.) / n_draw)


def _unusable(draws):
    return draws.shape[1] < 4 or np.isnan(draws).any()


def ess_mean(x):
    """Split-chain ESS for the mean (no rank normalization)."""
    return _per_quantity(lambda draws: _ess_2d(_split_chains(draws)), _as_draws(x))


def ess_bulk(x):
    """Bulk ESS: ESS of the rank-normalized split chains."""
    def bulk(draws):
        return np.nan if _unusable(draws) else _ess_2d(_z_scale(_split_chains(draws)))

    return _per_quantity(bulk, _as_draws(x))


def ess_tail(x, prob=(0.05, 0.95)):
    """Tail ESS: the smaller ESS of the indicators x <= q_low and x <= q_high."""
    def tail(draws):
        if _unusable(draws):
            return np.nan
        draws = np.asarray(draws, dtype=float)
        return min(_ess_2d(_split_chains(draws <= np.quantile(draws, p))) for p in prob)

    return _per_quantity(tail, _as_draws(x))


def split_rhat(x):
    """Rank-normalized split R-hat: max of the bulk and the folded (tail) R-hat."""
    def rhat(draws):
        if draws.shape[0] < 1 or _unusable(draws):
            return np.nan
        split = _split_chains(draws)
        median = np.median(split, overwrite_input=True)
        bulk = _rhat_2d(_z_scale(_split_chains(draws, out=split)))  # refilled
        folded = _split_chains(draws, out=split)  # the same buffer, refilled
        folded -= median
        np.abs(folded, out=folded)
        return max(bulk, _rhat_2d(_z_scale(folded)))

    return _per_quantity(rhat, _as_draws(x))


def mcse_mean(x):
    """Monte Carlo standard error of the mean: sd / sqrt(ess_mean)."""
    def mcse(draws):
        draws = np.asarray(draws, dtype=float)
        return np.std(draws, ddof=1) / np.sqrt(_ess_2d(_split_chains(draws)))

    return _per_quantity(mcse, _as_draws(x))


def mcse_sd(x):
    """Monte Carlo standard error of the standard deviation (delta method on the variance)."""
    def mcse(draws):
        draws = np.asarray(draws, dtype=float)
        squares = (draws - draws.mean()) ** 2
        ess = _ess_2d(_split_chains(squares))
        var = squares.mean()
        var_of_var = ((squares ** 2).mean() - var ** 2) / ess
        return np.sqrt(var_of_var / var / 4.)

    return _per_quantity(mcse, _as_draws(x))
