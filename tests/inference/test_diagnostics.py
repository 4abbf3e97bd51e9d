"""MCMC diagnostics against ArviZ on the same draws, against known autocorrelations, and
the memory they take on long runs."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from inference import diagnostics

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    az = pytest.importorskip("arviz")


def _ar1(rng, n_chains, n_draws, phi, shape=()):
    """AR(1) chains x_t = phi x_{t-1} + e_t, with chain offsets (so R-hat is not 1)."""
    x = np.zeros((n_chains, n_draws) + shape)
    noise = rng.standard_normal((n_chains, n_draws) + shape)
    x[:, 0] = noise[:, 0] / np.sqrt(1 - phi ** 2)
    for t in range(1, n_draws):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    return x + 0.2 * rng.standard_normal((n_chains, 1) + shape)


CASES = [(4, 500, 0.9), (3, 201, 0.5), (1, 100, -0.3), (8, 64, 0.99), (2, 1000, 0.0)]


@pytest.mark.parametrize("n_chains,n_draws,phi", CASES)
def test_matches_arviz(n_chains, n_draws, phi):
    rng = np.random.default_rng(n_draws)
    x = _ar1(rng, n_chains, n_draws, phi)
    pairs = [(diagnostics.ess_bulk(x), az.ess(x, method="bulk")),
             (diagnostics.ess_tail(x), az.ess(x, method="tail")),
             (diagnostics.ess_mean(x), az.ess(x, method="mean")),
             (diagnostics.mcse_mean(x), az.mcse(x, method="mean")),
             (diagnostics.mcse_sd(x), az.mcse(x, method="sd"))]
    if n_chains > 1:
        pairs.append((diagnostics.split_rhat(x), az.rhat(x, method="rank")))
    for ours, theirs in pairs:
        assert ours == pytest.approx(float(theirs), rel=1e-9)


def test_vectorized_over_quantities_and_tensors_accepted():
    rng = np.random.default_rng(1)
    x = _ar1(rng, 4, 300, 0.7, shape=(2, 3))
    ess = diagnostics.ess_bulk(torch.as_tensor(x))
    rhat = diagnostics.split_rhat(x)
    assert ess.shape == (2, 3) and rhat.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert ess[i, j] == pytest.approx(diagnostics.ess_bulk(x[:, :, i, j]), rel=1e-12)
            assert rhat[i, j] == pytest.approx(float(az.rhat(x[:, :, i, j], method="rank")),
                                               rel=1e-9)


def test_autocorrelation_of_ar1_and_arviz():
    rng = np.random.default_rng(2)
    phi = 0.8
    x = _ar1(rng, 2, 20000, phi)
    rho = diagnostics.autocorrelation(x, axis=1)
    assert rho.shape == x.shape and np.allclose(rho[:, 0], 1.)
    # the lag-k estimate has standard error about sqrt((1 + phi^2) / (1 - phi^2) / n)
    se = np.sqrt((1 + phi ** 2) / (1 - phi ** 2) / 20000)
    for lag in range(1, 6):
        assert np.all(np.abs(rho[:, lag] - phi ** lag) < 5 * se * np.sqrt(lag))
    from arviz.stats.stats_utils import autocorr
    assert np.allclose(rho, autocorr(x, axis=1), atol=1e-12)


def test_ess_of_independent_draws_is_about_the_number_of_draws():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 1000))
    # for iid draws the ESS estimate has a relative sd of roughly sqrt(2 / n) * a few
    assert diagnostics.ess_bulk(x) == pytest.approx(4000, rel=0.15)
    assert diagnostics.mcse_mean(x) == pytest.approx(1 / np.sqrt(4000), rel=0.1)
    # a chain stuck at a different place gives a large R-hat
    x[0] += 3.
    assert diagnostics.split_rhat(x) > 1.2


def test_degenerate_inputs():
    constant = np.ones((2, 50))
    assert diagnostics.ess_mean(constant) == 100
    with_nan = np.random.default_rng(4).standard_normal((2, 50))
    with_nan[0, 3] = np.nan
    assert np.isnan(diagnostics.ess_bulk(with_nan)) and np.isnan(diagnostics.split_rhat(with_nan))
    assert np.isnan(diagnostics.ess_bulk(np.zeros((2, 3))))
    with pytest.raises(ValueError, match="chain, draw"):
        diagnostics.ess_bulk(np.float64(1.))


# Peak extra resident memory of split_rhat + ess_bulk (what `inference.mcmc.run` checks after
# sampling) on 8 quantities of 4 x 100k float32 draws, in units of one quantity's float32 bytes.
# A fresh process that loads only the diagnostics module; VmHWM is Linux's resident high-water
# mark, reset by writing 5 to clear_refs; malloc returns freed blocks above 64 KiB at once.
_PEAK_SCRIPT = r"""
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("diagnostics", sys.argv[1])
diagnostics = importlib.util.module_from_spec(spec)
spec.loader.exec_module(diagnostics)

def kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

x = np.random.default_rng(0).standard_normal((4, 100_000, 8), dtype=np.float32)
diagnostics.split_rhat(x[:, :100]), diagnostics.ess_bulk(x[:, :100])  # imports, caches
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = kb("VmRSS")
diagnostics.split_rhat(x), diagnostics.ess_bulk(x)
print((kb("VmHWM") - base) * 1024 / x[:, :, 0].nbytes)
"""


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux procfs")
def test_checking_a_long_run_holds_a_few_copies_of_one_quantity():
    # one quantity at a time, ranked against one sorted float64 copy: about 5 float32-sized
    # copies of one quantity; a float64 copy of all 8 quantities alone would be 16
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, diagnostics.__file__], env=env,
                         capture_output=True, text=True, check=True)
    assert float(out.stdout) < 8.
