"""The bnn part of `benchmarks.bayesian_zoo`: BNN-VI and BNN-SGHMC on the nine UCI sets.

    python -m benchmarks.bayesian_zoo --parts bnn            # writes bayesian_zoo_bnn.json

For each UCI set, `models.bayesian.bnn` by VI and by SGHMC-within-Gibbs, on
all its standard splits (20, protein 5; the epochs, minibatch size and SGHMC
step multiplier per set are `models.bayesian.bnn.SETTINGS`, about 2,300
minibatch steps each), test RMSE and test log-likelihood (mean +- standard
error over splits) beside:

- the published numbers for the same 50-unit network on all splits (`PUBLISHED`):
  PBP (Hernandez-Lobato & Adams 2015, Tables 2 and 3: RMSE and test
  log-likelihood, mean +- standard error) and MC dropout (Gal & Ghahramani
  2016, Table 1; there the +- is the standard deviation over splits, here
  divided by sqrt(number of splits) into a standard error);
- the same BNN in Pyro, run here on the first `PYRO_SPLITS` splits (its CPU
  cost per split is about twice ours), with VI's steps, minibatches and
  learning rate: `AutoNormal` + `Trace_ELBO` (10 vectorized particles, Adam
  0.01), the same model (the same precision priors, N(0, 1/lambda) weights,
  the same scaled network), the same predictive formula on 1,000 draws of q.

"Within the published range" (the `in_range` key of each row, per set):
RMSE at most max(PBP + 2 SE, dropout + 2 SE), and test log-likelihood at
least min(PBP - 2 SE, dropout - 2 SE), where a published SE below half the
last printed digit (e.g. 0.00 for naval's RMSE) counts as that half-digit.
Being better than both published methods counts as within the range. A set
passes for a method when both its RMSE and its log-likelihood do
(`set_in_range` on each row). Acceptance: VI and SGHMC pass on at least 6
of the 9 sets.

Each (set, method, split) result is cached in `runs/bayesian_zoo/bnn/` under
the repository root, so an interrupted run resumes where it stopped.
CPU seconds are per split, one torch thread, one-time imports excluded.
"""
import json
import math
import time
from pathlib import Path

import torch

from models.bayesian import bnn
from models.data.uci import UCI_DATASETS, load_uci, uci_n_splits

SPLITS = 20        # all of them (protein has 5)
PYRO_SPLITS = 3    # the peer, on the first 3 of them (its CPU cost is twice ours)
N_SAMPLES = 1000
PYRO = "pyro AutoNormal + Trace_ELBO"

# (mean, se) per data set: RMSE, test log-likelihood. PBP: Hernandez-Lobato & Adams,
# "Probabilistic backpropagation for scalable learning of Bayesian neural networks",
# ICML 2015, Tables 2-3 (PBP column). Dropout: Gal & Ghahramani, "Dropout as a Bayesian
# approximation", ICML 2016, Table 1 (Dropout column; its +- is the standard deviation over
# the 20 splits, 5 for protein, turned into a standard error here).
PUBLISHED_PBP = {
    "bostonHousing": ((3.014, 0.180), (-2.574, 0.089)),
    "concrete": ((5.667, 0.093), (-3.161, 0.019)),
    "energy": ((1.804, 0.048), (-2.042, 0.019)),
    "kin8nm": ((0.098, 0.001), (0.896, 0.006)),
    "naval-propulsion-plant": ((0.006, 0.000), (3.731, 0.006)),
    "power-plant": ((4.124, 0.035), (-2.837, 0.009)),
    "protein-tertiary-structure": ((4.732, 0.013), (-2.973, 0.003)),
    "wine-quality-red": ((0.635, 0.008), (-0.968, 0.014)),
    "yacht": ((1.015, 0.054), (-1.634, 0.016)),
}
_DROPOUT_SD = {  # (rmse, sd over splits), (loglik, sd over splits) as printed
    "bostonHousing": ((2.97, 0.85), (-2.46, 0.25)),
    "concrete": ((5.23, 0.53), (-3.04, 0.09)),
    "energy": ((1.66, 0.19), (-1.99, 0.09)),
    "kin8nm": ((0.10, 0.00), (0.95, 0.03)),
    "naval-propulsion-plant": ((0.01, 0.00), (3.80, 0.05)),
    "power-plant": ((4.02, 0.18), (-2.80, 0.05)),
    "protein-tertiary-structure": ((4.36, 0.04), (-2.89, 0.01)),
    "wine-quality-red": ((0.62, 0.04), (-0.93, 0.06)),
    "yacht": ((1.11, 0.38), (-1.55, 0.12)),
}
PUBLISHED_DROPOUT = {
    name: tuple((mean, sd / math.sqrt(5 if name.startswith("protein") else 20))
                for mean, sd in pair) for name, pair in _DROPOUT_SD.items()}
# Half the last printed digit: the smallest SE a printed number can claim.
_HALF_DIGIT = {"PBP": 0.0005, "dropout": 0.005}
SOURCE = ("PBP: Hernandez-Lobato & Adams 2015, Tables 2-3; MC dropout: Gal & Ghahramani "
          "2016, Table 1 (sd / sqrt(splits))")


def published_range(data, metric):
    """(low, high) edge of 'within the published range': see the module docstring."""
    index = 0 if metric == "test_rmse" else 1
    ends = []
    for source, table in (("PBP", PUBLISHED_PBP), ("dropout", PUBLISHED_DROPOUT)):
        mean, se = table[data][index]
        se = max(se, _HALF_DIGIT[source])
        ends += [mean - 2 * se, mean + 2 * se]
    return (-math.inf, max(ends)) if metric == "test_rmse" else (min(ends), math.inf)


def in_range(data, metric, value):
    low, high = published_range(data, metric)
    return low <= value <= high


# -- the same BNN in Pyro --------------------------------------------------------------
def _pyro_forward(x, weights):
    """bnn's network, broadcasting over Pyro's leading particle dims of the weights."""
    h = x
    for i, w in enumerate(weights):
        h = torch.cat([h.expand(*w.shape[:-2], *h.shape[-2:]),
                       torch.ones(*w.shape[:-2], h.shape[-2], 1)], -1)
        h = h @ w.transpose(-1, -2) / math.sqrt(h.shape[-1])
        if i < len(weights) - 1:
            h = torch.relu(h)
    return h.squeeze(-1)


def pyro_fit(x, y, layer_sizes, epochs, batch_size, learning_rate=0.01, n_particles=10):
    """Train AutoNormal on the Pyro BNN; returns (weights [S, ...], tau [S]) drawn from q."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal

    n_train = len(x)

    def model(x, y, idx):
        lam = pyro.sample("lambda", dist.Gamma(bnn.PRIOR_SHAPE, bnn.PRIOR_RATE))
        tau = pyro.sample("tau", dist.Gamma(bnn.NOISE_SHAPE, bnn.NOISE_RATE))
        weights = []
        for i, (n_in, n_out) in enumerate(zip(layer_sizes[:-1], layer_sizes[1:])):
            prior = dist.Normal(0., lam.rsqrt()[..., None, None]).expand(
                lam.shape + (n_out, n_in + 1)).to_event(2)
            weights.append(pyro.sample(f"w{i}", prior))
        with pyro.plate("data", n_train, subsample=idx):
            pyro.sample("y", dist.Normal(_pyro_forward(x[idx], weights),
                                         tau.rsqrt()[..., None]), obs=y[idx])

    def init(site):  # as bnn's guide: weights N(0, 1), precisions 1
        if site["name"].startswith("w"):
            return torch.randn(site["fn"].event_shape)
        return torch.ones(())

    pyro.clear_param_store()
    guide = AutoNormal(model, init_loc_fn=init, init_scale=0.05)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": learning_rate}),
              Trace_ELBO(num_particles=n_particles, vectorize_particles=True,
                         max_plate_nesting=1))
    for _ in range(epochs):
        order = torch.randperm(n_train)
        for start in range(0, n_train, batch_size):
            svi.step(x, y, order[start:start + batch_size])
    with torch.no_grad():
        draws = {}
        for name in ["tau"] + [f"w{i}" for i in range(len(layer_sizes) - 1)]:
            loc, scale = getattr(guide.locs, name), getattr(guide.scales, name)
            draws[name] = loc + scale * torch.randn(N_SAMPLES, *loc.shape)
        return [draws[f"w{i}"] for i in range(len(layer_sizes) - 1)], draws["tau"].exp()


def pyro_split(data, split, seed=1234):
    """The Pyro BNN on one split, same settings as `bnn.run_split`; same output keys."""
    torch.manual_seed(seed + split)
    uci = load_uci(data, split, dtype=torch.float32)
    x_mean, x_std = bnn._standardize(uci.x_train)
    y_mean, y_std = bnn._standardize(uci.y_train)
    xs, ys = (uci.x_train - x_mean) / x_std, (uci.y_train - y_mean) / y_std
    epochs, batch_size = bnn.SETTINGS[data].vi_epochs, bnn.SETTINGS[data].batch_size
    layer_sizes = [xs.shape[1], 50, 1]
    weights, tau = pyro_fit(xs, ys, layer_sizes, epochs, min(batch_size, len(xs)))
    posterior = bnn.BNNPosterior(weights, tau, x_mean, x_std, y_mean, y_std)
    return {"split": split, **posterior.evaluate(uci.x_test, uci.y_test)}


# -- the runs, cached ----------------------------------------------------------------
def _warm_up():
    """Import what the first optimizer and Pyro pull in, so no run's CPU time counts it."""
    import pyro  # noqa: F401
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _cached(cache, key, compute):
    file = cache / f"{key}.json"
    if file.is_file():
        return json.loads(file.read_text())
    _warm_up()
    start = time.process_time()
    result = {**compute(), "cpu_seconds": time.process_time() - start}
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(result))
    print(f"  {key}: RMSE {result['test_rmse']:.3f}  LL {result['test_loglik']:.3f}  "
          f"({result['cpu_seconds']:.0f} CPU s)", flush=True)
    return result


def _method(data, method, split):
    if method == "pyro":
        return lambda: pyro_split(data, split)
    return lambda: bnn.run_split(data, split, method, progress=False)


def run(quick, root, *, cached_only=False):
    """Rows for every set, method (vi, sghmc) and metric; see the module docstring.

    `cached_only`: use only the cached runs; a set missing some gets rows whose
    values are None and whose note says so.
    """
    torch.set_num_threads(1)
    cache = Path(root) / "runs" / "bayesian_zoo" / ("bnn_quick" if quick else "bnn")
    sets = ("bostonHousing",) if quick else UCI_DATASETS
    rows = []
    for data in sets:
        n_splits = 1 if quick else min(SPLITS, uci_n_splits(data))
        keys = {m: [f"{data}_{m}_{k}" for k in range(n_splits)] for m in ("vi", "sghmc")}
        keys["pyro"] = [f"{data}_pyro_{k}" for k in range(min(n_splits, PYRO_SPLITS))]
        if cached_only and not all((cache / f"{k}.json").is_file()
                                   for ks in keys.values() for k in ks):
            rows += _missing_rows(data, n_splits)
            continue
        results = {m: [_cached(cache, key, _method(data, m, split))
                       for split, key in enumerate(ks)] for m, ks in keys.items()}
        rows += _rows(data, n_splits, results)
    for method in ("vi", "sghmc"):
        passed = sorted({r["data"] for r in rows
                         if r["model"] == f"bnn-{method}" and r["set_in_range"]})
        print(f"bnn-{method}: within the published range on {len(passed)} of {len(sets)} "
              f"sets: {', '.join(passed)}")
    return rows


def _published(data, index):
    return {"published": PUBLISHED_PBP[data][index][0],
            "published_se": PUBLISHED_PBP[data][index][1], "published_source": SOURCE,
            "published_dropout": PUBLISHED_DROPOUT[data][index][0],
            "published_dropout_se": PUBLISHED_DROPOUT[data][index][1],
            "published_range": [None if math.isinf(v) else v for v in
                                published_range(data, ("test_rmse", "test_loglik")[index])]}


def _missing_rows(data, n_splits):
    return [{"model": f"bnn-{method}", "data": data, "metric": metric, "ours": None,
             "ours_se": None, **_published(data, index), "in_range": None,
             "set_in_range": None, "peer": PYRO, "peer_value": None, "peer_se": None,
             "ours_seconds": None, "peer_seconds": None,
             "note": f"not run: splits 0..{n_splits - 1} did not finish within the CPU budget"}
            for method in ("vi", "sghmc")
            for index, metric in enumerate(("test_rmse", "test_loglik"))]


def _rows(data, n_splits, results):
    summary = {m: bnn.summarize(r) for m, r in results.items()}
    seconds = {m: sum(x["cpu_seconds"] for x in r) / len(r) for m, r in results.items()}
    rows = []
    for method in ("vi", "sghmc"):
        passes = {metric: in_range(data, metric, summary[method][metric])
                  for metric in ("test_rmse", "test_loglik")}
        for index, metric in enumerate(("test_rmse", "test_loglik")):
            rows.append({
                "model": f"bnn-{method}", "data": data, "metric": metric,
                "ours": summary[method][metric],
                "ours_se": summary[method][f"{metric}_se"] if n_splits > 1 else None,
                "splits": n_splits, "peer_splits": len(results["pyro"]),
                **_published(data, index),
                "in_range": passes[metric], "set_in_range": all(passes.values()),
                "peer": PYRO, "peer_value": summary["pyro"][metric],
                "peer_se": (summary["pyro"][f"{metric}_se"] if len(results["pyro"]) > 1
                            else None),
                "ours_seconds": seconds[method], "peer_seconds": seconds["pyro"],
                "note": (f"splits 0..{n_splits - 1} (Pyro: 0..{len(results['pyro']) - 1}); "
                         f"{bnn.SETTINGS[data]}; CPU s per split; published = PBP, MC "
                         f"dropout beside it"),
                "per_split": [r[metric] for r in results[method]],
                "peer_per_split": [r[metric] for r in results["pyro"]]})
    return rows


def main(argv=None):
    """Fill the cache for some sets and methods (several processes can share the work)."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bayesian.bnn",
                                     description=main.__doc__)
    parser.add_argument("--sets", default=",".join(UCI_DATASETS))
    parser.add_argument("--methods", default="vi,sghmc,pyro")
    parser.add_argument("--splits", type=int, default=SPLITS)
    parser.add_argument("--assemble", action="store_true",
                        help="write the part's record from the cached runs only, then stop")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.assemble:
        from benchmarks import bayesian_zoo
        from benchmarks._report import write_report
        rows = bayesian_zoo.check_rows("bnn", run(False, bayesian_zoo.ROOT, cached_only=True))
        write_report(bayesian_zoo.NAME, bayesian_zoo.__doc__, ["--parts", "bnn"], rows,
                     bayesian_zoo.part_record("bnn", False), False, threads=1, part="bnn")
        return
    cache = Path(__file__).resolve().parents[2] / "runs" / "bayesian_zoo" / "bnn"
    for data in args.sets.split(","):
        for split in range(min(args.splits, uci_n_splits(data))):
            for method in args.methods.split(","):
                if method == "pyro" and split >= PYRO_SPLITS:
                    continue
                _cached(cache, f"{data}_{method}_{split}", _method(data, method, split))


if __name__ == "__main__":
    main()
