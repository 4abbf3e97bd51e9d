"""A sigmoid belief net (Neal 1992) with three layers of 200 binary units, as ZhuSuan's
sbn_vimco and sbn_adaptive_is.

    h3 ~ Bernoulli(logits=0)                [k, n, 200]
    h2 ~ Bernoulli(logits=W3 h3 + b3)       [k, n, 200]
    h1 ~ Bernoulli(logits=W2 h2 + b2)       [k, n, 200]
    x  ~ Bernoulli(logits=W1 h1 + b1)       [k, n, 784]
    q(h1, h2, h3 | x) = q(h1 | x) q(h2 | h1) q(h3 | h2), each a sigmoid (linear) layer

Binary latents have no reparameterization, so the importance weighted bound
L_k = E[log (1/k) sum_j p(x, h_j) / q(h_j | x)] (k = 10) is trained by one of

- `vimco` (Mnih & Rezende 2016): the bound's score-function gradient with the
  leave-one-out control variate, for the model and the guide at once;
- `rws`, reweighted wake-sleep / adaptive importance sampling (Bornschein &
  Bengio 2015): the model climbs the bound (its gradient at the guide's
  samples), the guide descends the inclusive KL(p(h|x) || q(h|x)) (`klpq`).

Adam (1e-3, eps 1e-4), batches of 24, dynamically binarized MNIST (ZhuSuan's
settings); `--z-dim` is the width of each latent layer. Trained and evaluated
by `models.experiment.run`: `test_loglik_nats`, log p(x) by importance sampling
with the guide (`--iw-samples`, 1000 per image), `test_iw_bound_k10_nats` (the
training bound on the test set) and `test_elbo_nats`.

    python -m models.latent.sbn --estimator vimco
    python -m models.latent.sbn --estimator rws --epochs 10 --checkpoint runs/sbn.pt
"""
import torch
from torch import nn

import inference
import ppl
from models import experiment, zoo
from models.latent.vae import bernoulli_images, check_images

__all__ = ["ESTIMATORS", "build_sbn", "build_q_net", "new_templates", "iw_bound", "sbn_step",
           "main"]

ESTIMATORS = ("vimco", "rws")


@ppl.meta_bayesian_net(scope="sbn", reuse_variables=True)
def build_sbn(x_dim, h_dim, n, n_particles=1):
    """p(h3) p(h2 | h3) p(h1 | h2) p(x | h1): h* [k, n, h_dim], x [k, n, x_dim] (0/1 floats).

    The zoo's argument order (x_dim, latent width, n, particles); ZhuSuan's
    build_sbn takes (n, x_dim, h_dim, n_particles).
    """
    bn = ppl.BayesianNet()
    h3 = bn.bernoulli("h3", torch.zeros(n, h_dim), group_ndims=1, n_samples=n_particles,
                      dtype=torch.float32)
    h2 = bn.bernoulli("h2", ppl.module("h2_logits", lambda: nn.Linear(h_dim, h_dim))(h3),
                      group_ndims=1, dtype=torch.float32)
    h1 = bn.bernoulli("h1", ppl.module("h1_logits", lambda: nn.Linear(h_dim, h_dim))(h2),
                      group_ndims=1, dtype=torch.float32)
    bernoulli_images(bn, h1, x_dim)
    return bn


@ppl.reuse_variables(scope="q_net")
def build_q_net(x, h_dim, n_particles):
    """q(h1 | x) q(h2 | h1) q(h3 | h2): h* [k, n, h_dim] for images x [n, x_dim]."""
    check_images(x)
    bn = ppl.BayesianNet()
    h1 = bn.bernoulli("h1", ppl.module("h1_logits", lambda: nn.Linear(x.shape[1], h_dim))(x),
                      group_ndims=1, n_samples=n_particles, dtype=torch.float32)
    h2 = bn.bernoulli("h2", ppl.module("h2_logits", lambda: nn.Linear(h_dim, h_dim))(h1),
                      group_ndims=1, dtype=torch.float32)
    bn.bernoulli("h3", ppl.module("h3_logits", lambda: nn.Linear(h_dim, h_dim))(h2),
                 group_ndims=1, dtype=torch.float32)
    return bn


def new_templates():
    """Fresh, untrained copies of (`build_sbn`, `build_q_net`)."""
    return (ppl.meta_bayesian_net(scope="sbn")(build_sbn.fn),
            ppl.reuse_variables(scope="q_net")(build_q_net.fn))


def iw_bound(sbn, q_net, x, h_dim, n_particles):
    """The importance weighted bound L_k of images `x` [n, x_dim], k = `n_particles`."""
    model = sbn(x.shape[1], h_dim, x.shape[0], n_particles)
    return inference.iw_objective(model, {"x": x}, variational=q_net(x, h_dim, n_particles),
                                  axis=0)


def sbn_step(sbn, q_net, h_dim, estimator="vimco", n_particles=10):
    """A training step function x -> (cost, L_k) for `estimator` "vimco" or "rws"."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}: expected one of "
                         f"{', '.join(ESTIMATORS)}")

    def vimco(x):
        lower_bound = iw_bound(sbn, q_net, x, h_dim, n_particles)
        return lower_bound.vimco().mean(), lower_bound

    def rws(x):
        model = sbn(x.shape[1], h_dim, x.shape[0], n_particles)
        proposal = q_net(x, h_dim, n_particles)
        # The model's part: the bound at the guide's samples with log q held fixed.
        fixed = {name: (node.tensor, node.cond_log_p.detach())
                 for name, node in proposal.stochastic_nodes.items()}
        lower_bound = inference.iw_objective(model, {"x": x}, latent=fixed, axis=0)
        klpq = inference.klpq(model, {"x": x}, variational=proposal, axis=0)
        return (klpq.importance() - lower_bound.tensor).mean(), lower_bound

    return vimco if estimator == "vimco" else rws


SBN_DEFAULTS = {"epochs": 20, "batch_size": 24, "z_dim": 200}


def main(argv=None):
    """`python -m models.latent.sbn ARGV`; returns the metrics written to DIR/metrics.json."""
    parser = experiment.common_parser(
        "sbn", "A sigmoid belief net (three layers of 200 binary units) trained by VIMCO or "
        "reweighted wake-sleep (ZhuSuan's sbn_vimco, sbn_adaptive_is).",
        None, SBN_DEFAULTS, quick_epochs=1, data="mnist")
    parser.add_argument("--estimator", choices=ESTIMATORS, default="vimco",
                        help="vimco: VIMCO for model and guide; rws: the bound for the model, "
                             "the inclusive KL for the guide (default vimco)")
    parser.add_argument("--particles", type=zoo.positive_int, default=10,
                        help="k, samples per image in the training bound (default 10)")
    parser.set_defaults(adam_eps=1e-4)  # ZhuSuan's
    args = parser.parse_args(argv)
    if args.particles < 2:
        parser.error("--particles must be at least 2 (both estimators are multi-sample)")

    def setup(args, data):
        step = sbn_step(build_sbn, build_q_net, args.z_dim, args.estimator, args.particles)
        return experiment.zhusuan_model(
            build_sbn, build_q_net, data.x_dim, args.z_dim, step,
            bound_particles=args.particles,
            settings={"estimator": args.estimator, "particles": args.particles})
    return experiment.run(args, "sbn", setup)


if __name__ == "__main__":
    main()
