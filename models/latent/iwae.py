"""Importance weighted autoencoder (Burda, Grosse & Salakhutdinov 2016).

The VAE of `models.latent.vae` (same model and guide) trained on the importance
weighted bound with k particles per image,

    L_k = E[log (1/k) sum_i p(x, z_i) / q(z_i | x)],   z_i ~ q(z | x),

which tightens towards log p(x) as k grows (k=50 by default), with its SGVB
gradient. Reported: the test L_k, the test ELBO, and the test
log-likelihood by importance sampling.

    python -m models.latent.iwae                   # scikit-learn digits
    python -m models.latent.iwae --data mnist --epochs 100 --checkpoint runs/iwae.pt
"""
import inference
import ppl
from models import experiment
from models.latent.vae import DIGITS_DEFAULTS, MNIST_DEFAULTS
from models.latent.vae import build_gen as vae_gen
from models.latent.vae import build_q_net as vae_q_net
from models.latent.vae import held_out_metrics as vae_held_out_metrics

__all__ = ["build_gen", "build_q_net", "new_templates", "iw_step", "held_out_metrics", "main"]

# The IWAE is the VAE's model and guide with another objective; it owns its
# own copies of the templates so that it trains its own parameters.
build_gen = ppl.meta_bayesian_net(scope="gen")(vae_gen.fn)
build_q_net = ppl.reuse_variables(scope="q_net")(vae_q_net.fn)


def new_templates():
    """Fresh, untrained copies of (`build_gen`, `build_q_net`)."""
    return (ppl.meta_bayesian_net(scope="gen")(vae_gen.fn),
            ppl.reuse_variables(scope="q_net")(vae_q_net.fn))


def iw_objective(gen, q_net, x, z_dim, n_particles, hidden=(500, 500)):
    """The importance weighted bound L_k of images `x` [n, x_dim], k = `n_particles`."""
    model = gen(x.shape[1], z_dim, x.shape[0], n_particles, hidden=hidden)
    variational = q_net(x, z_dim, n_particles, hidden=hidden)
    return inference.iw_objective(model, {"x": x}, variational=variational, axis=0)


def iw_step(gen, q_net, z_dim, n_particles=50, hidden=(500, 500)):
    """A training step function x -> (cost, L_k) using the IWAE (SGVB) gradient."""
    def step(x):
        lower_bound = iw_objective(gen, q_net, x, z_dim, n_particles, hidden)
        return lower_bound.sgvb().mean(), lower_bound
    return step


def held_out_metrics(gen, q_net, z_dim, n_particles=50, *, progress=True):
    """held_out_metrics(images) -> the test L_k (k = `n_particles`) and the test ELBO."""
    elbo_metrics = vae_held_out_metrics(gen, q_net, z_dim, progress=progress)

    def metrics(images):
        bound = experiment.mean_over_batches(
            lambda x: iw_objective(gen, q_net, x, z_dim, n_particles), images, batch_size=100,
            desc=f"test L_{n_particles}", progress=progress)
        return {f"test_iw_bound_k{n_particles}": bound, **elbo_metrics(images)}
    return metrics


def main(argv=None):
    parser = experiment.common_parser(
        "iwae", "Train the VAE (784-500-500, z=40 on MNIST) by the importance weighted bound.",
        {**DIGITS_DEFAULTS, "epochs": 50}, MNIST_DEFAULTS, quick_epochs=2)
    parser.add_argument("--particles", type=int, default=50,
                        help="k, importance samples per image in the training bound")
    args = parser.parse_args(argv)

    def setup(args):
        return ({"model": build_gen, "guide": build_q_net},
                iw_step(build_gen, build_q_net, args.z_dim, args.particles, hidden=args.hidden),
                held_out_metrics(build_gen, build_q_net, args.z_dim, args.particles,
                                 progress=not args.no_progress),
                build_gen, build_q_net)
    return experiment.run(args, "iwae", setup)


if __name__ == "__main__":
    main()
