"""Bayesian logistic regression by NUTS, variational inference and SGLD, posteriors compared.

    python -m models.bayesian.blr                                # red wine, split 0
    python -m models.bayesian.blr --data concrete --split 3

The seed slides' example on real data: a UCI set of `../shared/data/uci` (or
the folder `--data-path`), its standard 90/10 split `--split`, with the
label y = 1 when the target is at least the training split's median (red
wine, the default: quality >= 6, 53% of the wines). Features are standardized
with the training statistics, and a bias column is added:

    beta ~ N(0, prior_std^2 I)            [D + 1]
    y_i  ~ Bernoulli(logits = x_i^T beta)

Three posteriors of the same model:

- NUTS (`inference.mcmc.run(inference.NUTS(), ...)`, 4 chains, Stan's warm-up),
  the reference;
- VI: a mean-field Normal guide q(beta) fitted by the ELBO's SGVB gradient
  (`inference.elbo(...).sgvb()`, Adam, `inference.Trainer`), then its draws;
- SGLD (`inference.SGLD`): 4 chains on minibatches, the likelihood scaled by
  N / B (`data_scale`), the first half discarded.

Reported (DIR/metrics.json; DIR/posteriors.json holds every coefficient's
mean and sd per method): each method's test error and test log predictive
density (per point, the posterior predictive averaged over draws), and, for
VI and SGLD against NUTS, the largest |mean - mean_NUTS| / sd_NUTS over the
coefficients and the range of sd / sd_NUTS (mean-field VI is known to
shrink the sds of correlated coefficients).
"""
import json
import math
from pathlib import Path

import torch

import inference
import ppl
from models import zoo
from models.data.uci import load_uci

__all__ = ["build_model", "load", "run_nuts", "run_vi", "run_sgld", "predictive", "compare",
           "main"]

METHODS = ("nuts", "vi", "sgld")


@ppl.meta_bayesian_net(scope="blr")
def build_model(x, prior_std=1.):
    """x [n, D] (bias column included); beta [chains, D] broadcasts to y [chains, n]."""
    bn = ppl.BayesianNet()
    beta = bn.normal("beta", x.new_zeros(x.shape[1]), std=prior_std, group_ndims=1)
    bn.bernoulli("y", beta @ x.T, group_ndims=1)
    return bn


def load(data="wine-quality-red", split=0, path=None):
    """(x_train, y_train, x_test, y_test), float64; y = target >= the training median."""
    raw = load_uci(data, split, path=path, dtype=torch.float64)
    mean, std = raw.x_train.mean(0), raw.x_train.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    threshold = raw.y_train.median()

    def design(x):
        x = (x - mean) / std
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)

    return (design(raw.x_train), (raw.y_train >= threshold).double(),
            design(raw.x_test), (raw.y_test >= threshold).double())


def run_nuts(x, y, n_warmup=500, n_samples=500, n_chains=4, prior_std=1., seed=0,
             progress=True, checkpoint=None):
    """NUTS draws [n_chains * n_samples, D] and the run's largest R-hat."""
    result = inference.mcmc.run(inference.NUTS(jit_compile=False), build_model(x, prior_std),
                                {"y": y}, n_chains=n_chains, n_warmup=n_warmup,
                                n_samples=n_samples, progress=progress, seed=seed,
                                checkpoint=checkpoint)
    draws = result.samples["beta"]
    r_hat = float(inference.diagnostics.split_rhat(draws.numpy()).max())
    return draws.reshape(-1, x.shape[1]), r_hat


def run_vi(x, y, n_steps=2000, n_particles=10, lr=0.02, n_draws=2000, prior_std=1.,
           progress=True, checkpoint=None):
    """Draws [n_draws, D] of a mean-field Normal q(beta) fitted by SGVB (full batch)."""
    d = x.shape[1]

    @ppl.reuse_variables(scope="blr_q")
    def guide(n):
        bn = ppl.BayesianNet()
        bn.normal("beta", ppl.param("mean", torch.zeros(d, dtype=x.dtype)),
                  logstd=ppl.param("logstd", torch.full((d,), -2., dtype=x.dtype)),
                  group_ndims=1, n_samples=n)
        return bn

    model = build_model(x, prior_std)

    def step(batch):
        lower_bound = inference.elbo(model, {"y": y}, variational=guide(n_particles), axis=0)
        return lower_bound.sgvb().mean(), lower_bound

    trainer = inference.Trainer({"guide": guide}, lambda p: torch.optim.Adam(p, lr=lr),
                                checkpoint_path=checkpoint, progress=progress)
    trainer.fit(step, [None], n_steps)
    with torch.no_grad():
        return guide(n_draws)["beta"].tensor


def run_sgld(x, y, n_epochs=400, batch_size=100, learning_rate=2e-4, n_chains=4, thin=5,
             prior_std=1., progress=True):
    """SGLD draws [kept, D]: every `thin`-th step of the second half, all chains."""
    from tqdm.auto import tqdm
    n, d = x.shape
    sgld = inference.SGLD(learning_rate)
    beta = 0.1 * torch.randn(n_chains, d, dtype=x.dtype)
    kept, step = [], 0
    for epoch in tqdm(range(n_epochs), desc="SGLD", disable=not progress, leave=False):
        order = torch.randperm(n)
        for start in range(0, n - batch_size + 1, batch_size):
            batch = order[start:start + batch_size]
            samples, _ = sgld.sample(build_model(x[batch], prior_std), {"y": y[batch]},
                                     {"beta": beta}, data_scale={"y": n / batch_size})
            beta = samples["beta"]
            step += 1
            if epoch >= n_epochs // 2 and step % thin == 0:
                kept.append(beta)
    return torch.cat(kept)


@torch.no_grad()
def predictive(draws, x, y):
    """(test error, mean log predictive density) of the draws' posterior predictive."""
    logits = draws @ x.T                                           # [S, n]
    log_p = torch.distributions.Bernoulli(logits=logits).log_prob(y)
    lpd = torch.logsumexp(log_p, 0) - math.log(len(draws))
    p = torch.sigmoid(logits).mean(0)
    return float(((p > 0.5).double() != y).double().mean()), float(lpd.mean())


def compare(draws, reference):
    """Max |mean - mean_ref| / sd_ref and the min and max of sd / sd_ref over coefficients."""
    sd_ref = reference.std(0)
    z = ((draws.mean(0) - reference.mean(0)).abs() / sd_ref)
    ratio = draws.std(0) / sd_ref
    return {"max_mean_diff_sd": float(z.max()), "min_sd_ratio": float(ratio.min()),
            "max_sd_ratio": float(ratio.max())}


def main(argv=None):
    """`python -m models.bayesian.blr ARGV`; returns the metrics written to DIR/metrics.json.

    `--epochs` is SGLD's; NUTS and VI take `--n-samples` draws (NUTS: per chain).
    `--checkpoint FILE`: NUTS and VI resume from FILE.nuts and FILE.vi.
    """
    parser = zoo.parser("bayesian.blr", "Bayesian logistic regression by NUTS, VI and SGLD",
                        data="wine-quality-red", epochs=400, quick_epochs=20, n_samples=500)
    parser.add_argument("--split", type=int, default=0, help="the standard split (default 0)")
    parser.add_argument("--data-path", default=None,
                        help="the data set's own folder (UCI layout) instead of ../shared/data")
    parser.add_argument("--prior-std", type=float, default=1.)
    parser.add_argument("--vi-steps", type=zoo.positive_int, default=None,
                        help="Adam steps for VI (default 2000; 200 under CI=true)")
    args = parser.parse_args(argv)
    zoo.start(args)
    quick = zoo.quick_mode()
    vi_steps = args.vi_steps or (200 if quick else 2000)
    progress = not args.no_progress
    budget = zoo.Budget()
    x, y, x_test, y_test = load(args.data, args.split, args.data_path)
    x, y = zoo.first(x, args.train_size), zoo.first(y, args.train_size)
    x_test, y_test = zoo.first(x_test, args.test_size), zoo.first(y_test, args.test_size)
    draws, seconds = {}, {}
    timer = zoo.Budget()
    draws["nuts"], r_hat = run_nuts(x, y, args.n_samples, args.n_samples,
                                    prior_std=args.prior_std, seed=args.seed, progress=progress,
                                    checkpoint=args.checkpoint and f"{args.checkpoint}.nuts")
    seconds["nuts"] = timer.as_dict(None)["cpu_seconds"]
    timer = zoo.Budget()
    draws["vi"] = run_vi(x, y, vi_steps, prior_std=args.prior_std, progress=progress,
                         checkpoint=args.checkpoint and f"{args.checkpoint}.vi")
    seconds["vi"] = timer.as_dict(None)["cpu_seconds"]
    timer = zoo.Budget()
    draws["sgld"] = run_sgld(x, y, args.epochs, prior_std=args.prior_std, progress=progress)
    seconds["sgld"] = timer.as_dict(None)["cpu_seconds"]
    metrics = {"nuts_max_r_hat": r_hat}
    for method in METHODS:
        metrics[f"test_error_{method}"], metrics[f"test_loglik_{method}"] = \
            predictive(draws[method], x_test, y_test)
        metrics[f"cpu_seconds_{method}"] = seconds[method]
        if method != "nuts":
            for key, value in compare(draws[method], draws["nuts"]).items():
                metrics[f"{key}_{method}"] = value
    posteriors = {m: {"mean": draws[m].mean(0).tolist(), "sd": draws[m].std(0).tolist(),
                      "n_draws": len(draws[m])} for m in METHODS}
    Path(args.out, "posteriors.json").write_text(json.dumps(posteriors, indent=1))
    return zoo.write_metrics(args.out, metrics, budget.as_dict(args.epochs))


if __name__ == "__main__":
    main()
