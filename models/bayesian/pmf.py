"""Bayesian probabilistic matrix factorization by HMC within Gibbs (ZhuSuan's `pmf_hmc`).

    python -m models.bayesian.pmf --split 1            # one MovieLens 100K split
    python -m models.bayesian.pmf                      # all five: mean +- standard error

The model (Salakhutdinov & Mnih 2008, with per-factor precisions and biases):

    lambda_u[d], lambda_v[d], lambda_b ~ Gamma(1, 1)       prior precisions
    tau                                ~ Gamma(1, 1)       noise precision
    u[i, d] ~ N(0, 1 / lambda_u[d])     v[j, d] ~ N(0, 1 / lambda_v[d])
    b_u[i], b_v[j] ~ N(0, 1 / lambda_b)
    r[i, j] ~ N(mean + b_u[i] + b_v[j] + u[i] . v[j], 1 / tau)

where `mean` is the training ratings' mean. The factors and biases move together by
`inference.HMC` (20 leapfrog steps, the step size adapted during burn-in), and the four
precisions are redrawn from their conjugate Gamma conditionals by `inference.Gibbs`,
one sweep per iteration. ZhuSuan's example instead fixes the precisions and passes
the dot product through a sigmoid of ratings scaled to [0, 1]; the Gaussian,
conjugate form here is the original BPMF's. Predictions are the posterior mean of
the rating over the kept samples, clipped to [1, 5]; `test_rmse` is their RMSE.

Python use:

    model = PMF(n_users, n_items, n_factors=10).fit(pairs, ratings)   # pairs [n, 2]
    model.predict(pairs_test)              # posterior-mean ratings [n] in [1, 5]
    model.recommend(user, k=10)            # (items, predicted ratings), unrated first
"""
import math

import numpy as np
import torch
from tqdm import tqdm

import inference
import ppl
from models import zoo
from models.data.movielens import N_SPLITS, load_movielens

__all__ = ["pmf", "PMF", "check_ratings", "precision_conditionals", "main"]

PRIOR_SHAPE, PRIOR_RATE = 1., 1.
RATING_RANGE = (1., 5.)


@ppl.meta_bayesian_net(scope="pmf")
def pmf(n_users, n_items, n_factors, pairs, mean):
    """BPMF for the observed (user, item) `pairs` [n, 2]; one chain (leading axis 1)."""
    bn = ppl.BayesianNet()
    ones = torch.ones(1, n_factors, dtype=torch.float64)
    lambda_u = bn.gamma("lambda_u", PRIOR_SHAPE * ones, PRIOR_RATE * ones, group_ndims=1)
    lambda_v = bn.gamma("lambda_v", PRIOR_SHAPE * ones, PRIOR_RATE * ones, group_ndims=1)
    lambda_b = bn.gamma("lambda_b", PRIOR_SHAPE * ones[:, 0], PRIOR_RATE * ones[:, 0])
    tau = bn.gamma("tau", PRIOR_SHAPE * ones[:, 0], PRIOR_RATE * ones[:, 0])
    zeros = torch.zeros(1, 1, n_factors, dtype=torch.float64)
    u = bn.normal("u", zeros.expand(1, n_users, n_factors),
                  std=lambda_u[:, None] ** -0.5, group_ndims=2)
    v = bn.normal("v", zeros.expand(1, n_items, n_factors),
                  std=lambda_v[:, None] ** -0.5, group_ndims=2)
    b_u = bn.normal("b_u", zeros[..., 0].expand(1, n_users), std=lambda_b[:, None] ** -0.5,
                    group_ndims=1)
    b_v = bn.normal("b_v", zeros[..., 0].expand(1, n_items), std=lambda_b[:, None] ** -0.5,
                    group_ndims=1)
    users, items = pairs[:, 0], pairs[:, 1]
    r_mean = mean + b_u[:, users] + b_v[:, items] + (u[:, users] * v[:, items]).sum(-1)
    bn.deterministic("r_mean", r_mean)
    bn.normal("r", r_mean, std=tau[:, None] ** -0.5, group_ndims=1)
    return bn


def _predict(values, pairs, mean):
    """Mean rating [chains, n] of `pairs` under one sample `values` (u, v, b_u, b_v)."""
    users, items = pairs[:, 0], pairs[:, 1]
    return (mean + values["b_u"][:, users] + values["b_v"][:, items]
            + (values["u"][:, users] * values["v"][:, items]).sum(-1))


def precision_conditionals(pairs, mean):
    """The full conditionals of the precisions (conjugate Gamma), for `inference.Gibbs`.

    lambda_u[d] | u ~ Gamma(a + n_users / 2, b + sum_i u[i, d]^2 / 2), likewise lambda_v;
    lambda_b | b_u, b_v ~ Gamma(a + (n_users + n_items) / 2, b + sum of squares / 2);
    tau | rest ~ Gamma(a + n / 2, b + sum of squared residuals / 2).
    """

    def factor(name):
        def conditional(values):
            x = values[name]
            return torch.distributions.Gamma(PRIOR_SHAPE + x.shape[1] / 2 + 0 * x[:, 0],
                                             PRIOR_RATE + (x ** 2).sum(1) / 2)
        return conditional

    def bias(values):
        squares = (values["b_u"] ** 2).sum(1) + (values["b_v"] ** 2).sum(1)
        n = values["b_u"].shape[1] + values["b_v"].shape[1]
        return torch.distributions.Gamma(PRIOR_SHAPE + n / 2 + 0 * squares,
                                         PRIOR_RATE + squares / 2)

    def noise(values):
        squares = ((values["r"] - _predict(values, pairs, mean)) ** 2).sum(-1)
        return torch.distributions.Gamma(PRIOR_SHAPE + len(pairs) / 2 + 0 * squares,
                                         PRIOR_RATE + squares / 2)

    return {"lambda_u": factor("u"), "lambda_v": factor("v"), "lambda_b": bias, "tau": noise}


def check_ratings(pairs, ratings, n_users, n_items, name="ratings"):
    """`pairs` [n, 2] int64 and `ratings` [n] float64 tensors, checked; raises ValueError."""
    pairs = torch.as_tensor(np.asarray(pairs), dtype=torch.int64)
    ratings = torch.as_tensor(np.asarray(ratings), dtype=torch.float64)
    if pairs.dim() != 2 or pairs.shape[1] != 2 or ratings.shape != (len(pairs),):
        raise ValueError(f"PMF: `pairs` must be [n, 2] (user, item) and `{name}` [n]; got "
                         f"{tuple(pairs.shape)} and {tuple(ratings.shape)}")
    low, high = RATING_RANGE
    bad = ~((ratings >= low) & (ratings <= high))
    if bad.any():
        raise ValueError(f"PMF: `{name}` must lie in [{low:g}, {high:g}]; "
                         f"{int(bad.sum())} do not, e.g. {ratings[bad][0].item()!r}")
    for column, what, n in ((0, "user", n_users), (1, "item", n_items)):
        ids = pairs[:, column]
        if len(ids) and (ids.min() < 0 or ids.max() >= n):
            raise ValueError(f"PMF: `pairs` {what} indices must be in [0, {n}); got "
                             f"[{int(ids.min())}, {int(ids.max())}]")
    return pairs, ratings


class PMF:
    """Bayesian PMF over `n_users` x `n_items`, fitted by HMC within Gibbs.

    `fit(pairs, ratings)` runs `n_iters` sweeps, the first `burn_in` adapting HMC, and
    keeps `n_keep` samples evenly spaced over the rest; `predict` and `recommend`
    average over them.
    """

    def __init__(self, n_users, n_items, n_factors=10, *, n_leapfrogs=20, seed=0):
        self.n_users, self.n_items, self.n_factors = n_users, n_items, n_factors
        self.n_leapfrogs, self.seed = n_leapfrogs, seed
        self.samples, self.mean, self.rated = [], None, None
        self.acceptance = float("nan")

    def _initial(self, generator):
        def small(*shape):
            return 0.1 * torch.randn(1, *shape, generator=generator, dtype=torch.float64)
        factors = {"u": small(self.n_users, self.n_factors), "v": small(self.n_items,
                                                                         self.n_factors),
                   "b_u": small(self.n_users), "b_v": small(self.n_items)}
        one = torch.ones(1, dtype=torch.float64)
        precisions = {"lambda_u": one.expand(1, self.n_factors).clone(),
                      "lambda_v": one.expand(1, self.n_factors).clone(),
                      "lambda_b": one.clone(), "tau": one.clone()}
        return factors, precisions

    def fit(self, pairs, ratings, n_iters=240, burn_in=80, n_keep=160, progress=True,
            on_sample=None):
        """Sample the posterior given the observed `ratings` [n] in [1, 5] of `pairs` [n, 2].

        The chain starts from small random factors (N(0, 0.1^2)) and unit precisions.
        on_sample: called with each kept sample (a dict of u, v, b_u, b_v), e.g. to
        accumulate test predictions. Returns self.
        """
        if not 0 <= burn_in < n_iters:
            raise ValueError(f"PMF.fit: need 0 <= burn_in < n_iters, got {burn_in}, {n_iters}")
        pairs, ratings = check_ratings(pairs, ratings, self.n_users, self.n_items)
        generator = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        self.mean = float(ratings.mean())
        self.rated = pairs
        model = pmf(self.n_users, self.n_items, self.n_factors, pairs, self.mean)
        hmc = inference.HMC(step_size=1e-3, n_leapfrogs=self.n_leapfrogs, adapt_step_size=True,
                            target_acceptance_rate=0.8)
        gibbs = inference.Gibbs(conditionals=precision_conditionals(pairs, self.mean),
                                continuous_kernel=hmc)
        observed = {"r": ratings[None]}
        factors, precisions = self._initial(generator)
        keep = set(np.linspace(burn_in, n_iters - 1, min(n_keep, n_iters - burn_in))
                   .round().astype(int).tolist())
        self.samples, accepted = [], []
        bar = tqdm(range(n_iters), desc="PMF (HMC within Gibbs)", disable=not progress,
                   leave=False)
        for it in bar:
            hmc.adapt_step_size = it < burn_in
            latent = {**precisions, **factors}
            new, info = gibbs.sample(model, observed, latent)
            precisions = {k: new[k] for k in precisions}
            factors = {k: new[k].detach() for k in factors}
            rate = info["continuous"].acceptance_rate
            if not bool(torch.isfinite(new["u"]).all() and torch.isfinite(new["v"]).all()):
                raise FloatingPointError(f"PMF: HMC produced non-finite factors at iteration "
                                         f"{it} (node u or v)")
            if it >= burn_in:
                accepted.append(float(rate.mean()))
            if it in keep:
                self.samples.append({k: v.clone() for k, v in factors.items()})
                if on_sample is not None:
                    on_sample(self.samples[-1])
            bar.set_postfix(acc=f"{float(rate.mean()):.2f}",
                            noise_std=f"{float(precisions['tau'][0]) ** -0.5:.3f}")
        self.acceptance = float(np.mean(accepted))
        return self

    def predict(self, pairs):
        """Posterior-mean ratings [n] of (user, item) `pairs` [n, 2], clipped to [1, 5]."""
        if not self.samples:
            raise RuntimeError("PMF.predict: call fit() first")
        pairs = torch.as_tensor(np.asarray(pairs), dtype=torch.int64)
        mean = torch.stack([_predict(s, pairs, self.mean)[0] for s in self.samples]).mean(0)
        return mean.clamp(*RATING_RANGE)

    def recommend(self, user, k=10, exclude_rated=True):
        """The `k` items with the highest predicted rating for `user`: (items [k], ratings [k]).

        exclude_rated: leave out the items `user` rated in the training data.
        """
        if not 0 <= user < self.n_users:
            raise ValueError(f"PMF.recommend: `user` must be in [0, {self.n_users}), got {user}")
        items = torch.arange(self.n_items)
        scores = self.predict(torch.stack([torch.full_like(items, user), items], 1))
        if exclude_rated:
            scores[self.rated[self.rated[:, 0] == user, 1]] = -math.inf
        top = torch.topk(scores, k)
        return top.indices, top.values


def run_split(split, args):
    """Fit on split `split`; returns its test RMSE and diagnostics."""
    data = load_movielens(split, path=args.data_path)
    train = zoo.first(data.train, args.train_size)
    train_ratings = zoo.first(data.train_ratings, args.train_size)
    test = torch.as_tensor(zoo.first(data.test, args.test_size))
    test_ratings = torch.as_tensor(zoo.first(data.test_ratings, args.test_size))
    check_ratings(test, test_ratings, data.n_users, data.n_items, name="test ratings")
    model = PMF(data.n_users, data.n_items, args.n_factors, n_leapfrogs=args.n_leapfrogs,
                seed=args.seed + split)
    model.fit(train, train_ratings, n_iters=args.epochs, burn_in=args.burn_in,
              n_keep=args.n_samples, progress=not args.no_progress)
    rmse = float(((model.predict(test) - test_ratings) ** 2).mean().sqrt())
    return {"split": split, "rmse": rmse, "acceptance": model.acceptance}


def main(argv=None):
    parser = zoo.parser("bayesian.pmf", __doc__.split("\n")[0], data="movielens-100k",
                        epochs=240, quick_epochs=30, n_samples=160)
    parser.add_argument("--split", type=int, choices=range(1, N_SPLITS + 1), default=None,
                        help="one of the u1-u5 splits (default: all five, mean +- SE)")
    parser.add_argument("--n-factors", type=zoo.positive_int, default=10)
    parser.add_argument("--burn-in", type=int, default=None,
                        help="adaptation sweeps, not kept (default: a third of --epochs)")
    parser.add_argument("--n-leapfrogs", type=zoo.positive_int, default=20)
    args = parser.parse_args(argv)
    zoo.start(args)
    args.burn_in = args.epochs // 3 if args.burn_in is None else args.burn_in
    args.data_path = None if args.data == "movielens-100k" else args.data
    budget = zoo.Budget()
    splits = [args.split] if args.split else list(range(1, N_SPLITS + 1))
    results = [run_split(s, args) for s in splits]
    rmses = np.array([r["rmse"] for r in results])
    metrics = {"test_rmse": rmses.mean(),
               "test_rmse_se": rmses.std(ddof=1) / math.sqrt(len(rmses)) if len(rmses) > 1
               else 0., "acceptance": np.mean([r["acceptance"] for r in results])}
    metrics.update({f"test_rmse_u{r['split']}": r["rmse"] for r in results})
    for r in results:
        print(f"split u{r['split']}: test RMSE {r['rmse']:.4f} (acceptance "
              f"{r['acceptance']:.2f})")
    print(f"test RMSE {metrics['test_rmse']:.4f} +- {metrics['test_rmse_se']:.4f}")
    return zoo.write_metrics(args.out, metrics, budget.as_dict(
        args.epochs, splits=splits, n_factors=args.n_factors, burn_in=args.burn_in,
        n_kept=args.n_samples))


if __name__ == "__main__":
    main()
