"""A first look at the modeling language: the eight-schools hierarchical model.

    python -m models.demo [--out model_graph.png] [--n-samples 10000] [--seed 0]

Builds the model as a template, draws from the prior, evaluates `log_joint` on
the observed data (Rubin's eight schools: estimated coaching effects `y` with
known standard errors `sigma`), estimates log p(y) by averaging the likelihood
over prior draws, prints the model graph and saves it as a PNG.

The model (non-centered):

    mu ~ N(0, 5)            tau ~ HalfCauchy(5)         eta_j ~ N(0, 1)
    theta_j = mu + tau * eta_j   (deterministic)        y_j ~ N(theta_j, sigma_j)
"""
import argparse
import math

import torch

import ppl

SCHOOLS = "ABCDEFGH"
EFFECTS = torch.tensor([28., 8., -3., 7., -1., 1., 18., 12.])
STD_ERRORS = torch.tensor([15., 10., 16., 11., 9., 11., 10., 18.])


@ppl.meta_bayesian_net(scope="eight_schools")
def eight_schools(sigma, n_samples=None):
    """The hierarchical model; with `n_samples=k` every node gets a leading axis of k draws."""
    bn = ppl.BayesianNet()
    mu = bn.normal("mu", 0., std=5., n_samples=n_samples)
    tau = bn.half_cauchy("tau", 5., n_samples=n_samples)
    eta = bn.normal("eta", torch.zeros_like(sigma), std=1., group_ndims=1, n_samples=n_samples)
    theta = bn.deterministic("theta", mu.unsqueeze(-1) + tau.unsqueeze(-1) * eta)
    bn.normal("y", theta, std=sigma, group_ndims=1)
    return bn


def summarize(name, draws):
    """One table row per column of `draws` [k, J]: median and the 5%/25%/75%/95% quantiles."""
    levels = torch.tensor([0.5, 0.05, 0.25, 0.75, 0.95])
    q = torch.quantile(draws, levels.to(draws.dtype), dim=0)
    print(f"{name:>8} | {'median':>8} {'5%':>8} {'25%':>8} {'75%':>8} {'95%':>8}")
    for j in range(draws.shape[1]):
        print(f"{SCHOOLS[j]:>8} | " + " ".join(f"{v:8.2f}" for v in q[:, j].tolist()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="model_graph.png", help="where to save the graph PNG")
    parser.add_argument("--n-samples", type=int, default=10_000, help="prior draws")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    k = args.n_samples

    print("== Prior predictive: y drawn from the model, nothing observed ==")
    prior = eight_schools(STD_ERRORS, n_samples=k).observe()
    print(f"shapes: mu {tuple(prior['mu'].shape)}, eta {tuple(prior['eta'].shape)}, "
          f"theta {tuple(prior['theta'].shape)}, y {tuple(prior['y'].shape)}")
    summarize("y", prior["y"].tensor)

    print("\n== log_joint with y observed, at 5 prior draws of (mu, tau, eta) ==")
    observed = eight_schools(STD_ERRORS, n_samples=k).observe(y=EFFECTS)
    log_joint, log_lik = observed.log_joint(), observed.cond_log_prob("y")
    print(f"{'draw':>4} | {'mu':>7} {'tau':>7} | {'log p(y|.)':>11} {'log_joint':>10}")
    for i in range(5):
        print(f"{i:>4} | {observed['mu'][i]:7.2f} {observed['tau'][i]:7.2f} | "
              f"{log_lik[i]:11.3f} {log_joint[i]:10.3f}")

    weights = torch.exp(log_lik.double() - log_lik.max())
    log_evidence = (torch.logsumexp(log_lik.double(), 0) - math.log(k)).item()
    std_error = (weights.std() / weights.mean()).item() / math.sqrt(k)
    print(f"\nlog p(y) by averaging the likelihood over {k} prior draws: "
          f"{log_evidence:.3f} +- {std_error:.3f} (standard error)")

    graph = observed.graph
    print("\n== Model graph ==")
    print("edges:", ", ".join(f"{a}->{b}" for a, b in sorted(graph.edges)))
    for name in ("mu", "tau", "eta", "y"):
        print(f"Markov blanket of {name}: {sorted(observed.markov_blanket(name))}")
    observed.draw_graph(path=args.out)
    print(f"graph saved to {args.out}")


if __name__ == "__main__":
    main()
