"""BLR part: `models.bayesian.blr`'s NUTS, VI and SGLD posteriors beside NumPyro's NUTS.

Red wine (UCI `wine-quality-red`, quality >= 6 vs below, 11 standardized
features and a bias), standard splits; the same model (beta ~ N(0, I),
Bernoulli logits) sampled by NumPyro's NUTS (4 chains, 500 warm-up + 500
draws, vectorized chains, one XLA thread) as the independent reference. Per
method of ours: test error and test log predictive density beside NumPyro's,
and the posterior's distance from NumPyro's: the largest |mean - mean_NumPyro|
/ sd_NumPyro over the 12 coefficients (for two exact samplers, Monte Carlo
noise: about 0.1-0.2 here) and the range of sd / sd_NumPyro (in the note).
Mean +- standard error over the splits (the full run: all 20 standard splits,
about 90 CPU s a split; `--quick`: split 0, 100 draws), the paired difference
ours - NumPyro's per split in the note; CPU seconds per method.

    python -m benchmarks.bayesian_zoo --parts blr [--quick]
"""
import math
import os
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from models.bayesian import blr

PEER = "numpyro NUTS"


def numpyro_draws(x, y, n_warmup, n_samples, seed=0):
    """NumPyro NUTS draws [4 * n_samples, D] of the same model, and its CPU seconds."""
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                       "intra_op_parallelism_threads=1")
    import jax
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS
    jax.config.update("jax_enable_x64", True)

    def model(x, y):
        beta = numpyro.sample("beta", dist.Normal(0., 1.).expand([x.shape[1]]).to_event(1))
        numpyro.sample("y", dist.Bernoulli(logits=x @ beta), obs=y)

    start = time.process_time()
    mcmc = MCMC(NUTS(model), num_warmup=n_warmup, num_samples=n_samples, num_chains=4,
                chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed), x.numpy(), y.numpy())
    beta = np.asarray(mcmc.get_samples()["beta"])
    return torch.as_tensor(beta), time.process_time() - start


def one_split(split, quick):
    """Every method's metrics on one split."""
    x, y, x_test, y_test = blr.load("wine-quality-red", split)
    n_samples = 100 if quick else 500
    torch.manual_seed(split)
    draws, seconds = {}, {}
    start = time.process_time()
    draws["nuts"], _ = blr.run_nuts(x, y, n_samples, n_samples, seed=split)
    seconds["nuts"] = time.process_time() - start
    start = time.process_time()
    draws["vi"] = blr.run_vi(x, y, 200 if quick else 2000)
    seconds["vi"] = time.process_time() - start
    start = time.process_time()
    draws["sgld"] = blr.run_sgld(x, y, 20 if quick else 400)
    seconds["sgld"] = time.process_time() - start
    peer, peer_seconds = numpyro_draws(x, y, n_samples, n_samples, seed=split)
    out = {"split": split, "peer_seconds": peer_seconds}
    out["error_peer"], out["lpd_peer"] = blr.predictive(peer, x_test, y_test)
    for method in blr.METHODS:
        out[f"error_{method}"], out[f"lpd_{method}"] = blr.predictive(draws[method], x_test,
                                                                     y_test)
        out[f"seconds_{method}"] = seconds[method]
        for key, value in blr.compare(draws[method], peer).items():
            out[f"{key}_{method}"] = value
    return out


def _mean_se(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), (float(values.std(ddof=1) / math.sqrt(len(values)))
                                  if len(values) > 1 else None)


def run(quick, root=None):
    """Rows per method: test error, test log predictive density, distance from NumPyro."""
    splits = [0] if quick else range(20)
    per_split = [one_split(k, quick) for k in tqdm(splits, desc="blr splits")]
    rows = []
    peer_seconds = _mean_se([r["peer_seconds"] for r in per_split])[0]
    for method in blr.METHODS:
        seconds = _mean_se([r[f"seconds_{method}"] for r in per_split])[0]
        for metric, key, peer_key in (("test_error", "error", "error_peer"),
                                      ("test_loglik", "lpd", "lpd_peer"),
                                      ("max_mean_diff_sd", "max_mean_diff_sd", None)):
            ours = _mean_se([r[f"{key}_{method}"] for r in per_split])
            peer = _mean_se([r[peer_key] for r in per_split]) if peer_key else (None, None)
            paired = ""
            if peer_key is not None and len(per_split) > 1:
                paired = "; ours - NumPyro = {:+.4f} +- {:.4f} (paired s.e.)".format(*_mean_se(
                    [r[f"{key}_{method}"] - r[peer_key] for r in per_split]))
            sd_lo = min(r[f"min_sd_ratio_{method}"] for r in per_split)
            sd_hi = max(r[f"max_sd_ratio_{method}"] for r in per_split)
            rows.append({"model": f"blr-{method}", "data": "wine-quality-red (quality >= 6)",
                         "metric": metric, "ours": ours[0], "ours_se": ours[1],
                         "published": None, "published_se": None, "published_source": None,
                         "peer": PEER, "peer_value": peer[0], "peer_se": peer[1],
                         "ours_seconds": seconds, "peer_seconds": peer_seconds,
                         "note": f"{len(per_split)} split(s); sd / sd_NumPyro in "
                                 f"[{sd_lo:.2f}, {sd_hi:.2f}] over coefficients and splits"
                                 + paired
                                 + ("; max_mean_diff_sd: posterior mean vs NumPyro's, in its "
                                    "sds" if metric == "max_mean_diff_sd" else "")})
    rows[0]["per_split"] = per_split
    return rows
