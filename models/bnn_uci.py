"""A Bayesian neural net on the UCI regression benchmark, sampled by SGHMC within Gibbs.

    python -m models.bnn_uci --dataset bostonHousing --splits 20

The model (Hernandez-Lobato & Adams, 2015): one hidden layer of 50 ReLU
units, each layer's input divided by sqrt(its fan-in + 1),

    lambda ~ Gamma(6, 6)                      weight precision
    tau    ~ Gamma(6, 6)                      noise precision
    w      ~ N(0, 1 / lambda)                 every weight and bias
    y_i    ~ N(net(x_i; w), 1 / tau)          standardized targets

The weights are moved by SGHMC on minibatches, with the likelihood scaled by
N / B (`data_scale={"y": N / B}`); every epoch the precisions are redrawn
from their conjugate full conditionals by `inference.Gibbs` on the full
training set (as Chen et al., 2014 do for their BNNs). Features and targets
are standardized with the training split's statistics; reported numbers are
in the original units: test RMSE of the posterior predictive mean, and the
test log-likelihood log (1/S) sum_s N(y; net(x; w_s), 1 / tau_s) averaged
over the test points, each as mean +- standard error over the splits.
"""
import argparse
import json
import math
import time

import numpy as np
import torch
from tqdm import tqdm

import inference
import ppl
from models.data.uci import load_uci, uci_n_splits

__all__ = ["bnn", "predict", "weight_conditional", "noise_conditional", "run_split", "main"]

PRIOR_SHAPE, PRIOR_RATE = 6., 6.


def _forward(x, w1, w2):
    """Network outputs [chains, n] for x [n, d], w1 [chains, d + 1, h], w2 [chains, h + 1]."""
    d = x.shape[-1]
    pre = (x @ w1[..., :-1, :] + w1[..., -1:, :]) / math.sqrt(d + 1)
    hidden = torch.relu(pre)
    n_hidden = hidden.shape[-1]
    return ((hidden @ w2[..., :-1, None]).squeeze(-1) + w2[..., -1:]) / math.sqrt(n_hidden + 1)


@ppl.meta_bayesian_net(scope="bnn_uci")
def bnn(x, n_hidden=50, n_chains=1):
    """The BNN for inputs x [n, d]; chains are the leading axis of every latent."""
    bn = ppl.BayesianNet()
    shape = torch.full((n_chains,), PRIOR_SHAPE, dtype=x.dtype)
    rate = torch.full((n_chains,), PRIOR_RATE, dtype=x.dtype)
    lam = bn.gamma("lambda", shape, rate)
    tau = bn.gamma("tau", shape, rate)
    std = lam ** -0.5
    w1 = bn.normal("w1", torch.zeros(n_chains, x.shape[-1] + 1, n_hidden, dtype=x.dtype),
                   std=std[:, None, None], group_ndims=2)
    w2 = bn.normal("w2", torch.zeros(n_chains, n_hidden + 1, dtype=x.dtype),
                   std=std[:, None], group_ndims=1)
    y_mean = bn.deterministic("y_mean", _forward(x, w1, w2))
    bn.normal("y", y_mean, std=tau[:, None] ** -0.5, group_ndims=1)
    return bn


def weight_conditional(values):
    """lambda | w ~ Gamma(a + n_w / 2, b + sum w^2 / 2), per chain."""
    w1, w2 = values["w1"], values["w2"]
    n_weights = w1[0].numel() + w2[0].numel()
    sum_sq = (w1 ** 2).sum((-2, -1)) + (w2 ** 2).sum(-1)
    return ppl.distributions.Gamma(PRIOR_SHAPE + n_weights / 2 + torch.zeros_like(sum_sq),
                                   PRIOR_RATE + sum_sq / 2)


def noise_conditional(x):
    """tau | w, y ~ Gamma(a + N / 2, b + sum (y - net(x))^2 / 2), per chain, on all of x, y."""

    def conditional(values):
        residual = values["y"] - _forward(x, values["w1"], values["w2"])
        sum_sq = (residual ** 2).sum(-1)
        return ppl.distributions.Gamma(PRIOR_SHAPE + residual.shape[-1] / 2
                                       + torch.zeros_like(sum_sq), PRIOR_RATE + sum_sq / 2)

    return conditional


@torch.no_grad()
def predict(samples, x, y, y_mean, y_std):
    """(rmse, mean log-likelihood) in original units from weight/precision samples.

    samples: list of dicts with w1 [chains, ...], w2, tau [chains]; the
    predictive mixes every chain of every sample equally.
    """
    means = torch.cat([_forward(x, s["w1"], s["w2"]) for s in samples]) * y_std + y_mean
    taus = torch.cat([s["tau"] for s in samples])
    pred = means.mean(0)
    rmse = float(((pred - y) ** 2).mean().sqrt())
    scale = y_std / taus.sqrt()
    log_p = torch.distributions.Normal(means, scale[:, None]).log_prob(y)
    log_lik = float((torch.logsumexp(log_p, 0) - math.log(len(means))).mean())
    return rmse, log_lik


def _standardize(train, test):
    mean, std = train.mean(0), train.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (train - mean) / std, (test - mean) / std, mean, std


def run_split(dataset, split, epochs=400, burn_in=200, batch_size=32, learning_rate=1e-4,
              friction=0.1, n_chains=4, thin_epochs=5, seed=0, progress=True, path=None):
    """Train on one split; returns a dict with test rmse and log-likelihood (original units)."""
    torch.manual_seed(seed + split)
    data = load_uci(dataset, split, path=path, dtype=torch.float64)
    x_train, x_test, _, _ = _standardize(data.x_train, data.x_test)
    y_train, _, y_mean, y_std = _standardize(data.y_train, data.y_test)
    n_train, n_hidden = len(x_train), 50
    model = bnn(x_train, n_hidden, n_chains)
    sghmc = inference.SGHMC(learning_rate=learning_rate, friction=friction,
                            n_iter_resample_v=None)
    gibbs = inference.Gibbs(conditionals={"lambda": weight_conditional,
                                          "tau": noise_conditional(x_train)})
    d = x_train.shape[1]
    weights = {"w1": torch.randn(n_chains, d + 1, n_hidden, dtype=torch.float64),
               "w2": torch.randn(n_chains, n_hidden + 1, dtype=torch.float64)}
    precisions = {"lambda": torch.ones(n_chains, dtype=torch.float64),
                  "tau": torch.ones(n_chains, dtype=torch.float64)}
    samples = []
    for epoch in tqdm(range(epochs), desc=f"{dataset} split {split}", disable=not progress,
                      leave=False):
        order = torch.randperm(n_train)
        for start in range(0, n_train - batch_size + 1, batch_size):
            batch = order[start:start + batch_size]
            minibatch = bnn(x_train[batch], n_hidden, n_chains)
            weights, _ = sghmc.sample(minibatch, {"y": y_train[batch], **precisions}, weights,
                                      data_scale={"y": n_train / batch_size})
        precisions, _ = gibbs.sample(model, {"y": y_train, **weights}, precisions)
        if epoch >= burn_in and (epoch - burn_in) % thin_epochs == 0:
            samples.append({**weights, "tau": precisions["tau"]})
    rmse, log_lik = predict(samples, x_test, data.y_test, y_mean, y_std)
    return {"split": split, "rmse": rmse, "log_likelihood": log_lik,
            "n_samples": len(samples) * n_chains}


def summarize(results):
    """Mean and standard error over splits of rmse and log-likelihood."""
    out = {}
    for key in ("rmse", "log_likelihood"):
        values = np.array([r[key] for r in results])
        se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
        out[key] = {"mean": float(values.mean()), "se": float(se)}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="bostonHousing")
    parser.add_argument("--splits", type=int, default=20, help="use splits 0..splits-1")
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--burn-in", type=int, default=200, help="epochs before collecting")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--friction", type=float, default=0.1)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--thin-epochs", type=int, default=5,
                        help="collect one sample per chain every this many epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (tensors are small: more threads only add overhead)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n_splits = min(args.splits, uci_n_splits(args.dataset))
    results, start = [], time.time()
    for split in range(n_splits):
        result = run_split(args.dataset, split, epochs=args.epochs, burn_in=args.burn_in,
                           batch_size=args.batch_size, learning_rate=args.learning_rate,
                           friction=args.friction, n_chains=args.chains,
                           thin_epochs=args.thin_epochs, seed=args.seed,
                           progress=not args.no_progress)
        results.append(result)
        print(f"split {split:2d}: test RMSE {result['rmse']:.3f}  "
              f"test LL {result['log_likelihood']:.3f}", flush=True)
    summary = summarize(results)
    print(f"{args.dataset}, {n_splits} splits: "
          f"test RMSE {summary['rmse']['mean']:.3f} +- {summary['rmse']['se']:.3f}, "
          f"test LL {summary['log_likelihood']['mean']:.3f} +- "
          f"{summary['log_likelihood']['se']:.3f}  ({time.time() - start:.0f} s)")
    report = {"dataset": args.dataset, "settings": vars(args), "summary": summary,
              "splits": results, "seconds": time.time() - start}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
