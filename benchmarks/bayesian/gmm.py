"""GMM part: `models.bayesian.gmm` (Gibbs + HMC) beside scikit-learn's `GaussianMixture` (EM).

The same data (MNIST digits 0, 1, 7: 1000 training and 1000 test images on the
training images' top 2 principal components, standardized) and the same
mixture family (3 components, diagonal covariances). scikit-learn fits the
maximum-likelihood mixture by EM (5 restarts, the best kept) and scores the
test points by its log density; ours is the Bayesian posterior predictive
density from the Gibbs-within-HMC draws (4 chains). With 1000 points in 2
dimensions the two should agree closely: the check is the difference in
held-out log-likelihood per point. Ours over seeds as mean +- s.e.

    python -m benchmarks.bayesian_zoo --parts gmm [--quick]
"""
import math
import time

import numpy as np
import torch

from models.bayesian import gmm

PEER = "sklearn GaussianMixture (EM, diag, 5 inits)"


def run(quick, root=None):
    """Rows: held-out and training log-likelihood per point, ours beside scikit-learn's."""
    from sklearn.mixture import GaussianMixture
    n = 300 if quick else 1000
    n_sweeps = 40 if quick else 300
    seeds = [0] if quick else [0, 1, 2]
    train, test = gmm.load(n_train=n, n_test=n)
    start = time.process_time()
    peer = GaussianMixture(3, covariance_type="diag", n_init=5, random_state=0).fit(train.numpy())
    peer_seconds = time.process_time() - start
    peer_values = {"test_loglik": float(peer.score(test.numpy())),
                   "train_loglik": float(peer.score(train.numpy()))}
    ours, seconds, accept = {"test_loglik": [], "train_loglik": []}, [], []
    for seed in seeds:
        torch.manual_seed(seed)
        start = time.process_time()
        draws, rate = gmm.sample(train, 3, n_sweeps, n_sweeps // 2)
        seconds.append(time.process_time() - start)
        accept.append(rate)
        ours["test_loglik"].append(gmm.log_predictive(draws, test))
        ours["train_loglik"].append(gmm.log_predictive(draws, train))
    rows = []
    for metric, values in ours.items():
        values = np.asarray(values)
        se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
        rows.append({"model": "gmm", "data": f"MNIST 0/1/7, 2 PCs ({n} train, {n} test)",
                     "metric": metric, "ours": float(values.mean()), "ours_se": se,
                     "published": None, "published_se": None, "published_source": None,
                     "peer": PEER, "peer_value": peer_values[metric], "peer_se": None,
                     "ours_seconds": float(np.mean(seconds)), "peer_seconds": peer_seconds,
                     "note": f"{len(seeds)} seed(s) x 4 chains, {n_sweeps} sweeps (half warm-up); "
                             f"ours - peer = {values.mean() - peer_values[metric]:+.4f} nats "
                             f"per point; HMC acceptance {np.mean(accept):.2f}"})
    return rows
