"""The GAN of Goodfellow et al. 2014 on MNIST, its generator a BayesianNet (ZhuSuan's style).

    z ~ N(0, I)                  [n, z_dim]
    x = G(z)                     G: z_dim-256-512-784, batch norm and LeakyReLU(0.2), sigmoid
    D(x) = sigmoid(f(x))         f: 784-512-256-1, LeakyReLU(0.2), dropout 0.3

x is a deterministic node (`bn.output`): the model is implicit, with no
likelihood, and is learnt adversarially: f by the logistic loss, G by the
non-saturating loss -log D(G(z)) (`--loss minimax` for log(1 - D(G(z))) of the
paper's game), Adam (lr 2e-4, betas 0.5, 0.999), batches of 64. Without the batch
norm in G (and the dropout in f) the discriminator wins outright within an epoch and G
collapses onto one digit (every sample an 8 at 20,000 images x 4 epochs); samples are
drawn in eval mode.

    python -m models.gan.gan --epochs 10
"""
import torch
from torch import nn

import ppl
from models.gan import common

__all__ = ["build_gen", "new_generator", "discriminator", "main"]


@ppl.meta_bayesian_net(scope="gen")
def build_gen(n, z_dim=64, x_dim=784):
    """z ~ N(0, I) [n, z_dim]; the output node x = G(z) [n, x_dim] in (0, 1)."""
    bn = ppl.BayesianNet()
    z = bn.normal("z", torch.zeros(n, z_dim), std=1., group_ndims=1)
    net = ppl.module("g", lambda: nn.Sequential(
        nn.Linear(z_dim, 256), nn.BatchNorm1d(256), nn.LeakyReLU(0.2),
        nn.Linear(256, 512), nn.BatchNorm1d(512), nn.LeakyReLU(0.2),
        nn.Linear(512, x_dim), nn.Sigmoid()))
    bn.output("x", net(z))
    return bn


def new_generator():
    """A fresh, untrained copy of `build_gen` (templates own their parameters)."""
    return ppl.meta_bayesian_net(scope="gen")(build_gen.fn)


def discriminator(x_dim=784, dropout=0.3):
    """f: images [n, x_dim] -> logits [n, 1]; dropout after each hidden layer (as the
    paper's maxout discriminator) keeps it from winning outright, which collapses G's modes."""
    return nn.Sequential(nn.Linear(x_dim, 512), nn.LeakyReLU(0.2), nn.Dropout(dropout),
                         nn.Linear(512, 256), nn.LeakyReLU(0.2), nn.Dropout(dropout),
                         nn.Linear(256, 1))


def main(argv=None):
    """`python -m models.gan.gan ARGV`; returns the metrics written to DIR/metrics.json."""
    p = common.parser("gan.gan", "Train the MLP GAN of Goodfellow et al. 2014 on MNIST.",
                      epochs=10)
    p.add_argument("--loss", choices=("non_saturating", "minimax"), default="non_saturating")
    args = p.parse_args(argv)
    gen, critic = new_generator(), discriminator()
    return common.run(
        args, "gan", gen, critic, lambda batch: gen(len(batch), args.z_dim), loss=args.loss,
        optimizers=tuple(lambda params: torch.optim.Adam(params, args.lr, betas=(0.5, 0.999))
                         for _ in range(2)))


if __name__ == "__main__":
    main()
