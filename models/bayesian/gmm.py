"""A Gaussian mixture with a discrete assignment node: Gibbs for the assignments, HMC for the rest.

    python -m models.bayesian.gmm                        # MNIST 0/1/7 on 2 principal components
    python -m models.bayesian.gmm --digits 3,8 --components 2

Data: the first `--train-size` (default 1000) MNIST training images of
`--digits`, projected on their top `--dims` (default 2) principal components
and standardized; the first `--test-size` (default 1000) test images of the
same digits, projected the same way, are held out. The model, K components:

    pi          ~ Dirichlet(1_K)
    mu_k        ~ N(0, 3^2 I_D)          [K, D]
    log_sigma_k ~ N(0, 1)                [K, D]  (diagonal scales)
    z_i         ~ Categorical(pi)        the discrete assignment node
    x_i         ~ N(mu_{z_i}, diag(exp(log_sigma_{z_i}))^2)

One `inference.Gibbs` sweep draws z from its full conditional, every point at
once (`z_conditional`: p(z_i = k | ...) proportional to pi_k N(x_i; mu_k, sigma_k);
`enumerate_z=True` lets Gibbs find it by enumerating the node's support
instead, the same draw at O(n^2 K) cost instead of O(n K)), pi from its
Dirichlet full conditional (Dirichlet(1 + counts)), then moves mu and
log_sigma together by `inference.HMC` (step size adapted during warm-up);
chains are batched. Metric (DIR/metrics.json): the held-out log predictive
density per test point, log mean_s sum_k pi_k N(x; mu_k, sigma_k) over the kept
draws s (the same whatever the components' labels), in the standardized
projected space; the training points' too.
"""
import argparse
import math

import torch
from tqdm.auto import tqdm

import inference
import ppl
from models import zoo
from models.data.mnist import load_mnist

__all__ = ["build_model", "load", "z_conditional", "pi_conditional", "sample", "log_predictive",
           "main"]

PRIOR_MEAN_STD = 3.


@ppl.meta_bayesian_net(scope="gmm")
def build_model(n, n_components, dim, n_chains=1):
    """The mixture for n points of `dim` dimensions; every latent starts with the chain axis."""
    bn = ppl.BayesianNet()
    ones = torch.ones(n_chains, n_components, dtype=torch.float64)
    pi = bn.dirichlet("pi", ones, group_ndims=0)
    mu = bn.normal("mu", torch.zeros(n_chains, n_components, dim, dtype=torch.float64),
                   std=PRIOR_MEAN_STD, group_ndims=2)
    log_sigma = bn.normal("log_sigma",
                          torch.zeros(n_chains, n_components, dim, dtype=torch.float64),
                          std=1., group_ndims=2)
    logits = pi.log()[..., None, :].expand(pi.shape[:-1] + (n, n_components))
    z = bn.categorical("z", logits, group_ndims=1)
    onehot = torch.nn.functional.one_hot(z, n_components).to(torch.float64)  # [..., n, K]
    bn.normal("x", onehot @ mu, logstd=onehot @ log_sigma, group_ndims=2)
    return bn


def z_conditional(values):
    """z_i | pi, mu, sigma, x_i ~ Categorical(logits = log pi_k + log N(x_i; mu_k, sigma_k))."""
    mu, sigma = values["mu"], values["log_sigma"].exp()                     # [..., K, D]
    log_n = torch.distributions.Normal(mu[..., None, :, :], sigma[..., None, :, :]) \
        .log_prob(values["x"][:, None, :]).sum(-1)                          # [..., n, K]
    return torch.distributions.Categorical(logits=values["pi"].log()[..., None, :] + log_n)


def pi_conditional(values):
    """pi | z ~ Dirichlet(1 + counts of each component)."""
    n_components = values["pi"].shape[-1]
    counts = torch.nn.functional.one_hot(values["z"], n_components).sum(-2)
    return torch.distributions.Dirichlet(1. + counts.to(torch.float64))


def load(digits=(0, 1, 7), n_train=1000, n_test=1000, dims=2, path=None):
    """(train [n_train, dims], test [n_test, dims]) float64: standardized principal components."""
    mnist = load_mnist(path)

    def pick(images, labels, n):
        keep = torch.isin(torch.as_tensor(labels.astype("int64")), torch.tensor(digits))
        return torch.as_tensor(images.reshape(len(images), -1), dtype=torch.float64)[keep][:n]

    train = pick(mnist.train_images, mnist.train_labels, n_train) / 255.
    test = pick(mnist.test_images, mnist.test_labels, n_test) / 255.
    center = train.mean(0)
    _, _, v = torch.linalg.svd(train - center, full_matrices=False)
    project = lambda images: (images - center) @ v[:dims].T  # noqa: E731
    train_pc, test_pc = project(train), project(test)
    mean, std = train_pc.mean(0), train_pc.std(0)
    return (train_pc - mean) / std, (test_pc - mean) / std


def sample(x, n_components=3, n_sweeps=300, n_warmup=150, n_chains=4, step_size=0.01,
           n_leapfrogs=10, progress=True, enumerate_z=False):
    """Gibbs-within-HMC draws: dict name -> [kept, chains, ...], and HMC's mean acceptance."""
    n, dim = x.shape
    model = build_model(n, n_components, dim, n_chains)
    hmc = inference.HMC(step_size=step_size, n_leapfrogs=n_leapfrogs, adapt_step_size=True)
    conditionals = {"pi": pi_conditional} if enumerate_z else \
        {"pi": pi_conditional, "z": z_conditional}
    gibbs = inference.Gibbs(conditionals=conditionals, continuous_kernel=hmc,
                            independent_elements=("z",) if enumerate_z else ())
    start = torch.stack([x[torch.randperm(n)[:n_components]] for _ in range(n_chains)])
    latent = {"z": torch.zeros(n_chains, n, dtype=torch.int64),
              "pi": torch.full((n_chains, n_components), 1. / n_components, dtype=torch.float64),
              "mu": start,
              "log_sigma": torch.full((n_chains, n_components, dim), math.log(0.5),
                                      dtype=torch.float64)}
    kept, accept = [], []
    for sweep in tqdm(range(n_sweeps), desc="Gibbs sweeps", disable=not progress, leave=False):
        hmc.adapt_step_size = sweep < n_warmup
        latent, info = gibbs.sample(model, {"x": x}, latent)
        if sweep >= n_warmup:
            kept.append({k: latent[k] for k in ("pi", "mu", "log_sigma")})
            accept.append(float(info["continuous"].acceptance_rate.mean()))
    draws = {k: torch.stack([d[k] for d in kept]) for k in kept[0]}
    return draws, sum(accept) / len(accept)


def log_predictive(draws, x):
    """Mean over points of log mean_draws sum_k pi_k N(x; mu_k, sigma_k)  (x [n, D])."""
    pi = draws["pi"].reshape(-1, draws["pi"].shape[-1])                     # [S, K]
    mu = draws["mu"].reshape((len(pi),) + draws["mu"].shape[-2:])          # [S, K, D]
    sigma = draws["log_sigma"].reshape(mu.shape).exp()
    log_n = torch.distributions.Normal(mu[:, None], sigma[:, None]).log_prob(x[:, None]).sum(-1)
    per_draw = torch.logsumexp(pi.log()[:, None] + log_n, -1)              # [S, n]
    return float((torch.logsumexp(per_draw, 0) - math.log(len(pi))).mean())


def _digits(text):
    try:
        digits = tuple(int(d) for d in text.split(","))
    except ValueError:
        digits = ()
    if not digits or any(not 0 <= d <= 9 for d in digits):
        raise argparse.ArgumentTypeError(f"expected comma-separated digits 0-9, got {text!r}")
    return digits


def main(argv=None):
    """`python -m models.bayesian.gmm ARGV`; returns the metrics written to DIR/metrics.json.

    `--epochs` is the number of Gibbs sweeps (half of them warm-up).
    """
    parser = zoo.parser("bayesian.gmm", "A Gaussian mixture by Gibbs (assignments) and HMC",
                        data="mnist", epochs=300, quick_epochs=40)
    parser.add_argument("--digits", type=_digits, default=(0, 1, 7))
    parser.add_argument("--components", type=zoo.positive_int, default=3)
    parser.add_argument("--dims", type=zoo.positive_int, default=2,
                        help="principal components kept (default 2)")
    parser.add_argument("--chains", type=zoo.positive_int, default=4)
    args = parser.parse_args(argv)
    if args.checkpoint:
        parser.error("--checkpoint: the Gibbs sweeps here are not checkpointed (a run takes "
                     "seconds); leave it out")
    zoo.start(args)
    budget = zoo.Budget()
    path = None if args.data == "mnist" else args.data
    train, test = load(args.digits, args.train_size or 1000, args.test_size or 1000,
                       args.dims, path)
    draws, accept = sample(train, args.components, args.epochs, args.epochs // 2, args.chains,
                           progress=not args.no_progress)
    metrics = {"test_loglik": log_predictive(draws, test),
               "train_loglik": log_predictive(draws, train),
               "hmc_acceptance": accept}
    return zoo.write_metrics(args.out, metrics, budget.as_dict(args.epochs))


if __name__ == "__main__":
    main()
