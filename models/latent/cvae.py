"""A conditional VAE: images generated from a code z and their class label y.

    z ~ N(0, I)                                   [n_particles, n, z_dim]
    x ~ Bernoulli(logits=f_NN(z, onehot(y)))      f_NN: (z_dim + 10)-500-500-x_dim, ReLU
    q(z | x, y) = N(mu_NN(x, y), exp(logstd_NN(x, y))^2)

(Sohn, Lee & Yan 2015, with the label as the condition.) The label y [n]
(int64 in [0, 10)) is an input of both programs, not a random node, so the
bounds and the test log-likelihood are those of log p(x | y); the code z
then holds the style that the label does not. Trained by the ELBO (SGVB) on
labelled MNIST (dynamically binarized; Larochelle's binarized MNIST comes
without labels) or the digits; `samples.png` is the class-conditional grid:
column c holds images drawn with y = c.

    python -m models.latent.cvae --epochs 10      # MNIST
    python -m models.latent.cvae --data digits
"""
import torch
from torch import nn

import inference
import ppl
from models import experiment
from models.latent.vae import (DIGITS_DEFAULTS, MNIST_DEFAULTS, bernoulli_images, check_images,
                               image_net, mlp, normal_node)

__all__ = ["N_CLASSES", "build_gen", "build_q_net", "new_templates", "one_hot", "elbo_step",
           "class_samples", "cvae_model", "main"]

N_CLASSES = 10


def one_hot(y, n=None):
    """Labels y (int64 [n]) as float one-hot rows [n, 10]; a ValueError names node 'y'
    unless y is an int64 tensor of shape [n]. (Values are checked where the labels enter,
    by `experiment.check_labels`, so that a recorded step need not read them; torch's
    one_hot refuses out-of-range ones.)"""
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1 \
            or (n is not None and len(y) != n):
        got = (f"{y.dtype} tensor of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor)
               else type(y).__name__)
        raise ValueError(f"node 'y': expected an int64 tensor of class labels of shape "
                         f"[{'n' if n is None else n}] in [0, {N_CLASSES}), got a {got}")
    return nn.functional.one_hot(y, N_CLASSES).float()


@ppl.meta_bayesian_net(scope="gen", reuse_variables=True)
def build_gen(x_dim, z_dim, y, n_particles=1, hidden=(500, 500)):
    """p(z) p(x | z, y) for labels y [n]: z [n_particles, n, z_dim], x [n_particles, n, x_dim]."""
    y = one_hot(y)
    bn = ppl.BayesianNet()
    z = bn.normal("z", torch.zeros(len(y), z_dim), std=1., group_ndims=1, n_samples=n_particles)
    zy = torch.cat([z, y.expand(*z.shape[:-1], N_CLASSES)], dim=-1)
    bernoulli_images(bn, ppl.module("decoder", lambda: mlp(z_dim + N_CLASSES, hidden))(zy), x_dim)
    return bn


@ppl.reuse_variables(scope="q_net")
def build_q_net(x, y, z_dim, n_z_per_x, hidden=(500, 500)):
    """q(z | x, y): a diagonal Normal, z [n_z_per_x, n, z_dim], for x [n, x_dim], y [n]."""
    check_images(x)
    h = image_net("encoder", x, hidden, condition=one_hot(y, len(x)))
    bn = ppl.BayesianNet()
    normal_node(bn, "z", h, z_dim, n_z_per_x)
    return bn


def new_templates():
    """Fresh, untrained copies of (`build_gen`, `build_q_net`)."""
    return (ppl.meta_bayesian_net(scope="gen", reuse_variables=True)(build_gen.fn),
            ppl.reuse_variables(scope="q_net")(build_q_net.fn))


def elbo_step(gen, q_net, z_dim, hidden=(500, 500)):
    """A training step (x, y) -> (cost, ELBO of log p(x | y)) using the SGVB gradient."""
    def step(batch):
        x, y = batch
        model = gen(x.shape[1], z_dim, y, 1, hidden=hidden)
        lower_bound = inference.elbo(model, {"x": x}, variational=q_net(x, y, z_dim, 1,
                                                                        hidden=hidden), axis=0)
        return lower_bound.sgvb().mean(), lower_bound
    return step


@torch.no_grad()
def class_samples(gen, x_dim, z_dim, n=100, hidden=(500, 500)):
    """Pixel probabilities [n, x_dim] of images drawn with y = 0, 1, ..., 9, 0, 1, ...

    In a grid of 10 columns, column c holds class c.
    """
    y = torch.arange(n) % N_CLASSES
    return gen(x_dim, z_dim, y, 1, hidden=hidden).observe()["x_mean"][0]


def cvae_model(gen, q_net, x_dim, z_dim, hidden):
    """The `experiment.LatentModel` of these templates (batches are pairs (x, y))."""
    def joint(batch, k):
        x, y = batch
        return gen(x_dim, z_dim, y, k, hidden=hidden), {"x": x}

    return experiment.LatentModel(
        {"model": gen, "guide": q_net}, elbo_step(gen, q_net, z_dim, hidden), joint,
        lambda batch, k: q_net(batch[0], batch[1], z_dim, k, hidden=hidden),
        lambda n: class_samples(gen, x_dim, z_dim, n, hidden),
        samples_title="samples: column c is class c")


def main(argv=None):
    """`python -m models.latent.cvae ARGV`; returns the metrics written to DIR/metrics.json."""
    parser = experiment.common_parser(
        "cvae", "Train a label-conditioned VAE p(x | z, y) by the ELBO (SGVB) on labelled "
                "images; samples.png is the class-conditional grid.",
        DIGITS_DEFAULTS, MNIST_DEFAULTS, quick_epochs=2, data="mnist")
    args = parser.parse_args(argv)
    return experiment.run(
        args, "cvae", lambda args, data: cvae_model(build_gen, build_q_net, data.x_dim,
                                                    args.z_dim, args.hidden), labelled=True)


if __name__ == "__main__":
    main()
