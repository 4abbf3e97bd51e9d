"""DCGAN (Radford et al. 2016) on MNIST or Fashion-MNIST, its generator a BayesianNet
(ZhuSuan's examples/generative_adversarial_nets/dcgan.py).

    z ~ N(0, I)                  [n, z_dim]
    x = G(z)                     z -> 2w@7x7 -> w@14x14 -> 1@28x28: transposed convolutions,
                                 batch norm and ReLU, a sigmoid output; x [n, 784]
    D(x) = sigmoid(f(x))         1@28x28 -> w@14x14 -> 2w@7x7 -> 1: strided convolutions,
                                 LeakyReLU(0.2), batch norm on the second

trained by the logistic loss (the non-saturating generator loss), Adam (lr
2e-4, betas 0.5, 0.999), batches of 64; `--width` w = 32 by default (64 in the
paper; smaller runs well on a CPU). The paper's lr is slow for a small net on a
small budget: at w = 16 the classifier FID after 300 steps is 802 with 2e-4 and
229 with `--lr 1e-3` (benchmarks/results/gan_mnist_dcgan_lr.json), which
`benchmarks.gan_mnist` uses, with `--minibatch-std` (a `MinibatchStd` channel in D):
without it the largest class took 22.5% and 20.05% of the samples in two seeds, with it
19.0% and 17.8% (benchmarks/results/gan_mnist_20k_equal_cpu.json). ZhuSuan's
`is_training` is the modules' train()/eval() mode: samples are drawn in eval mode.

    python -m models.gan.dcgan --epochs 5
    python -m models.gan.dcgan --data fashion-mnist
"""
import torch
from torch import nn

import ppl
from models.gan import common

__all__ = ["build_gen", "new_generator", "generator_net", "MinibatchStd", "discriminator",
           "main"]


def generator_net(z_dim, width):
    """[n, z_dim] -> images [n, 784] in (0, 1)."""
    return nn.Sequential(
        nn.Linear(z_dim, 2 * width * 7 * 7), nn.BatchNorm1d(2 * width * 7 * 7), nn.ReLU(),
        nn.Unflatten(1, (2 * width, 7, 7)),
        nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.BatchNorm2d(width),
        nn.ReLU(),                                                                # 14x14
        nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1), nn.Sigmoid(),       # 28x28
        nn.Flatten())


@ppl.meta_bayesian_net(scope="gen")
def build_gen(n, z_dim=64, width=32):
    """z ~ N(0, I) [n, z_dim]; the output node x = G(z) [n, 784]."""
    bn = ppl.BayesianNet()
    z = bn.normal("z", torch.zeros(n, z_dim), std=1., group_ndims=1)
    bn.output("x", ppl.module("g", lambda: generator_net(z_dim, width))(z))
    return bn


def new_generator():
    """A fresh, untrained copy of `build_gen` (templates own their parameters)."""
    return ppl.meta_bayesian_net(scope="gen")(build_gen.fn)


class MinibatchStd(nn.Module):
    """[n, c, h, w] -> [n, c + 1, h, w]: appends the standard deviation over the batch,
    averaged over features, as a constant channel (Karras et al. 2018): D sees how varied
    the batch is, so a generator covering a few digits' modes is told apart."""

    def forward(self, h):
        spread = h.std(0, unbiased=False).mean() if len(h) > 1 else h.new_zeros(())
        return torch.cat([h, spread.expand(len(h), 1, *h.shape[2:])], 1)


def discriminator(width=32, norm=True, minibatch_std=False):
    """f: images [n, 784] -> scores [n, 1]; `norm`: batch norm on the second convolution
    (off for a WGAN-GP critic, whose penalty is per example); `minibatch_std`: a
    `MinibatchStd` channel before the last layer."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),           # 14x14
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),                      # 7x7
        nn.BatchNorm2d(2 * width) if norm else nn.Identity(), nn.LeakyReLU(0.2),
        MinibatchStd() if minibatch_std else nn.Identity(),
        nn.Flatten(), nn.Linear((2 * width + minibatch_std) * 7 * 7, 1))


def main(argv=None):
    """`python -m models.gan.dcgan ARGV`; returns the metrics written to DIR/metrics.json."""
    p = common.parser("gan.dcgan", "Train DCGAN (Radford et al. 2016) on MNIST or "
                                   "Fashion-MNIST.", epochs=5)
    p.add_argument("--width", type=int, default=32, help="channels of the first layer")
    p.add_argument("--minibatch-std", action="store_true",
                   help="D also sees the batch's spread (MinibatchStd), against mode imbalance")
    args = p.parse_args(argv)
    gen, critic = new_generator(), discriminator(args.width, minibatch_std=args.minibatch_std)
    return common.run(
        args, "dcgan", gen, critic, lambda batch: gen(len(batch), args.z_dim, args.width),
        loss="non_saturating",
        optimizers=tuple(lambda params: torch.optim.Adam(params, args.lr, betas=(0.5, 0.999))
                         for _ in range(2)))


if __name__ == "__main__":
    main()
