"""ZhuSuan's convolutional VAE on MNIST (examples/variational_autoencoders/vae_conv.py).

    z ~ N(0, I)                           [n_particles, n, z_dim]
    x ~ Bernoulli(logits=deconv(z))       z -> 128@3x3 -> 64@7x7 -> 32@14x14 -> 1@28x28
    q(z | x) = N(mu(h), exp(logstd(h))^2),  h = conv(x): 32@14x14 -> 64@7x7 -> 128@3x3

Each hidden (de)convolution is followed by batch normalization and a ReLU, and
the encoder drops 10% of its 128x3x3 features, as in ZhuSuan; ZhuSuan's
`is_training` switch is the modules' train()/eval() mode here (the run puts
them in eval mode before evaluating). Trained by the ELBO (SGVB) with Adam
(lr 1e-3, eps 1e-4 as ZhuSuan) on batches of 100; evaluated by the test ELBO and
the test log-likelihood by importance sampling with q as proposal.

    python -m models.latent.conv_vae --epochs 10            # dynamically binarized MNIST
    python -m models.latent.conv_vae --data binarized_mnist  # Larochelle's fixed binarization
"""
import torch
from torch import nn

import inference
import ppl
from models import experiment
from models.latent.vae import check_images

__all__ = ["build_gen", "build_q_net", "new_templates", "elbo_step", "main"]

IMAGE = 28  # the nets are made for 28x28 images


def _block(layer, channels):
    return [layer, nn.BatchNorm2d(channels), nn.ReLU()]


def decoder(z_dim):
    """[m, z_dim, 1, 1] -> pixel logits [m, 1, 28, 28] (ZhuSuan's conv2d_transpose stack)."""
    return nn.Sequential(
        *_block(nn.ConvTranspose2d(z_dim, 128, 3), 128),                      # 3x3, VALID
        *_block(nn.ConvTranspose2d(128, 64, 5), 64),                          # 7x7, VALID
        *_block(nn.ConvTranspose2d(64, 32, 5, stride=2, padding=2, output_padding=1), 32),
        nn.ConvTranspose2d(32, 1, 5, stride=2, padding=2, output_padding=1))  # 28x28


def encoder():
    """[m, 1, 28, 28] -> features [m, 128 * 3 * 3] (ZhuSuan's conv2d stack and dropout)."""
    return nn.Sequential(
        *_block(nn.Conv2d(1, 32, 5, stride=2, padding=2), 32),                # 14x14, SAME
        *_block(nn.Conv2d(32, 64, 5, stride=2, padding=2), 64),               # 7x7, SAME
        *_block(nn.Conv2d(64, 128, 5), 128),                                  # 3x3, VALID
        nn.Dropout(0.1), nn.Flatten())


@ppl.meta_bayesian_net(scope="gen", reuse_variables=True)
def build_gen(x_dim, z_dim, n, n_particles=1):
    """p(z) p(x | z): z [n_particles, n, z_dim], x [n_particles, n, 784] (Bernoulli)."""
    if x_dim != IMAGE * IMAGE:
        raise ValueError(f"node 'x': the convolutional VAE makes 28x28 images (x_dim=784), "
                         f"got x_dim={x_dim}")
    bn = ppl.BayesianNet()
    z = bn.normal("z", torch.zeros(n, z_dim), std=1., group_ndims=1, n_samples=n_particles)
    x_logits = ppl.module("decoder", lambda: decoder(z_dim))(z.reshape(-1, z_dim, 1, 1))
    x_logits = x_logits.reshape(n_particles, n, x_dim)
    bn.output("x_mean", torch.sigmoid(x_logits))
    bn.bernoulli("x", x_logits, group_ndims=1)
    return bn


@ppl.reuse_variables(scope="q_net")
def build_q_net(x, z_dim, n_z_per_x):
    """q(z | x): a diagonal Normal, z [n_z_per_x, n, z_dim], for images x [n, 784]."""
    check_images(x, IMAGE * IMAGE)
    bn = ppl.BayesianNet()
    h = ppl.module("encoder", encoder)(x.reshape(-1, 1, IMAGE, IMAGE))
    z_mean = ppl.module("z_mean", lambda: nn.Linear(128 * 3 * 3, z_dim))(h)
    z_logstd = ppl.module("z_logstd", lambda: nn.Linear(128 * 3 * 3, z_dim))(h)
    bn.normal("z", z_mean, logstd=z_logstd, group_ndims=1, n_samples=n_z_per_x)
    return bn


def new_templates():
    """Fresh, untrained copies of (`build_gen`, `build_q_net`)."""
    return (ppl.meta_bayesian_net(scope="gen", reuse_variables=True)(build_gen.fn),
            ppl.reuse_variables(scope="q_net")(build_q_net.fn))


def elbo_step(gen, q_net, z_dim):
    """A training step function x -> (cost, ELBO) using the SGVB gradient."""
    def step(x):
        model = gen(x.shape[1], z_dim, x.shape[0], 1)
        lower_bound = inference.elbo(model, {"x": x}, variational=q_net(x, z_dim, 1), axis=0)
        return lower_bound.sgvb().mean(), lower_bound
    return step


def main(argv=None):
    """`python -m models.latent.conv_vae ARGV`; returns the metrics written to DIR/metrics.json."""
    parser = experiment.common_parser(
        "conv_vae", "Train ZhuSuan's convolutional VAE (z=40) on 28x28 MNIST by the ELBO.",
        None, {"epochs": 10, "batch_size": 100, "z_dim": 40}, quick_epochs=1, data="mnist")
    parser.set_defaults(adam_eps=1e-4)
    args = parser.parse_args(argv)

    def setup(args, data):
        if tuple(data.image_shape) != (IMAGE, IMAGE):
            raise ValueError(f"conv_vae: the convolutional nets take 28x28 images; --data "
                             f"{args.data} has {'x'.join(map(str, data.image_shape))} images")
        return experiment.zhusuan_model(build_gen, build_q_net, data.x_dim, args.z_dim,
                                        elbo_step(build_gen, build_q_net, args.z_dim))
    return experiment.run(args, "conv_vae", setup)


if __name__ == "__main__":
    main()
