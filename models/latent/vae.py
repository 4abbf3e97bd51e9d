"""Variational autoencoder (Kingma & Welling 2014), as in ZhuSuan's example.

    z ~ N(0, I)                          [n_particles, n, z_dim]
    x ~ Bernoulli(logits=f_NN(z))        f_NN: z_dim-500-500-x_dim, ReLU
    q(z | x) = N(mu_NN(x), exp(logstd_NN(x))^2)

trained by maximizing the ELBO with the SGVB (reparameterization) gradient
and Adam (1e-3), and evaluated by the test ELBO and the test log-likelihood
estimated by importance sampling with q as proposal (`--iw-samples` per
image), written to DIR/metrics.json with DIR/samples.npy as the zoo does. On
MNIST the defaults are ZhuSuan's (784-500-500, z=40, batches of 128); on the
small 8x8 digits set, a smaller net (64-200-200, z=10, batches of 64) that
learns in a minute.

    python -m models.latent.vae                    # scikit-learn digits, ~1-2 min
    python -m models.latent.vae --data mnist --epochs 100 --checkpoint runs/vae.pt
"""
import torch
from torch import nn

import inference
import ppl
from models import experiment

__all__ = ["build_gen", "build_q_net", "new_templates", "mlp", "check_images", "image_net",
           "normal_node", "bernoulli_images", "elbo_step", "main"]


def mlp(in_dim, hidden, activation=nn.ReLU):
    """Fully connected layers in_dim -> hidden[0] -> ... -> hidden[-1], each then `activation`."""
    layers, width = [], in_dim
    for size in hidden:
        layers += [nn.Linear(width, size), activation()]
        width = size
    return nn.Sequential(*layers)


def check_images(x, x_dim=None):
    """Raise a ValueError naming node 'x' unless `x` is a float tensor [n, x_dim]."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 2 \
            or (x_dim is not None and x.shape[1] != x_dim):
        got = (f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor)
               else type(x).__name__)
        want = f"[n, {x_dim}]" if x_dim is not None else "[n, x_dim]"
        raise ValueError(f"node 'x': expected a floating-point tensor of shape {want} holding "
                         f"0/1 pixels, got a {got}")


def image_net(name, x, hidden, activation=nn.ReLU, condition=None):
    """The template's MLP `name` (`mlp`) applied to images x [n, x_dim]: [n, hidden[-1]].

    `condition` [n, c] (e.g. one-hot labels) is appended to each image. A
    ValueError names node 'x' unless x is a float tensor [n, x_dim] as wide as
    the images the net was made for.
    """
    check_images(x)
    extra = 0 if condition is None else condition.shape[-1]
    net = ppl.module(name, lambda: mlp(x.shape[1] + extra, hidden, activation))
    check_images(x, net[0].in_features - extra)
    return net(x if condition is None else torch.cat([x, condition], -1))


def normal_node(bn, name, h, z_dim, n_samples=None):
    """Add the node `name` ~ N(mean, exp(logstd)^2) [..., z_dim] (group_ndims=1) to `bn`,
    mean and logstd linear maps of the features h [..., width] (modules `name`_mean,
    `name`_logstd); returns the node."""
    mean = ppl.module(f"{name}_mean", lambda: nn.Linear(h.shape[-1], z_dim))(h)
    logstd = ppl.module(f"{name}_logstd", lambda: nn.Linear(h.shape[-1], z_dim))(h)
    return bn.normal(name, mean, logstd=logstd, group_ndims=1, n_samples=n_samples)


def bernoulli_images(bn, h, x_dim):
    """Add the node "x" ~ Bernoulli(logits) [..., x_dim] (group_ndims=1) to `bn`, the logits
    a linear map of the features h [..., width] (module "x_logits"), and the pixel
    probabilities as the output "x_mean"."""
    x_logits = ppl.module("x_logits", lambda: nn.Linear(h.shape[-1], x_dim))(h)
    bn.output("x_mean", torch.sigmoid(x_logits))
    bn.bernoulli("x", x_logits, group_ndims=1)


@ppl.meta_bayesian_net(scope="gen", reuse_variables=True)
def build_gen(x_dim, z_dim, n, n_particles=1, hidden=(500, 500)):
    """p(z) p(x | z): z [n_particles, n, z_dim], x [n_particles, n, x_dim] (Bernoulli)."""
    bn = ppl.BayesianNet()
    z = bn.normal("z", torch.zeros(n, z_dim), std=1., group_ndims=1, n_samples=n_particles)
    bernoulli_images(bn, ppl.module("decoder", lambda: mlp(z_dim, hidden))(z), x_dim)
    return bn


@ppl.reuse_variables(scope="q_net")
def build_q_net(x, z_dim, n_z_per_x, hidden=(500, 500)):
    """q(z | x): a diagonal Normal, z [n_z_per_x, n, z_dim], for images x [n, x_dim]."""
    h = image_net("encoder", x, hidden)
    bn = ppl.BayesianNet()
    normal_node(bn, "z", h, z_dim, n_z_per_x)
    return bn


def new_templates():
    """Fresh, untrained copies of (`build_gen`, `build_q_net`).

    Templates own their parameters: `build_gen` itself is trained once per
    process; use fresh copies to train several models side by side.
    """
    return (ppl.meta_bayesian_net(scope="gen")(build_gen.fn),
            ppl.reuse_variables(scope="q_net")(build_q_net.fn))


def elbo_step(gen, q_net, z_dim, n_particles=1, hidden=(500, 500)):
    """A training step function x -> (cost, ELBO) using the SGVB gradient."""
    def step(x):
        model = gen(x.shape[1], z_dim, x.shape[0], n_particles, hidden=hidden)
        variational = q_net(x, z_dim, n_particles, hidden=hidden)
        lower_bound = inference.elbo(model, {"x": x}, variational=variational, axis=0)
        return lower_bound.sgvb().mean(), lower_bound
    return step


DIGITS_DEFAULTS = {"epochs": 200, "batch_size": 64, "z_dim": 10, "hidden": (200, 200)}
MNIST_DEFAULTS = {"epochs": 10, "batch_size": 128, "z_dim": 40, "hidden": (500, 500)}


def main(argv=None):
    """`python -m models.latent.vae ARGV`; returns the metrics written to DIR/metrics.json."""
    parser = experiment.common_parser(
        "vae", "Train ZhuSuan's VAE (784-500-500, z=40 on MNIST) by the ELBO (SGVB).",
        DIGITS_DEFAULTS, MNIST_DEFAULTS, quick_epochs=5)
    args = parser.parse_args(argv)

    def setup(args, data):
        return experiment.zhusuan_model(
            build_gen, build_q_net, data.x_dim, args.z_dim,
            elbo_step(build_gen, build_q_net, args.z_dim, hidden=args.hidden), hidden=args.hidden)
    return experiment.run(args, "vae", setup)


if __name__ == "__main__":
    main()
