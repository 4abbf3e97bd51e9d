"""Importance weighted autoencoder (Burda, Grosse & Salakhutdinov 2016).

The VAE of `models.latent.vae` (same model and guide) trained on the
importance weighted bound with k particles per image,

    L_k = E[log (1/k) sum_i p(x, z_i) / q(z_i | x)],   z_i ~ q(z | x),

which tightens towards log p(x) as k grows (k=50 by default), with its SGVB
gradient. `--layers 2` is the paper's model with two stochastic layers,

    z2 ~ N(0, I),  z1 | z2 ~ N(mu(z2), sigma(z2)^2),  x | z1 ~ Bernoulli(f(z1))
    q(z1 | x) = N(.., ..),  q(z2 | z1) = N(.., ..)

with tanh nets as in the paper: between x and z1 the `--hidden` layers, between
z1 and z2 layers half as wide, and z2 half of `--z-dim` (on MNIST: 784-100-100-
z1 100-50-50-z2 50). Reported: the test L_k, the test ELBO, and the test
log-likelihood by importance sampling (DIR/metrics.json), and samples.

    python -m models.latent.iwae                   # scikit-learn digits
    python -m models.latent.iwae --data mnist --layers 2 --epochs 100 --checkpoint runs/iwae2.pt
"""
import torch
from torch import nn

import inference
import ppl
from models import experiment, zoo
from models.latent.vae import (DIGITS_DEFAULTS, MNIST_DEFAULTS, bernoulli_images, image_net,
                               mlp, normal_node)
from models.latent.vae import build_gen as vae_gen
from models.latent.vae import build_q_net as vae_q_net

__all__ = ["build_gen", "build_q_net", "build_gen2", "build_q_net2", "new_templates",
           "iw_objective", "iw_step", "main"]

# The IWAE is the VAE's model and guide with another objective; it owns its
# own copies of the templates so that it trains its own parameters.
build_gen = ppl.meta_bayesian_net(scope="gen")(vae_gen.fn)
build_q_net = ppl.reuse_variables(scope="q_net")(vae_q_net.fn)


def _halved(sizes):
    return tuple(max(1, size // 2) for size in sizes)


@ppl.meta_bayesian_net(scope="gen", reuse_variables=True)
def build_gen2(x_dim, z_dims, n, n_particles=1, hidden=(100, 100)):
    """p(z2) p(z1 | z2) p(x | z1): z2 [k, n, z_dims[1]], z1 [k, n, z_dims[0]], x [k, n, x_dim]."""
    z1_dim, z2_dim = z_dims
    bn = ppl.BayesianNet()
    z2 = bn.normal("z2", torch.zeros(n, z2_dim), std=1., group_ndims=1, n_samples=n_particles)
    h2 = ppl.module("h2", lambda: mlp(z2_dim, _halved(hidden), nn.Tanh))(z2)
    z1 = normal_node(bn, "z1", h2, z1_dim)
    bernoulli_images(bn, ppl.module("h1", lambda: mlp(z1_dim, hidden, nn.Tanh))(z1), x_dim)
    return bn


@ppl.reuse_variables(scope="q_net")
def build_q_net2(x, z_dims, n_z_per_x, hidden=(100, 100)):
    """q(z1 | x) q(z2 | z1): z1 [n_z_per_x, n, z_dims[0]], z2 [n_z_per_x, n, z_dims[1]]."""
    h1 = image_net("encoder", x, hidden, nn.Tanh)
    z1_dim, z2_dim = z_dims
    bn = ppl.BayesianNet()
    z1 = normal_node(bn, "z1", h1, z1_dim, n_z_per_x)
    h2 = ppl.module("h2", lambda: mlp(z1_dim, _halved(hidden), nn.Tanh))(z1)
    normal_node(bn, "z2", h2, z2_dim)
    return bn


def new_templates(layers=1):
    """Fresh, untrained copies of (gen, q_net): `build_gen`/`build_q_net`, or the 2-layer ones."""
    gen, q_net = (vae_gen, vae_q_net) if layers == 1 else (build_gen2, build_q_net2)
    return (ppl.meta_bayesian_net(scope="gen", reuse_variables=True)(gen.fn),
            ppl.reuse_variables(scope="q_net")(q_net.fn))


def iw_objective(gen, q_net, x, z_dim, n_particles, hidden=(500, 500)):
    """The importance weighted bound L_k of images `x` [n, x_dim], k = `n_particles`.

    `z_dim`: an int for the one-layer templates, (z1_dim, z2_dim) for the 2-layer ones.
    """
    model = gen(x.shape[1], z_dim, x.shape[0], n_particles, hidden=hidden)
    variational = q_net(x, z_dim, n_particles, hidden=hidden)
    return inference.iw_objective(model, {"x": x}, variational=variational, axis=0)


def iw_step(gen, q_net, z_dim, n_particles=50, hidden=(500, 500)):
    """A training step function x -> (cost, L_k) using the IWAE (SGVB) gradient."""
    def step(x):
        lower_bound = iw_objective(gen, q_net, x, z_dim, n_particles, hidden)
        return lower_bound.sgvb().mean(), lower_bound
    return step


def main(argv=None):
    """`python -m models.latent.iwae ARGV`; returns the metrics written to DIR/metrics.json."""
    parser = experiment.common_parser(
        "iwae", "Train the VAE (784-500-500, z=40 on MNIST), or with --layers 2 Burda et al.'s "
                "two-stochastic-layer model, by the importance weighted bound.",
        {**DIGITS_DEFAULTS, "epochs": 50}, MNIST_DEFAULTS, quick_epochs=2)
    parser.add_argument("--particles", type=zoo.positive_int, default=50,
                        help="k, importance samples per image in the training bound")
    parser.add_argument("--layers", type=int, choices=(1, 2), default=1,
                        help="stochastic layers (2: z-dim and hidden default to 100 and "
                             "100,100 on MNIST, 10 and 100,100 on digits)")
    args = parser.parse_args(argv)
    if args.layers == 2:
        args.mnist_defaults = {**args.mnist_defaults, "z_dim": 100, "hidden": (100, 100)}
        args.digits_defaults = {**args.digits_defaults, "hidden": (100, 100)}
    gen, q_net = (build_gen, build_q_net) if args.layers == 1 else (build_gen2, build_q_net2)

    def setup(args, data):
        z_dim = args.z_dim if args.layers == 1 else (args.z_dim, max(1, args.z_dim // 2))
        return experiment.zhusuan_model(
            gen, q_net, data.x_dim, z_dim,
            iw_step(gen, q_net, z_dim, args.particles, hidden=args.hidden),
            bound_particles=args.particles, settings={"layers": args.layers},
            hidden=args.hidden)
    return experiment.run(args, "iwae", setup)


if __name__ == "__main__":
    main()
