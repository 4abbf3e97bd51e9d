"""ZhuSuan's Bayesian neural net (`bnn_vi`, `bnn_sgmcmc`) on the UCI regression benchmark.

    python -m models.bayesian.bnn --data bostonHousing --inference vi        # all 20 splits
    python -m models.bayesian.bnn --data concrete --split 3 --inference sghmc

The model (one hidden layer of 50 ReLU units, each layer's input with a 1
appended and divided by sqrt(its fan-in + 1), as ZhuSuan's `build_bnn`; the
weight precision's Gamma(6, 6) prior is PBP's, Hernandez-Lobato & Adams 2015):

    lambda ~ Gamma(6, 6)                  weight precision            [P]
    tau    ~ Gamma(1, 0.01)               noise precision             [P]
    w_i    ~ N(0, 1 / lambda)             layer i, [n_out, n_in + 1]  [P, n_out, n_in + 1]
    y      ~ N(net(x; w), 1 / tau)        standardized targets        [P, n]

The noise prior is weak on purpose: PBP's Gamma(6, 6) there holds the noise
sd of standardized targets near 1 and, on the low-noise sets (energy, yacht,
naval), caps how well any posterior can fit (with N = 691 energy points it
keeps E[tau] near 50 where the residuals want about 600).

P is the particle (VI) or chain (SG-MCMC) axis. ZhuSuan's examples fix the
weight prior (N(0, 1)) and fit the noise scale (`y_logstd`) or the prior
scales by point estimates; here both precisions are nodes:

- `vi`: lambda observed at 1 (ZhuSuan's N(0, 1) weight prior; `fit(...,
  weight_precision=None)` learns it instead, which lets mean-field VI prune
  more hidden units and predicts worse), a mean-field guide,
  q(w_i) = N(mu, sigma^2) per weight and q(tau) (and q(lambda) if learnt)
  LogNormal, trained by `elbo(...).sgvb()` with Adam
  (ZhuSuan's `bnn_vi`: 10 particles, learning rate 0.01), the minibatch
  likelihood scaled by N / B in the model's `log_joint` (ZhuSuan's
  `log_pws + N * mean(log_py_xw)`).
- `sgld`, `sghmc`, `psgld`, `sgnht`: the weights moved by the sampler of
  `inference.sgmcmc` on minibatches (`data_scale={"y": N / B}`), several
  chains at once; after every epoch the precisions are redrawn from their
  conjugate full conditionals by `inference.Gibbs` on the full training set
  (as Chen et al. 2014 do for their BNNs; ZhuSuan's `bnn_sgmcmc` takes point
  estimates of the prior scales there). Samples are kept every few epochs
  after burn-in.

Features and targets are standardized with the training split's statistics.
Metrics (original units, `DIR/metrics.json`): `test_rmse` of the predictive
mean and `test_loglik`, the mean over test points of
log (1/S) sum_s N(y; net(x; w_s), 1 / tau_s), each with its standard error
over splits (`test_rmse_se`, `test_loglik_se`; 0 for one split).

Python use (the tutorial's 1-D plot):

    posterior = fit(x_train, y_train, inference="vi", epochs=200)   # x [n, d], y [n]
    mean, std = posterior.predictive(x_grid)       # [m], [m]: predictive mean and sd
    posterior.evaluate(x_test, y_test)             # {"test_rmse": ..., "test_loglik": ...}
"""
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

import inference
import ppl
from models import zoo
from models.data.uci import UCI_DATASETS, load_uci, uci_n_splits

__all__ = ["INFERENCES", "SETTINGS", "Setting", "default_epochs", "build_bnn",
           "build_mean_field_variational", "new_variational",
           "weight_conditional", "noise_conditional", "BNNPosterior", "fit", "run_split",
           "summarize", "main"]

PRIOR_SHAPE, PRIOR_RATE = 6., 6.    # weight precision lambda (PBP's)
NOISE_SHAPE, NOISE_RATE = 1., 0.01  # noise precision tau: weak (mean 100, shape 1)
INFERENCES = ("vi", "sgld", "sghmc", "psgld", "sgnht")


class Setting(NamedTuple):
    """Per data set: epochs of VI and of SG-MCMC, minibatch size, SG-MCMC step multiplier."""

    vi_epochs: int
    sgmcmc_epochs: int
    batch_size: int
    step_scale: float = 1.


# About 2,300 minibatch steps each (more for SG-MCMC on power, for VI on protein), so a
# split costs seconds (small sets) to under a minute (protein) of CPU. The step multiplier
# was chosen on splits 0-1: kin8nm, power and protein mix too slowly at 1 (larger sets, same
# number of steps); naval diverges at 2.
SETTINGS = {"bostonHousing": Setting(150, 150, 32), "concrete": Setting(80, 80, 32, 2.),
            "energy": Setting(100, 100, 32), "yacht": Setting(250, 250, 32),
            "wine-quality-red": Setting(100, 100, 64), "kin8nm": Setting(40, 40, 128, 4.),
            "naval-propulsion-plant": Setting(30, 30, 128),
            "power-plant": Setting(35, 70, 128, 4.),
            "protein-tertiary-structure": Setting(45, 30, 256, 4.)}
DEFAULT_SETTING = Setting(100, 100, 32)  # for a data set not in SETTINGS

# SG-MCMC samplers for the N/B-scaled log joint, by training-set size N and a step multiplier:
# the gradient grows with N, so the step sizes shrink as 1 / N (Boston: SGHMC's 1e-4 at N = 455).
SAMPLERS = {"sgld": lambda n, scale=1.: inference.SGLD(learning_rate=scale * 0.02 / n),
            "sghmc": lambda n, scale=1.: inference.SGHMC(learning_rate=scale * 0.05 / n,
                                                         friction=0.1, n_iter_resample_v=None),
            "psgld": lambda n, scale=1.: inference.PSGLD(learning_rate=scale * 1e-4),
            "sgnht": lambda n, scale=1.: inference.SGNHT(learning_rate=scale * 0.05 / n,
                                                         variance_extra=0., tune_rate=1.)}


def _forward(x, weights):
    """Network outputs [P, n] for x [n, d] and weights w_i [P, n_out, n_in + 1]."""
    h = x.expand(weights[0].shape[0], *x.shape)
    for i, w in enumerate(weights):
        h = torch.cat([h, torch.ones_like(h[..., :1])], -1)
        h = h @ w.transpose(-1, -2) / math.sqrt(h.shape[-1])
        if i < len(weights) - 1:
            h = torch.relu(h)
    return h.squeeze(-1)


def _weight_names(layer_sizes):
    return [f"w{i}" for i in range(len(layer_sizes) - 1)]


@ppl.meta_bayesian_net(scope="bnn")
def build_bnn(x, layer_sizes, n_particles=1):
    """The BNN for inputs x [n, d]: nodes lambda, tau [P], w0.. [P, n_out, n_in + 1], y [P, n]."""
    bn = ppl.BayesianNet()
    prior = torch.full((n_particles,), PRIOR_SHAPE, dtype=x.dtype)
    lam = bn.gamma("lambda", prior, PRIOR_RATE + torch.zeros_like(prior))
    tau = bn.gamma("tau", NOISE_SHAPE + torch.zeros_like(prior),
                   NOISE_RATE + torch.zeros_like(prior))
    weights = []
    for name, n_in, n_out in zip(_weight_names(layer_sizes), layer_sizes[:-1], layer_sizes[1:]):
        weights.append(bn.normal(name, torch.zeros(n_particles, n_out, n_in + 1, dtype=x.dtype),
                                 std=lam.rsqrt()[:, None, None], group_ndims=2))
    y_mean = bn.deterministic("y_mean", _forward(x, weights))
    bn.normal("y", y_mean, std=tau.rsqrt()[:, None], group_ndims=1)
    return bn


def _minibatch_log_joint(n_train):
    """ZhuSuan's BNN log joint: the priors + N / B * log p(y_batch | ...), per particle."""

    def log_joint(bn):
        log_prior = sum(bn.cond_log_prob([n for n in bn.stochastic_nodes if n != "y"]))
        return log_prior + n_train / bn["y"].shape[-1] * bn.cond_log_prob("y")

    return log_joint


def _mean_field(layer_sizes, n_particles, learn_weight_precision=True):
    """q(w_i) Normal per weight, q(tau) (and q(lambda) if learnt) LogNormal, as `build_bnn`."""
    bn = ppl.BayesianNet()
    for name in ("lambda", "tau")[not learn_weight_precision:]:
        mean = ppl.param(f"{name}_mean", torch.zeros(()))
        logstd = ppl.param(f"{name}_logstd", torch.full((), -2.))
        bn.log_normal(name, mean.expand(n_particles), logstd=logstd.expand(n_particles))
    for name, n_in, n_out in zip(_weight_names(layer_sizes), layer_sizes[:-1], layer_sizes[1:]):
        mean = ppl.param(f"{name}_mean", lambda: torch.randn(n_out, n_in + 1))
        logstd = ppl.param(f"{name}_logstd", torch.full((n_out, n_in + 1), -3.))
        bn.normal(name, mean, logstd=logstd, group_ndims=2, n_samples=n_particles)
    return bn


build_mean_field_variational = ppl.reuse_variables(scope="variational")(_mean_field)


def new_variational():
    """A fresh, untrained copy of `build_mean_field_variational` (templates own parameters)."""
    return ppl.reuse_variables(scope="variational")(_mean_field)


def weight_conditional(values):
    """lambda | w ~ Gamma(a + n_w / 2, b + sum w^2 / 2), per chain."""
    ws = [v for k, v in values.items() if k.startswith("w")]
    n_weights = sum(w[0].numel() for w in ws)
    sum_sq = sum((w ** 2).sum((-2, -1)) for w in ws)
    return ppl.distributions.Gamma(PRIOR_SHAPE + n_weights / 2 + torch.zeros_like(sum_sq),
                                   PRIOR_RATE + sum_sq / 2)


def noise_conditional(x):
    """tau | w, y ~ Gamma(a + N / 2, b + sum (y - net(x))^2 / 2), per chain, on all of x, y."""

    def conditional(values):
        ws = [values[k] for k in sorted(values) if k.startswith("w")]
        residual = values["y"] - _forward(x, ws)
        sum_sq = (residual ** 2).sum(-1)
        return ppl.distributions.Gamma(NOISE_SHAPE + residual.shape[-1] / 2
                                       + torch.zeros_like(sum_sq), NOISE_RATE + sum_sq / 2)

    return conditional


@dataclass
class BNNPosterior:
    """Posterior samples of a fitted BNN and the standardization they were fitted under.

    weights: w_i [S, n_out, n_in + 1]; tau [S] (standardized units); x_mean,
    x_std [d]; y_mean, y_std: scalars. Methods take and return original units.
    """

    weights: list
    tau: torch.Tensor
    x_mean: torch.Tensor
    x_std: torch.Tensor
    y_mean: torch.Tensor
    y_std: torch.Tensor

    @torch.no_grad()
    def predict(self, x):
        """(means [S, n], noise sd [S]): each sample's network output and noise scale."""
        x = _as_inputs(x, len(self.x_mean)).to(self.tau.dtype)
        means = _forward((x - self.x_mean) / self.x_std, self.weights) * self.y_std + self.y_mean
        return means, self.y_std / self.tau.sqrt()

    def predictive(self, x):
        """The predictive mean [n] and standard deviation [n] (mixture of the samples)."""
        means, noise = self.predict(x)
        mean = means.mean(0)
        var = (means ** 2 + noise[:, None] ** 2).mean(0) - mean ** 2
        return mean, var.clamp_min(0).sqrt()

    def evaluate(self, x, y):
        """{"test_rmse", "test_loglik"}: RMSE of the predictive mean, mean log predictive."""
        means, noise = self.predict(x)
        y = torch.as_tensor(y, dtype=means.dtype)
        rmse = float(((means.mean(0) - y) ** 2).mean().sqrt())
        log_p = torch.distributions.Normal(means, noise[:, None]).log_prob(y)
        log_lik = float((torch.logsumexp(log_p, 0) - math.log(len(means))).mean())
        return {"test_rmse": rmse, "test_loglik": log_lik}


def _as_inputs(x, d=None):
    x = torch.as_tensor(x)
    if x.dim() == 1 and d == 1:
        x = x[:, None]
    if x.dim() != 2 or not x.is_floating_point() or (d is not None and x.shape[1] != d):
        want = f"[n, {d}]" if d is not None else "[n, d]"
        raise ValueError(f"x: expected a floating-point array of shape {want}, got "
                         f"{x.dtype} of shape {tuple(x.shape)}")
    return x


def _standardize(train, axis=0):
    mean, std = train.mean(axis), train.std(axis)
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def _fit_vi(x, y, layer_sizes, epochs, batch_size, learning_rate, n_particles, n_samples,
            weight_precision, progress):
    n_train = len(x)
    model = ppl.meta_bayesian_net(scope="bnn", log_joint=_minibatch_log_joint(n_train))(
        build_bnn.fn)
    variational = new_variational()
    learnt = weight_precision is None
    observed = {} if learnt else {"lambda": torch.full((n_particles,), float(weight_precision))}

    def step(batch):
        xb, yb = batch
        lower_bound = inference.elbo(model(xb, layer_sizes, n_particles), {"y": yb, **observed},
                                     variational=variational(layer_sizes, n_particles, learnt),
                                     axis=0)
        return lower_bound.sgvb(), lower_bound / n_train

    def batches(epoch):
        order = torch.randperm(n_train)
        return [(x[order[i:i + batch_size]], y[order[i:i + batch_size]])
                for i in range(0, n_train, batch_size)]

    trainer = inference.Trainer({"variational": variational},
                                lambda params: torch.optim.Adam(params, lr=learning_rate),
                                progress=False)
    for epoch in tqdm(range(epochs), desc="VI", disable=not progress, leave=False):
        trainer.fit(step, batches, epoch + 1)
    with torch.no_grad():
        bn = variational(layer_sizes, n_samples, learnt)
        return [bn[n] for n in _weight_names(layer_sizes)], bn["tau"]


def _fit_sgmcmc(x, y, layer_sizes, method, epochs, batch_size, n_chains, burn_in,
                thin_epochs, step_scale, progress):
    n_train, names = len(x), _weight_names(layer_sizes)
    sampler = SAMPLERS[method](n_train, step_scale)
    gibbs = inference.Gibbs(conditionals={"lambda": weight_conditional,
                                          "tau": noise_conditional(x)})
    weights = {name: torch.randn(n_chains, n_out, n_in + 1, dtype=x.dtype)
               for name, n_in, n_out in zip(names, layer_sizes[:-1], layer_sizes[1:])}
    precisions = {"lambda": torch.ones(n_chains, dtype=x.dtype),
                  "tau": torch.ones(n_chains, dtype=x.dtype)}
    full = build_bnn(x, layer_sizes, n_chains)
    kept = []
    for epoch in tqdm(range(epochs), desc=method, disable=not progress, leave=False):
        order = torch.randperm(n_train)
        for start in range(0, n_train - batch_size + 1, batch_size):
            batch = order[start:start + batch_size]
            weights, _ = sampler.sample(build_bnn(x[batch], layer_sizes, n_chains),
                                        {"y": y[batch], **precisions}, weights,
                                        data_scale={"y": n_train / batch_size})
        precisions, _ = gibbs.sample(full, {"y": y, **weights}, precisions)
        if epoch >= burn_in and (epoch - burn_in) % thin_epochs == 0:
            kept.append(({**weights}, precisions["tau"]))
    if not kept:
        raise ValueError(f"no samples kept: epochs={epochs} must exceed burn_in={burn_in}")
    return ([torch.cat([w[n] for w, _ in kept]) for n in names],
            torch.cat([tau for _, tau in kept]))


def fit(x_train, y_train, inference="vi", *, hidden=50, epochs=100, batch_size=32,
        learning_rate=0.01, n_particles=10, n_samples=1000, n_chains=4, burn_in=None,
        thin_epochs=None, step_scale=1., weight_precision=1., progress=True):
    """Fit the BNN to x_train [n, d] (or [n] for d = 1), y_train [n]; returns a `BNNPosterior`.

    `inference`: one of `INFERENCES`. VI: `learning_rate` (Adam), `n_particles`
    per step, `n_samples` drawn from q at the end, the weight precision lambda
    observed at `weight_precision` (ZhuSuan's `bnn_vi`: N(0, 1) weights) or, if
    None, learnt with q(lambda); a learnt lambda lets mean-field VI prune more
    hidden units. SG-MCMC: `n_chains` chains,
    the first `burn_in` epochs dropped (default: half), then one sample per
    chain every `thin_epochs` epochs (default: about 50 samples per chain), the
    sampler's step size (`SAMPLERS`) multiplied by `step_scale`.
    Data are standardized inside; the posterior predicts in original units.
    Seed torch first for a reproducible fit.
    """
    if inference not in INFERENCES:
        raise ValueError(f"inference: expected one of {INFERENCES}, got {inference!r}")
    x = _as_inputs(x_train).to(torch.float32)
    y = torch.as_tensor(y_train, dtype=torch.float32)
    if y.shape != (len(x),):
        raise ValueError(f"y_train: expected shape ({len(x)},) to match x_train, got "
                         f"{tuple(y.shape)}")
    batch_size = min(batch_size, len(x))
    x_mean, x_std = _standardize(x)
    y_mean, y_std = _standardize(y)
    xs, ys = (x - x_mean) / x_std, (y - y_mean) / y_std
    layer_sizes = [x.shape[1], hidden, 1]
    if inference == "vi":
        weights, tau = _fit_vi(xs, ys, layer_sizes, epochs, batch_size, learning_rate,
                               n_particles, n_samples, weight_precision, progress)
    else:
        burn_in = epochs // 2 if burn_in is None else burn_in
        thin = thin_epochs or max(1, (epochs - burn_in) // 50)
        weights, tau = _fit_sgmcmc(xs, ys, layer_sizes, inference, epochs, batch_size,
                                   n_chains, burn_in, thin, step_scale, progress)
    return BNNPosterior(weights, tau, x_mean, x_std, y_mean, y_std)


def run_split(data, split, inference="vi", *, epochs=None, batch_size=None, path=None,
              train_size=None, test_size=None, seed=1234, progress=True, **kwargs):
    """Fit on split `split` of UCI set `data`; returns {"split", "test_rmse", "test_loglik"}."""
    if inference not in INFERENCES:
        raise ValueError(f"inference: expected one of {INFERENCES}, got {inference!r}")
    torch.manual_seed(seed + split)
    uci = load_uci(data, split, path=path, dtype=torch.float64)
    setting = SETTINGS.get(data, DEFAULT_SETTING)
    if inference != "vi":
        kwargs.setdefault("step_scale", setting.step_scale)
    posterior = fit(zoo.first(uci.x_train, train_size), zoo.first(uci.y_train, train_size),
                    inference, epochs=epochs or default_epochs(data, inference),
                    batch_size=batch_size or setting.batch_size, progress=progress, **kwargs)
    metrics = posterior.evaluate(zoo.first(uci.x_test, test_size),
                                 zoo.first(uci.y_test, test_size))
    return {"split": split, **metrics}


def default_epochs(data, inference):
    """The epochs `SETTINGS` gives UCI set `data` for `inference` (VI or SG-MCMC)."""
    setting = SETTINGS.get(data, DEFAULT_SETTING)
    return setting.vi_epochs if inference == "vi" else setting.sgmcmc_epochs


def summarize(results):
    """{metric: mean over splits, metric_se: standard error (0 for one split)}."""
    out = {}
    for key in ("test_rmse", "test_loglik"):
        values = np.array([r[key] for r in results])
        out[key] = float(values.mean())
        out[f"{key}_se"] = (float(values.std(ddof=1) / math.sqrt(len(values)))
                            if len(values) > 1 else 0.)
    return out


def main(argv=None):
    """`python -m models.bayesian.bnn ARGV`; returns the metrics written to DIR/metrics.json."""
    parser = zoo.parser("bayesian.bnn", "ZhuSuan's Bayesian neural net on a UCI regression set",
                        data="bostonHousing", epochs=None, quick_epochs=5)
    parser.add_argument("--split", type=int, default=None,
                        help="one standard split (default: all, as mean +- standard error)")
    parser.add_argument("--inference", default="vi", choices=INFERENCES)
    parser.add_argument("--batch-size", type=zoo.positive_int, default=None,
                        help="minibatch size (default: per data set, see SETTINGS)")
    parser.add_argument("--hidden", type=zoo.positive_int, default=50)
    args = parser.parse_args(argv)
    if args.data not in UCI_DATASETS:
        parser.error(f"--data: unknown UCI data set {args.data!r}; expected one of "
                     f"{', '.join(UCI_DATASETS)}")
    n_splits = uci_n_splits(args.data)
    if n_splits == 0:
        parser.error(f"--data {args.data}: no splits found (is the data folder there?)")
    if args.split is not None and not 0 <= args.split < n_splits:
        parser.error(f"--split: {args.data} has splits 0..{n_splits - 1}, got {args.split}")
    zoo.start(args)
    epochs = args.epochs or default_epochs(args.data, args.inference)
    budget = zoo.Budget()
    splits = range(n_splits) if args.split is None else [args.split]
    results = []
    for split in tqdm(splits, desc=f"{args.data} splits", disable=args.no_progress):
        results.append(run_split(args.data, split, args.inference, epochs=epochs,
                                 batch_size=args.batch_size, hidden=args.hidden,
                                 train_size=args.train_size, test_size=args.test_size,
                                 seed=args.seed, progress=not args.no_progress))
        print(f"split {split}: test RMSE {results[-1]['test_rmse']:.3f}  "
              f"test LL {results[-1]['test_loglik']:.3f}", flush=True)
    metrics = summarize(results)
    print(f"{args.data} ({args.inference}, {len(results)} splits): test RMSE "
          f"{metrics['test_rmse']:.3f} +- {metrics['test_rmse_se']:.3f}, test LL "
          f"{metrics['test_loglik']:.3f} +- {metrics['test_loglik_se']:.3f}")
    return zoo.write_metrics(args.out, metrics,
                             budget.as_dict(epochs, inference=args.inference,
                                            splits=len(results)))


if __name__ == "__main__":
    main()
