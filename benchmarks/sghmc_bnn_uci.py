"""SGHMC-within-Gibbs Bayesian neural nets on the UCI regression benchmark.

    python -m benchmarks.sghmc_bnn_uci                      # Boston, 20 splits
    python -m benchmarks.sghmc_bnn_uci --datasets bostonHousing concrete yacht
    python -m benchmarks.sghmc_bnn_uci --quick              # 2 splits, 20 epochs

Two kinds of rows, each against a baseline measured in the same run:

- quality, per data set (`models.bayesian.bnn --inference sghmc` over the
  published splits, with this script's epochs and burn-in): test
  RMSE and test log-likelihood, mean +- standard error over splits, against
  predicting the training mean with the training standard deviation (ratio =
  our RMSE / its RMSE). Published numbers for the same 50-unit net and splits
  are printed beside them for reference (PBP: Hernandez-Lobato & Adams 2015;
  MC dropout: Gal & Ghahramani 2016).
- speed: seconds per SGHMC step of `inference.SGHMC.sample` on the `ppl`
  model against the same second-order SGHMC update written in plain torch
  (hand-written log joint, autograd, same shapes, chains, dtype and threads),
  so the ratio is the cost of the modeling language and the sampler object.

The committed results were measured with this BNN's earlier module
(`models/bnn_uci.py`, float64; the same model, sampler and settings), at the
commit they name. `benchmarks.bayesian_zoo --parts bnn` has all nine sets.
"""
import argparse
import math
import statistics
import time
from pathlib import Path

import torch

import inference
from benchmarks._report import is_quick, write_report
from models.bayesian import bnn
from models.data.uci import load_uci, uci_n_splits

NAME = "sghmc_bnn_uci"
RESULTS = Path(__file__).resolve().parent / "results" / f"{NAME}.json"

# (rmse, se), (log-likelihood, se) as reported in the papers' tables.
PUBLISHED = {
    "bostonHousing": {"PBP": ((3.01, 0.18), (-2.57, 0.09)),
                      "MC dropout": ((2.97, 0.19), (-2.46, 0.06))},
    "concrete": {"PBP": ((5.67, 0.09), (-3.16, 0.02)),
                 "MC dropout": ((5.23, 0.12), (-3.04, 0.02))},
    "yacht": {"PBP": ((1.02, 0.05), (-1.63, 0.02)),
              "MC dropout": ((1.11, 0.09), (-1.55, 0.03))},
}


def mean_predictor(dataset, split):
    """Test RMSE and log-likelihood of N(train mean, train sd): the trivial baseline."""
    data = load_uci(dataset, split, dtype=torch.float64)
    mean, std = data.y_train.mean(), data.y_train.std()
    rmse = float(((data.y_test - mean) ** 2).mean().sqrt())
    log_lik = float(torch.distributions.Normal(mean, std).log_prob(data.y_test).mean())
    return {"split": split, "rmse": rmse, "log_likelihood": log_lik}


def _summarize(results):
    """{"rmse": {"mean", "se"}, "log_likelihood": {...}} over splits."""
    out = {}
    for key in ("rmse", "log_likelihood"):
        values = [r[key] for r in results]
        se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
        out[key] = {"mean": statistics.fmean(values), "se": se}
    return out


def quality_row(dataset, n_splits, epochs, burn_in):
    ours, baseline = [], []
    for split in range(n_splits):
        result = bnn.run_split(dataset, split, "sghmc", epochs=epochs, burn_in=burn_in,
                               thin_epochs=5, batch_size=32, seed=0)
        ours.append({"split": split, "rmse": result["test_rmse"],
                     "log_likelihood": result["test_loglik"]})
        baseline.append(mean_predictor(dataset, split))
        print(f"  {dataset} split {split}: RMSE {ours[-1]['rmse']:.3f} "
              f"LL {ours[-1]['log_likelihood']:.3f}", flush=True)
    mine, base = _summarize(ours), _summarize(baseline)
    return {"case": f"{dataset} quality ({n_splits} splits, {epochs} epochs)",
            "baseline": "predict the training mean",
            "rmse": mine["rmse"], "log_likelihood": mine["log_likelihood"],
            "baseline_rmse": base["rmse"], "baseline_log_likelihood": base["log_likelihood"],
            "ratio": mine["rmse"]["mean"] / base["rmse"]["mean"],
            "published": {k: {"rmse": v[0], "log_likelihood": v[1]}
                          for k, v in PUBLISHED.get(dataset, {}).items()},
            "splits": ours}


def _plain_step(weights, momentum, x, y, lam, tau, scale, lr, friction):
    """One second-order SGHMC step of the same BNN, written directly in torch."""
    half = {k: w + 0.5 * momentum[k] for k, w in weights.items()}
    leaves = {k: w.detach().requires_grad_(True) for k, w in half.items()}
    w0, w1 = leaves["w0"], leaves["w1"]
    d, h = x.shape[-1], w1.shape[-1] - 1
    hidden = torch.relu((x @ w0[..., :-1].transpose(-1, -2) + w0[..., None, :, -1])
                        / math.sqrt(d + 1))
    out = ((hidden @ w1[..., 0, :-1, None]).squeeze(-1) + w1[..., 0, -1:]) / math.sqrt(h + 1)
    log_prior = -0.5 * lam * ((w0 ** 2).sum((-2, -1)) + (w1 ** 2).sum((-2, -1)))
    log_lik = -0.5 * tau[:, None] * (y - out) ** 2
    total = (log_prior + scale * log_lik.sum(-1)).sum()
    grads = dict(zip(leaves, torch.autograd.grad(total, list(leaves.values()))))
    decay, noise = math.exp(-0.5 * friction), math.sqrt(2 * friction * lr)
    new_v = {k: decay * (decay * v + lr * grads[k] + noise * torch.randn_like(v))
             for k, v in momentum.items()}
    return {k: w + 0.5 * new_v[k] for k, w in half.items()}, new_v


def _median_seconds(step, n_steps, repeats):
    for _ in range(20):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n_steps):
            step()
        times.append((time.perf_counter() - start) / n_steps)
    return statistics.median(times), (min(times), max(times))


def speed_row(n_steps, repeats, batch_size=32, n_chains=4, lr=1e-4, friction=0.1):
    data = load_uci("bostonHousing", 0)
    x, y = data.x_train[:batch_size], data.y_train[:batch_size]
    x, y = (x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std()
    n_train, d, h = len(data.x_train), x.shape[1], 50
    scale = n_train / batch_size
    lam, tau = torch.ones(n_chains), torch.ones(n_chains)
    start = {"w0": torch.randn(n_chains, h, d + 1), "w1": torch.randn(n_chains, 1, h + 1)}

    sampler = inference.SGHMC(learning_rate=lr, friction=friction, n_iter_resample_v=None)
    ours = {"latent": dict(start)}

    def ours_step():
        ours["latent"], _ = sampler.sample(bnn.build_bnn(x, [d, h, 1], n_chains),
                                           {"y": y, "lambda": lam, "tau": tau},
                                           ours["latent"], data_scale={"y": scale})

    plain = {"w": dict(start), "v": {k: math.sqrt(lr) * torch.randn_like(v)
                                     for k, v in start.items()}}

    def plain_step():
        plain["w"], plain["v"] = _plain_step(plain["w"], plain["v"], x, y, lam, tau, scale, lr,
                                             friction)

    base_s, base_range = _median_seconds(plain_step, n_steps, repeats)
    ours_s, ours_range = _median_seconds(ours_step, n_steps, repeats)
    return {"case": f"SGHMC step, BNN 13-50-1, batch {batch_size}, {n_chains} chains",
            "baseline": "same update in plain torch", "baseline_s": base_s, "ours_s": ours_s,
            "ratio": ours_s / base_s, "repeats": repeats, "steps_per_repeat": n_steps,
            "baseline_range_s": base_range, "ours_range_s": ours_range}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["bostonHousing"])
    parser.add_argument("--splits", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--burn-in", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="2 splits, 20 epochs, short timing (also when CI=true)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    quick = is_quick(args.quick)
    if quick:
        args.splits, args.epochs, args.burn_in = 2, 20, 10
        timing = (50, 3)
    else:
        timing = (200, 5)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows = []
    for dataset in args.datasets:
        try:
            n_splits = min(args.splits, uci_n_splits(dataset))
        except FileNotFoundError as err:
            print(f"skipping {dataset}: {err}")
            continue
        rows.append(quality_row(dataset, n_splits, args.epochs, args.burn_in))
    try:
        rows.append(speed_row(*timing))
    except FileNotFoundError as err:
        print(f"skipping the speed row: {err}")

    print(f"\n{'case':58s} {'baseline':>22s} {'ours':>22s} {'ratio':>6s}")
    for row in rows:
        if "rmse" in row:
            print(f"{row['case']:58s} {'RMSE %.2f' % row['baseline_rmse']['mean']:>22s} "
                  f"{'RMSE %.3f +- %.3f' % (row['rmse']['mean'], row['rmse']['se']):>22s} "
                  f"{row['ratio']:6.3f}")
            ll = row["log_likelihood"]
            print(f"{'':58s} {'LL %.2f' % row['baseline_log_likelihood']['mean']:>22s} "
                  f"{'LL %.3f +- %.3f' % (ll['mean'], ll['se']):>22s}")
            for name, pub in row["published"].items():
                print(f"{'':58s} {'published ' + name:>22s} "
                      f"RMSE {pub['rmse'][0]:.2f} +- {pub['rmse'][1]:.2f}, "
                      f"LL {pub['log_likelihood'][0]:.2f} +- {pub['log_likelihood'][1]:.2f}")
        else:
            print(f"{row['case']:58s} {'%.2f ms' % (1e3 * row['baseline_s']):>22s} "
                  f"{'%.2f ms' % (1e3 * row['ours_s']):>22s} {row['ratio']:6.2f}")

    settings = {"splits": args.splits, "epochs": args.epochs, "burn_in": args.burn_in}
    return write_report(NAME, __doc__, argv, rows, args.out, quick, settings=settings)


if __name__ == "__main__":
    main()
