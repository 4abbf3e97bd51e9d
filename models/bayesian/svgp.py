"""ZhuSuan's sparse variational Gaussian process (SVGP): regression and classification.

    python -m models.bayesian.svgp --data bostonHousing --split 0   # one standard split
    python -m models.bayesian.svgp --data bostonHousing             # all 20, mean +- s.e.

(`--checkpoint FILE` keeps one file per split, FILE.split<K>.)

The model (Titsias 2009; Hensman et al. 2013, 2015), M inducing inputs Z [M, D]
learned with the kernel, in the whitened form (GPyTorch's `VariationalStrategy`
uses it too; ZhuSuan's example puts q on u itself: the same family of q(u),
better conditioned for Adam):

    k(x, x') = s^2 exp(-|(x - x') / l|^2 / 2)         RBF kernel, one length per input (ARD)
    v ~ N(0, I_M),  u = f(Z) = L v,  L L^T = K_ZZ
    f_i | v ~ N(a_i^T v, k_ii - |a_i|^2),  a_i = L^-1 K_Zi
    y_i | f_i ~ N(f_i, sigma^2)        ("gaussian": regression)
              or Bernoulli(Phi(f_i))   ("bernoulli": classification, probit link)

and the guide q(v) = N(m, C C^T), q(f | v) = p(f | v) (so those terms cancel).
The bound maximized is Hensman's

    sum_i E_q(f_i) log p(y_i | f_i) - KL(q(v) || p(v)),
    q(f_i) = N(a_i^T m, k_ii - |a_i|^2 + |C^T a_i|^2),

in closed form for the Gaussian likelihood, by 20-point Gauss-Hermite quadrature
for the Bernoulli one; on a minibatch the sum is scaled by N / B.
`SVGP.model` / `SVGP.guide` are the same model and guide as `ppl` nets, so
`inference.elbo(...).sgvb()` estimates the same bound by sampling (as
ZhuSuan's example does). Regression data are standardized with the training
split's statistics; test RMSE and NLL (negative log predictive density per
point) are in the original units. ZhuSuan reports Boston RMSE 2.90, NLL 2.52.
"""
import math

import numpy as np
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal, kl_divergence
from torch.nn.functional import softplus
from tqdm.auto import tqdm

import inference
import ppl
from models import zoo
from models.data.uci import load_uci, uci_n_splits

__all__ = ["SVGP", "initial_inducing", "fit", "run_split", "main"]

LIKELIHOODS = ("gaussian", "bernoulli")
HERMITE = np.polynomial.hermite.hermgauss(20)  # Gauss-Hermite nodes and weights


class SVGP(nn.Module):
    """A sparse variational GP with inducing inputs `inducing` [M, D] (learned).

    likelihood: "gaussian" (targets y [n] real) or "bernoulli" (y [n] in {0, 1}).
    Kernel, noise and q(v) start where GPyTorch's defaults do: length scales,
    signal and noise variance softplus(0) = 0.69; q(v) = p(v) (m = 0, C = I).
    """

    def __init__(self, inducing, *, likelihood="gaussian", jitter=1e-6):
        super().__init__()
        if not isinstance(inducing, torch.Tensor) or inducing.dim() != 2 \
                or not inducing.is_floating_point():
            raise ValueError(f"SVGP: `inducing` must be a floating-point tensor [M, D], got "
                             f"{getattr(inducing, 'shape', type(inducing).__name__)}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"SVGP: likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        m, d = inducing.shape
        self.likelihood, self.jitter = likelihood, jitter
        self.inducing = nn.Parameter(inducing.detach().clone())
        self.raw_lengthscale = nn.Parameter(inducing.new_zeros(d))
        self.raw_scale = nn.Parameter(inducing.new_zeros(()))
        if likelihood == "gaussian":
            self.raw_noise = nn.Parameter(inducing.new_zeros(()))
        self.q_mean = nn.Parameter(inducing.new_zeros(m))
        self.q_tril_raw = nn.Parameter(math.log(math.e - 1) * torch.eye(m, dtype=inducing.dtype))

    # -- pieces ------------------------------------------------------------
    @property
    def noise_variance(self):
        return softplus(self.raw_noise)

    def kernel(self, a, b):
        """K(a, b) [n_a, n_b] for inputs a [n_a, D], b [n_b, D].

        The squared distances come from |a|^2 + |b|^2 - 2 a b^T (one matrix
        product, as GPyTorch computes them), not from `cdist` and a square: no
        square root forward and back, the cost that grew with n.
        """
        lengthscale = softplus(self.raw_lengthscale)
        a, b = a / lengthscale, b / lengthscale
        norms = a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1)
        sq_dist = torch.addmm(norms, a, b.T, alpha=-2.).clamp_min(0)
        return softplus(self.raw_scale) * torch.exp(-0.5 * sq_dist)

    def check_inputs(self, x):
        """Raise a ValueError unless x is a float tensor [n, D] with the inducing inputs' D."""
        d = self.inducing.shape[1]
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != d:
            raise ValueError(f"SVGP: inputs x must be a tensor [n, {d}] (the inducing inputs "
                             f"have {d} dimensions), got shape "
                             f"{tuple(getattr(x, 'shape', ())) or type(x).__name__}")

    def q_tril(self):
        """C: q(v)'s lower Cholesky factor, its diagonal made positive by softplus."""
        raw = self.q_tril_raw.tril(-1)
        return raw + torch.diag_embed(softplus(self.q_tril_raw.diagonal()))

    def projection(self, x):
        """(a [n, M] = (L^-1 K_Zx)^T, k_xx [n]): f(x)'s regression on v and prior variance."""
        self.check_inputs(x)
        z = self.inducing
        k_zz = self.kernel(z, z) + self.jitter * torch.eye(len(z), dtype=z.dtype)
        chol = torch.linalg.cholesky(k_zz)
        a = torch.linalg.solve_triangular(chol, self.kernel(z, x), upper=False).T
        return a, softplus(self.raw_scale).expand(len(x))

    def marginals(self, x):
        """Mean and variance [n] of q(f(x)) = integral p(f(x) | v) q(v) dv."""
        a, k_xx = self.projection(x)
        mean = a @ self.q_mean
        var = k_xx - a.pow(2).sum(-1) + (a @ self.q_tril()).pow(2).sum(-1)
        return mean, var.clamp_min(self.jitter)

    def kl(self):
        """KL(q(v) || p(v)), p(v) = N(0, I)."""
        q = MultivariateNormal(self.q_mean, scale_tril=self.q_tril())
        p = MultivariateNormal(torch.zeros_like(self.q_mean),
                               scale_tril=torch.eye(len(self.q_mean), dtype=self.q_mean.dtype))
        return kl_divergence(q, p)

    def expected_log_lik(self, x, y):
        """E_q(f_i) log p(y_i | f_i) [n]."""
        mean, var = self.marginals(x)
        if self.likelihood == "gaussian":
            noise = self.noise_variance
            return Normal(mean, noise.sqrt()).log_prob(y) - 0.5 * var / noise
        nodes, weights = (torch.as_tensor(t, dtype=x.dtype) for t in HERMITE)
        f = mean[:, None] + math.sqrt(2.) * var.sqrt()[:, None] * nodes
        sign = (2 * y - 1)[:, None]
        return (torch.special.log_ndtr(sign * f) * weights).sum(-1) / math.sqrt(math.pi)

    def bound(self, x, y, n_total=None):
        """Hensman's lower bound on log p(y) for the batch x [B, D], y [B] of N = n_total."""
        n_total = len(x) if n_total is None else n_total
        return n_total / len(x) * self.expected_log_lik(x, y).sum() - self.kl()

    @torch.no_grad()
    def predict(self, x):
        """Gaussian: predictive mean and variance of y [n]; Bernoulli: p(y = 1) [n]."""
        mean, var = self.marginals(x)
        if self.likelihood == "gaussian":
            return mean, var + self.noise_variance
        return torch.special.ndtr(mean / (1 + var).sqrt())

    # -- the same model and guide as ppl nets ---------------------------------
    def model(self, x, n_particles=None):
        """p(v) p(f | v) p(y | f) for inputs x [n, D]: v [particles, M], f, y [particles, n]."""
        a, k_xx = self.projection(x)
        bn = ppl.BayesianNet()
        v = bn.normal("v", torch.zeros_like(self.q_mean), std=1., group_ndims=1,
                      n_samples=n_particles)
        f = bn.normal("f", v @ a.T, std=(k_xx - a.pow(2).sum(-1)).clamp_min(self.jitter).sqrt(),
                      group_ndims=1)
        if self.likelihood == "gaussian":
            bn.normal("y", f, std=self.noise_variance.sqrt(), group_ndims=1)
        else:
            bn.bernoulli("y", probs=torch.special.ndtr(f), group_ndims=1)
        return bn

    def guide(self, x, n_particles=None):
        """q(v) q(f | v), q(f | v) = p(f | v)."""
        a, k_xx = self.projection(x)
        bn = ppl.BayesianNet()
        v = bn.multivariate_normal_cholesky("v", self.q_mean, self.q_tril(),
                                            n_samples=n_particles)
        bn.normal("f", v @ a.T, std=(k_xx - a.pow(2).sum(-1)).clamp_min(self.jitter).sqrt(),
                  group_ndims=1)
        return bn


def initial_inducing(x, n_inducing, seed=0):
    """`n_inducing` distinct training inputs drawn at random (all of x when fewer)."""
    generator = torch.Generator().manual_seed(seed)
    return x[torch.randperm(len(x), generator=generator)[:n_inducing]].clone()


def fit(svgp, x, y, n_steps, batch_size=5000, lr=0.01, progress=True, checkpoint=None):
    """Maximize the bound with Adam through `inference.Trainer`; returns the bound history.

    One epoch is one pass over the data in minibatches of `batch_size`; with
    batch_size >= N, as ZhuSuan's default on the UCI sets, an epoch is a step.
    """
    n = len(x)

    def step(batch):
        xb, yb = batch
        value = svgp.bound(xb, yb, n) / n
        return -value, value

    def batches(epoch):
        order = torch.randperm(n)
        return [(x[order[i:i + batch_size]], y[order[i:i + batch_size]])
                for i in range(0, n, batch_size)]

    trainer = inference.Trainer({"svgp": svgp}, lambda params: torch.optim.Adam(params, lr=lr),
                                checkpoint_path=checkpoint, progress=progress)
    return trainer.fit(step, batches, n_steps)


def _standardize(train, test):
    mean, std = train.mean(0), train.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (train - mean) / std, (test - mean) / std, mean, std


def regression_metrics(svgp, x_test, y_test, y_mean, y_std):
    """(test RMSE, test NLL per point) in the original units of y."""
    mean, var = svgp.predict(x_test)
    mean, std = mean * y_std + y_mean, var.sqrt() * y_std
    rmse = float((mean - y_test).pow(2).mean().sqrt())
    return rmse, float(-Normal(mean, std).log_prob(y_test).mean())


def run_split(dataset, split, n_steps, n_inducing=100, batch_size=5000, lr=0.01, seed=0,
              progress=True, path=None, train_size=None, test_size=None, checkpoint=None):
    """Fit on one standard UCI split; returns {"split", "rmse", "nll"} (original units)."""
    torch.manual_seed(seed + split)
    data = load_uci(dataset, split, path=path, dtype=torch.float64)
    x_train, x_test = zoo.first(data.x_train, train_size), zoo.first(data.x_test, test_size)
    y_train, y_test = zoo.first(data.y_train, train_size), zoo.first(data.y_test, test_size)
    x_train, x_test, _, _ = _standardize(x_train, x_test)
    y_std_train, _, y_mean, y_std = _standardize(y_train, y_test)
    svgp = SVGP(initial_inducing(x_train, n_inducing, seed + split))
    fit(svgp, x_train, y_std_train, n_steps, batch_size, lr, progress, checkpoint)
    rmse, nll = regression_metrics(svgp, x_test, y_test, y_mean, y_std)
    return {"split": split, "rmse": rmse, "nll": nll}


def main(argv=None):
    """`python -m models.bayesian.svgp ARGV`; returns the metrics written to DIR/metrics.json."""
    parser = zoo.parser("bayesian.svgp", "ZhuSuan's sparse variational GP on a UCI set",
                        data="bostonHousing", epochs=2000, quick_epochs=50)
    parser.add_argument("--split", type=int, default=None,
                        help="one standard split (default: all, as mean +- standard error)")
    parser.add_argument("--n-inducing", type=zoo.positive_int, default=100)
    parser.add_argument("--batch-size", type=zoo.positive_int, default=5000)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args(argv)
    zoo.start(args)
    budget = zoo.Budget()
    splits = [args.split] if args.split is not None else range(uci_n_splits(args.data))
    results = [run_split(args.data, k, args.epochs, args.n_inducing, args.batch_size, args.lr,
                         args.seed, not args.no_progress, train_size=args.train_size,
                         test_size=args.test_size,
                         checkpoint=args.checkpoint and f"{args.checkpoint}.split{k}")
               for k in tqdm(splits, desc="splits", disable=args.no_progress)]
    metrics = {}
    for key in ("rmse", "nll"):
        values = np.array([r[key] for r in results])
        metrics[f"test_{key}"] = values.mean()
        metrics[f"test_{key}_se"] = values.std(ddof=1) / math.sqrt(len(values)) \
            if len(values) > 1 else 0.
    metrics["n_splits"] = len(results)
    return zoo.write_metrics(args.out, metrics, budget.as_dict(args.epochs))


if __name__ == "__main__":
    main()
