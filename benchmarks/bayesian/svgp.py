"""SVGP part: `models.bayesian.svgp` beside GPyTorch's `ApproximateGP`, in the same run.

Both fit the same model from the same start: the same inducing inputs (a random
subset of the training inputs, learned), zero mean, an ARD RBF kernel with a
signal variance (GPyTorch: `ScaleKernel(RBFKernel(ard_num_dims=D))`), a
whitened Cholesky q(u) (`VariationalStrategy` + `CholeskyVariationalDistribution`),
Gaussian or probit-Bernoulli likelihood, float64, Adam with the same learning
rate, steps and minibatches (the same shuffles), the bound per data point as
the loss. The two are trained side by side, in blocks of steps taken in turn,
each block timed (CPU time, one thread): the time per step is each block's
mean, and the ratio is ours' median over GPyTorch's median.

- regression: UCI sets, standard splits, test RMSE and NLL in the original
  units; ours minus GPyTorch per split, mean +- standard error (paired);
- classification: scikit-learn's breast cancer set (569 x 30, standardized),
  random 80/20 splits, test error and NLL.

The full run (`benchmarks/results/bayesian_zoo_svgp.json`, about 35 CPU
minutes, `FULL_SETS`): all 20 standard splits of Boston, yacht, energy, concrete
and red wine, and two breast cancer splits; 600 full-batch steps
each (ZhuSuan's example runs 5000). `--quick`: 2 Boston splits and one breast
cancer split, 100 steps.

Each finished split is appended to `benchmarks/results/bayesian_zoo_svgp.splits.tmp`
(ignored by git) and a rerun with the same settings reads it back instead of
training again, so a run that is stopped resumes; delete the file to start over.

    python -m benchmarks.bayesian_zoo --parts svgp [--quick]
"""
import json
import math
import statistics
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks._report import RESULTS
from models.bayesian.svgp import SVGP, initial_inducing, regression_metrics, _standardize
from models.data.uci import load_uci

FULL_BATCH = 5000  # at least every training set below: one step is one pass
FULL_SETS = (("bostonHousing", 20), ("yacht", 20), ("energy", 20), ("concrete", 20),
             ("wine-quality-red", 20))  # (data set, splits 0..k-1) of the full run

PUBLISHED = {("bostonHousing", "test_rmse"): 2.90, ("bostonHousing", "test_nll"): 2.52}
SOURCE = "ZhuSuan examples/gaussian_process/svgp.py (100 inducing points), as issue #27 quotes"


def gpytorch_model(inducing, likelihood):
    """GPyTorch's ApproximateGP for the same model: (model, likelihood module)."""
    import gpytorch

    class Model(gpytorch.models.ApproximateGP):
        def __init__(self):
            q = gpytorch.variational.CholeskyVariationalDistribution(len(inducing),
                                                                     dtype=inducing.dtype)
            strategy = gpytorch.variational.VariationalStrategy(
                self, inducing.clone(), q, learn_inducing_locations=True)
            super().__init__(strategy)
            self.mean_module = gpytorch.means.ZeroMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(
                gpytorch.kernels.RBFKernel(ard_num_dims=inducing.shape[1]))

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x),
                                                             self.covar_module(x))

    lik = (gpytorch.likelihoods.GaussianLikelihood() if likelihood == "gaussian"
           else gpytorch.likelihoods.BernoulliLikelihood())
    return Model().to(inducing.dtype), lik.to(inducing.dtype)


class _Ours:
    def __init__(self, inducing, likelihood, lr):
        self.svgp = SVGP(inducing, likelihood=likelihood)
        self.optimizer = torch.optim.Adam(self.svgp.parameters(), lr=lr)

    def step(self, x, y, n):
        self.optimizer.zero_grad()
        loss = -self.svgp.bound(x, y, n) / n
        loss.backward()
        self.optimizer.step()

    def predict(self, x):
        return self.svgp.predict(x)


class _GPyTorch:
    def __init__(self, inducing, likelihood, lr):
        import gpytorch
        self.model, self.likelihood = gpytorch_model(inducing, likelihood)
        self.kind = likelihood
        params = list(self.model.parameters()) + list(self.likelihood.parameters())
        self.optimizer = torch.optim.Adam(params, lr=lr)
        self.elbo = None

    def step(self, x, y, n):
        import gpytorch
        if self.elbo is None:
            self.elbo = gpytorch.mlls.VariationalELBO(self.likelihood, self.model, num_data=n)
        self.model.train(), self.likelihood.train()
        self.optimizer.zero_grad()
        loss = -self.elbo(self.model(x), y)
        loss.backward()
        self.optimizer.step()

    @torch.no_grad()
    def predict(self, x):
        self.model.eval(), self.likelihood.eval()
        f = self.model(x)
        if self.kind == "gaussian":
            return f.mean, f.variance + self.likelihood.noise.squeeze()
        return self.likelihood(f).probs


def train_pair(x, y, inducing, likelihood, n_steps, batch_size, lr, seed, block=25,
               desc="svgp"):
    """Train ours and GPyTorch's side by side; returns (ours, theirs, s/step ours, theirs)."""
    torch.manual_seed(seed)
    ours, theirs = _Ours(inducing, likelihood, lr), _GPyTorch(inducing, likelihood, lr)
    n = len(x)
    batches = []
    while len(batches) < n_steps:
        order = torch.randperm(n)
        batches += [order[i:i + batch_size] for i in range(0, n, batch_size)]
    times = {"ours": [], "peer": []}
    for start in tqdm(range(0, n_steps, block), desc=desc, leave=False):
        chunk = batches[start:start + block]
        for name, learner in (("ours", ours), ("peer", theirs)) if start // block % 2 == 0 \
                else (("peer", theirs), ("ours", ours)):
            t0 = time.process_time()
            for idx in chunk:
                learner.step(x[idx], y[idx], n)
            times[name].append((time.process_time() - t0) / len(chunk))
    return ours, theirs, statistics.median(times["ours"]), statistics.median(times["peer"])


def _mean_se(values):
    values = np.asarray(values, dtype=float)
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), se


class SplitCache:
    """Finished splits, one JSON line each, keyed by data set, split and settings."""

    def __init__(self, path):
        self.path = path
        self.rows = {}
        if path is not None and path.is_file():
            for line in path.read_text().splitlines():
                entry = json.loads(line)
                self.rows[entry["key"]] = entry["row"]

    def get(self, key):
        return self.rows.get(json.dumps(key))

    def put(self, key, row):
        self.rows[json.dumps(key)] = row
        if self.path is not None:
            with self.path.open("a") as file:
                file.write(json.dumps({"key": json.dumps(key), "row": row}) + "\n")
        return row


def regression(dataset, splits, n_steps, n_inducing=100, batch_size=FULL_BATCH, lr=0.01,
               cache=None):
    """Per split: ours' and GPyTorch's test RMSE, NLL and seconds per step."""
    cache = cache or SplitCache(None)
    out = []
    for split in splits:
        key = ["regression", dataset, split, n_steps, n_inducing, batch_size, lr]
        if cache.get(key) is not None:
            out.append(cache.get(key))
            continue
        data = load_uci(dataset, split, dtype=torch.float64)
        x, x_test, _, _ = _standardize(data.x_train, data.x_test)
        y, _, y_mean, y_std = _standardize(data.y_train, data.y_test)
        inducing = initial_inducing(x, n_inducing, split)
        ours, theirs, t_ours, t_peer = train_pair(x, y, inducing, "gaussian", n_steps,
                                                  batch_size, lr, split,
                                                  desc=f"svgp {dataset} split {split}")
        row = {"split": split, "step_ours": t_ours, "step_peer": t_peer}
        row["rmse_ours"], row["nll_ours"] = regression_metrics(ours.svgp, x_test, data.y_test,
                                                               y_mean, y_std)
        mean, var = theirs.predict(x_test)
        mean, std = mean * y_std + y_mean, var.sqrt() * y_std
        row["rmse_peer"] = float((mean - data.y_test).pow(2).mean().sqrt())
        row["nll_peer"] = float(-torch.distributions.Normal(mean, std).log_prob(data.y_test)
                                .mean())
        out.append(cache.put(key, row))
    return out


def classification(seeds, n_steps, n_inducing=50, batch_size=FULL_BATCH, lr=0.01):
    """Per random 80/20 split of breast cancer: test error and NLL, ours and GPyTorch's."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    features, labels = load_breast_cancer(return_X_y=True)
    out = []
    for seed in seeds:
        a, b, ya, yb = train_test_split(features, labels, test_size=0.2, random_state=seed,
                                        stratify=labels)
        x, x_test, _, _ = _standardize(torch.tensor(a), torch.tensor(b))
        y, y_test = torch.tensor(ya, dtype=torch.float64), torch.tensor(yb, dtype=torch.float64)
        inducing = initial_inducing(x, n_inducing, seed)
        ours, theirs, t_ours, t_peer = train_pair(x, y, inducing, "bernoulli", n_steps,
                                                  batch_size, lr, seed,
                                                  desc=f"svgp breast cancer seed {seed}")
        row = {"split": seed, "step_ours": t_ours, "step_peer": t_peer}
        for name, learner in (("ours", ours), ("peer", theirs)):
            p = learner.predict(x_test).clamp(1e-12, 1 - 1e-12)
            row[f"error_{name}"] = float(((p > 0.5).double() != y_test).double().mean())
            row[f"nll_{name}"] = float(-(y_test * p.log() + (1 - y_test) * (1 - p).log()).mean())
        out.append(row)
    return out


def _rows(data, per_split, metrics, n_steps):
    rows = []
    t_ours, t_peer = _mean_se([r["step_ours"] for r in per_split]), \
        _mean_se([r["step_peer"] for r in per_split])
    ratio = statistics.median(r["step_ours"] / r["step_peer"] for r in per_split)
    for metric, key in metrics:
        ours, peer = _mean_se([r[f"{key}_ours"] for r in per_split]), \
            _mean_se([r[f"{key}_peer"] for r in per_split])
        diff = _mean_se([r[f"{key}_ours"] - r[f"{key}_peer"] for r in per_split])
        rows.append({"model": "svgp", "data": data, "metric": metric,
                     "ours": ours[0], "ours_se": ours[1],
                     "published": PUBLISHED.get((data, metric)), "published_se": None,
                     "published_source": SOURCE if (data, metric) in PUBLISHED else None,
                     "peer": "gpytorch ApproximateGP", "peer_value": peer[0], "peer_se": peer[1],
                     "ours_seconds": t_ours[0] * n_steps, "peer_seconds": t_peer[0] * n_steps,
                     "note": f"{len(per_split)} splits, {n_steps} steps; ours - peer = "
                             f"{diff[0]:+.4f} +- {diff[1]:.4f} (paired s.e.)"})
    rows.append({"model": "svgp", "data": data, "metric": "cpu_seconds_per_step",
                 "ours": t_ours[0], "ours_se": t_ours[1], "published": None,
                 "published_se": None, "published_source": None,
                 "peer": "gpytorch ApproximateGP", "peer_value": t_peer[0], "peer_se": t_peer[1],
                 "ours_seconds": t_ours[0] * n_steps, "peer_seconds": t_peer[0] * n_steps,
                 "note": f"ours / peer = {ratio:.2f} (median over splits of the ratio of "
                         f"interleaved blocks' median times)"})
    return rows


def run(quick, root=None):
    """The part's rows: Boston regression (and more UCI sets when not quick), breast cancer."""
    if quick:
        sets, n_steps, seeds = [("bostonHousing", 2)], 100, [0]
    else:
        sets, n_steps, seeds = FULL_SETS, 600, [0, 1]
    cache = SplitCache(RESULTS / f"bayesian_zoo_svgp{'_quick' if quick else ''}.splits.tmp")
    rows, details = [], {}
    for dataset, n_splits in tqdm(sets, desc="svgp data sets"):
        per_split = regression(dataset, range(n_splits), n_steps, cache=cache)
        details[dataset] = per_split
        rows += _rows(dataset, per_split, [("test_rmse", "rmse"), ("test_nll", "nll")], n_steps)
    per_split = classification(seeds, n_steps)
    details["breast_cancer"] = per_split
    rows += _rows("breast_cancer", per_split, [("test_error", "error"), ("test_nll", "nll")],
                  n_steps)
    for row in rows:
        if row["metric"] == "cpu_seconds_per_step":
            row["per_split"] = details[row["data"]]
    return rows
