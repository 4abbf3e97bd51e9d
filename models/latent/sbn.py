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
settings). Reported: `test_loglik_nats`, log p(x) by importance sampling
with the guide (1000 samples per image), and `test_iw_bound_k10` (the training
bound on the test set).

    python -m models.latent.sbn --estimator vimco
    python -m models.latent.sbn --estimator rws --epochs 10 --checkpoint runs/sbn.pt
"""
import torch
from torch import nn

import inference
import ppl
from models import zoo
from models.data import BinarizedBatches, load_binary_images
from models.experiment import is_loglikelihood, mean_over_batches
from models.latent.vae import check_images

__all__ = ["ESTIMATORS", "build_sbn", "build_q_net", "new_templates", "iw_bound", "sbn_step",
           "sample_images", "main"]

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
    x_logits = ppl.module("x_logits", lambda: nn.Linear(h_dim, x_dim))(h1)
    bn.output("x_mean", torch.sigmoid(x_logits))
    bn.bernoulli("x", x_logits, group_ndims=1)
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


@torch.no_grad()
def sample_images(sbn, x_dim, h_dim, n):
    """Pixel probabilities of `n` images drawn from the net: [n, x_dim]."""
    return sbn(x_dim, h_dim, n, 1).observe()["x_mean"][0]


def main(argv=None):
    parser = zoo.parser("latent.sbn", "A sigmoid belief net (200-200-200 binary units) trained "
                        "by VIMCO or reweighted wake-sleep (ZhuSuan's sbn_vimco, "
                        "sbn_adaptive_is).", data="mnist", epochs=20, quick_epochs=1)
    parser.add_argument("--estimator", choices=ESTIMATORS, default="vimco",
                        help="vimco: VIMCO for model and guide; rws: the bound for the model, "
                             "the inclusive KL for the guide (default vimco)")
    parser.add_argument("--h-dim", type=zoo.positive_int, default=200,
                        help="binary units per latent layer (default 200)")
    parser.add_argument("--particles", type=zoo.positive_int, default=10,
                        help="k, samples per image in the training bound (default 10)")
    parser.add_argument("--batch-size", type=zoo.positive_int, default=24)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--iw-samples", type=zoo.positive_int, default=1000,
                        help="importance samples per test image for log p(x) (default 1000)")
    args = parser.parse_args(argv)
    if args.particles < 2:
        parser.error("--particles must be at least 2 (both estimators are multi-sample)")
    zoo.start(args)
    budget = zoo.Budget()
    data = load_binary_images(args.data, seed=args.seed)
    train = zoo.first(data.train, args.train_size)
    test = zoo.first(data.test, args.test_size)
    batches = BinarizedBatches(train, min(args.batch_size, len(train)), seed=args.seed,
                               binarize=data.dynamic)
    settings = {"estimator": args.estimator, "h_dim": args.h_dim, "particles": args.particles,
                "batch_size": batches.batch_size, "seed": args.seed}
    trainer = inference.Trainer(
        {"model": build_sbn, "guide": build_q_net},
        lambda params: torch.optim.Adam(params, lr=args.lr, eps=1e-4),
        checkpoint_path=args.checkpoint, progress=not args.no_progress,
        fingerprint={"train_images": torch.from_numpy(train), "settings": settings})
    step = sbn_step(build_sbn, build_q_net, args.h_dim, args.estimator, args.particles)
    history = trainer.fit(step, batches, n_epochs=args.epochs)
    print(f"sbn ({args.estimator}) on {data.name}: {len(train)} train images, {args.epochs} "
          f"epochs, training bound {history[-1]:.2f}")
    progress = not args.no_progress
    test_images = torch.from_numpy(test)
    metrics = {
        "test_loglik_nats": mean_over_batches(
            lambda x: is_loglikelihood(build_sbn, build_q_net, x, args.h_dim, args.iw_samples),
            test_images, batch_size=100, desc="test log-likelihood", progress=progress),
        f"test_iw_bound_k{args.particles}": mean_over_batches(
            lambda x: iw_bound(build_sbn, build_q_net, x, args.h_dim, args.particles).tensor,
            test_images, batch_size=100, desc="test bound", progress=progress),
    }
    zoo.save_samples(args.out, sample_images(build_sbn, data.x_dim, args.h_dim, args.n_samples),
                     image_shape=data.image_shape)
    print(", ".join(f"{name} {value:.2f}" for name, value in metrics.items()))
    return zoo.write_metrics(args.out, metrics,
                             budget.as_dict(args.epochs, estimator=args.estimator,
                                            iw_samples=args.iw_samples, train_size=len(train),
                                            test_size=len(test)))


if __name__ == "__main__":
    main()
