"""A VAE with binary latent units, trained with score-function gradients.

    z ~ Bernoulli(1/2)                   [n_particles, n, z_dim]
    x ~ Bernoulli(logits=f_NN(z))        f_NN: z_dim-500-500-x_dim, ReLU
    q(z | x) = Bernoulli(logits=g_NN(x))

with 200 binary units on MNIST (as in the NVIL and VIMCO papers), and a
smaller 10-unit, 200-200 net on the 8x8 digits (with 50 units, NVIL stays
at the independent-pixel solution there for 100 epochs; VIMCO does not).

Discrete z cannot be reparameterized, so the gradient comes from the score
function log q(z | x) (as in ZhuSuan's bernoulli_latent_vae example):

- `--estimator reinforce`: NVIL (Mnih & Gregor 2014), one sample per image,
  REINFORCE on the ELBO with a moving-average baseline (kept by the model
  template) and a learned input-dependent baseline c(x), a 100-unit MLP;
- `--estimator vimco`: VIMCO (Mnih & Rezende 2016), k samples per image
  (default 10), the importance weighted bound with leave-one-out baselines.

Reported (DIR/metrics.json): the test ELBO, the test k-sample bound (VIMCO),
and the test log-likelihood by importance sampling with q as proposal; samples
in DIR/samples.npy.

    python -m models.latent.bernoulli_vae --estimator vimco
"""
import torch
from torch import nn

import inference
import ppl
from models import experiment
from models.latent.vae import bernoulli_images, image_net, mlp

__all__ = ["build_gen", "build_q_net", "build_baseline", "new_templates", "reinforce_step",
           "vimco_step", "main"]


@ppl.meta_bayesian_net(scope="gen", reuse_variables=True)
def build_gen(x_dim, z_dim, n, n_particles=1, hidden=(500, 500)):
    """p(z) p(x | z): binary z [n_particles, n, z_dim], x [n_particles, n, x_dim]."""
    bn = ppl.BayesianNet()
    z = bn.bernoulli("z", torch.zeros(n, z_dim), group_ndims=1, n_samples=n_particles)
    bernoulli_images(bn, ppl.module("decoder", lambda: mlp(z_dim, hidden))(z), x_dim)
    return bn


@ppl.reuse_variables(scope="q_net")
def build_q_net(x, z_dim, n_z_per_x, hidden=(500, 500)):
    """q(z | x): independent Bernoulli units, z [n_z_per_x, n, z_dim]."""
    h = image_net("encoder", x, hidden)
    bn = ppl.BayesianNet()
    z_logits = ppl.module("z_logits", lambda: nn.Linear(hidden[-1], z_dim))(h)
    bn.bernoulli("z", z_logits, group_ndims=1, n_samples=n_z_per_x)
    return bn


@ppl.reuse_variables(scope="baseline")
def build_baseline(x, hidden=100):
    """c(x): NVIL's learned baseline of the learning signal, one number per image [n]."""
    net = ppl.module("net", lambda: nn.Sequential(mlp(x.shape[1], (hidden,)),
                                                  nn.Linear(hidden, 1)))
    return net(x).squeeze(-1)


def new_templates():
    """Fresh, untrained copies of (`build_gen`, `build_q_net`, `build_baseline`)."""
    return (ppl.meta_bayesian_net(scope="gen")(build_gen.fn),
            ppl.reuse_variables(scope="q_net")(build_q_net.fn),
            ppl.reuse_variables(scope="baseline")(build_baseline.fn))


def reinforce_step(gen, q_net, baseline, z_dim, hidden=(500, 500)):
    """A training step x -> (cost, ELBO): REINFORCE with moving-average and learned baselines."""
    def step(x):
        model = gen(x.shape[1], z_dim, x.shape[0], 1, hidden=hidden)
        variational = q_net(x, z_dim, 1, hidden=hidden)
        lower_bound = inference.elbo(model, {"x": x}, variational=variational, axis=0)
        cost, baseline_cost = lower_bound.reinforce(baseline=baseline(x))
        return (cost + baseline_cost).mean(), lower_bound
    return step


def vimco_step(gen, q_net, z_dim, n_particles=10, hidden=(500, 500)):
    """A training step x -> (cost, k-sample bound) with the VIMCO estimator."""
    def step(x):
        model = gen(x.shape[1], z_dim, x.shape[0], n_particles, hidden=hidden)
        variational = q_net(x, z_dim, n_particles, hidden=hidden)
        lower_bound = inference.iw_objective(model, {"x": x}, variational=variational, axis=0)
        return lower_bound.vimco().mean(), lower_bound
    return step


def main(argv=None):
    """`python -m models.latent.bernoulli_vae ARGV`; returns the metrics (DIR/metrics.json)."""
    parser = experiment.common_parser(
        "bernoulli_vae", "Train a VAE with binary latent units by REINFORCE (NVIL) or VIMCO.",
        {"epochs": 100, "batch_size": 64, "z_dim": 10, "hidden": (200, 200)},
        {"epochs": 10, "batch_size": 100, "z_dim": 200, "hidden": (500, 500)}, quick_epochs=5)
    parser.add_argument("--estimator", choices=("reinforce", "vimco"), default="vimco")
    parser.add_argument("--particles", type=int, default=10,
                        help="k, samples per image for VIMCO (at least 2)")
    args = parser.parse_args(argv)
    if args.estimator == "vimco" and args.particles < 2:
        parser.error("--particles must be at least 2 for VIMCO")

    def setup(args, data):
        if args.estimator == "reinforce":
            return experiment.zhusuan_model(
                build_gen, build_q_net, data.x_dim, args.z_dim,
                reinforce_step(build_gen, build_q_net, build_baseline, args.z_dim,
                               hidden=args.hidden),
                modules={"model": build_gen, "guide": build_q_net, "baseline": build_baseline},
                settings={"estimator": "reinforce"}, hidden=args.hidden)
        return experiment.zhusuan_model(
            build_gen, build_q_net, data.x_dim, args.z_dim,
            vimco_step(build_gen, build_q_net, args.z_dim, args.particles, hidden=args.hidden),
            bound_particles=args.particles, settings={"estimator": "vimco"}, hidden=args.hidden)
    return experiment.run(args, "bernoulli_vae", setup)


if __name__ == "__main__":
    main()
