"""Conditional GAN (Mirza & Osindero 2014): images generated from a code z and a class label y.

    z ~ N(0, I)                        [n, z_dim]
    x = G(z, onehot(y))                (z_dim + 10)-256-512-784, batch norm, LeakyReLU(0.2),
                                       sigmoid (the GAN's networks, see models.gan.gan)
    D(x, y) = sigmoid(f(x, onehot(y))) (784 + 10)-512-256-1, LeakyReLU(0.2), dropout 0.3

The label y [n] (int64 in [0, 10)) is an input of the generator's program and
of the discriminator, not a random node: batches are (images, labels).
Trained by the logistic loss (non-saturating generator loss), Adam (lr 2e-4,
betas 0.5, 0.999). `samples.png` is the class grid (column c is class c);
with the metrics classifier cached, `conditional_error` is the fraction of
samples it assigns to another class than the one asked for.

    python -m models.gan.cgan --epochs 10
"""
import numpy as np
import torch
from torch import nn

import ppl
from models.gan import common, metrics
from models.latent.cvae import N_CLASSES, one_hot

__all__ = ["build_gen", "new_generator", "Discriminator", "main"]


@ppl.meta_bayesian_net(scope="gen")
def build_gen(y, z_dim=64, x_dim=784):
    """For labels y [n]: z ~ N(0, I) [n, z_dim]; the output node x = G(z, y) [n, x_dim]."""
    y = one_hot(y)
    bn = ppl.BayesianNet()
    z = bn.normal("z", torch.zeros(len(y), z_dim), std=1., group_ndims=1)
    net = ppl.module("g", lambda: nn.Sequential(
        nn.Linear(z_dim + N_CLASSES, 256), nn.BatchNorm1d(256), nn.LeakyReLU(0.2),
        nn.Linear(256, 512), nn.BatchNorm1d(512), nn.LeakyReLU(0.2),
        nn.Linear(512, x_dim), nn.Sigmoid()))
    bn.output("x", net(torch.cat([z, y], dim=-1)))
    return bn


def new_generator():
    """A fresh, untrained copy of `build_gen` (templates own their parameters)."""
    return ppl.meta_bayesian_net(scope="gen")(build_gen.fn)


class Discriminator(nn.Module):
    """f(x, y): images [n, x_dim] and labels [n] -> logits [n, 1].

    f(x, y) = w . h + embed(y) . h with h = phi([x, onehot(y)]) [n, 256]: the label
    enters by concatenation (Mirza & Osindero) and by projection (Miyato & Koyama
    2018). With concatenation alone the label is 10 of 794 inputs and D learns to
    ignore it: G's samples then follow their label no more than chance (15% after
    4 epochs); the projection makes a wrong label cost D's score directly.
    """

    def __init__(self, x_dim=784, hidden=256):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(x_dim + N_CLASSES, 512), nn.LeakyReLU(0.2),
                                  nn.Dropout(0.3), nn.Linear(512, hidden), nn.LeakyReLU(0.2),
                                  nn.Dropout(0.3))
        self.out = nn.Linear(hidden, 1)
        self.embed = nn.Embedding(N_CLASSES, hidden)

    def forward(self, x, y):
        h = self.body(torch.cat([x, one_hot(y, len(x))], dim=-1))
        return self.out(h) + (self.embed(y) * h).sum(-1, keepdim=True)


def main(argv=None):
    """`python -m models.gan.cgan ARGV`; returns the metrics written to DIR/metrics.json."""
    p = common.parser("gan.cgan", "Train a label-conditioned GAN (Mirza & Osindero 2014); "
                                  "samples.png is the class grid.", epochs=10)
    args = p.parse_args(argv)
    gen, critic = new_generator(), Discriminator()

    def model(batch):
        return gen(batch[1], args.z_dim)

    def conditional_error(gen, classifier, test, test_labels):
        if classifier is None:
            return {}
        y = torch.arange(1000) % N_CLASSES
        with torch.random.fork_rng():
            images = common.generated(gen, model, (None, y))
        probs = metrics.features_and_probs(classifier, images)[1]
        return {"conditional_error": float(np.mean(probs.argmax(1) != y.numpy()))}
    return common.run(
        args, "cgan", gen, critic, model, loss="non_saturating", conditional=True,
        extra_metrics=conditional_error,
        optimizers=tuple(lambda params: torch.optim.Adam(params, args.lr, betas=(0.5, 0.999))
                         for _ in range(2)))


if __name__ == "__main__":
    main()
