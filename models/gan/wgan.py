"""Wasserstein GAN (Arjovsky et al. 2017) and WGAN-GP (Gulrajani et al. 2017), with the
DCGAN networks (ZhuSuan's examples/generative_adversarial_nets/wasserstein_gan.py).

    z ~ N(0, I), x = G(z)              the DCGAN generator, a BayesianNet with output node x
    critic f: images -> R              the DCGAN discriminator without its sigmoid
    critic loss  E f(G(z)) - E f(x)    (minus the Wasserstein-1 estimate), generator -E f(G(z))

f is kept Lipschitz by `--penalty clip` (weights clamped to [-0.01, 0.01]
after each critic update, RMSprop lr 5e-5, as the paper) or `--penalty gp`
(10 E (|grad f(x_hat)| - 1)^2 at interpolates, no batch norm in the critic,
Adam lr 1e-4, betas 0.5, 0.9); `--n-critic` 5 critic updates per generator
update. The critic's loss is written per epoch (`critic_loss_curve`) beside the
classifier FID (`fid_curve`) and their correlation (Pearson's and Spearman's): minus
the critic loss estimates the Wasserstein distance, which should fall as the samples
improve, so a critic whose loss tracks sample quality gives a negative correlation (its
loss rises towards 0 as the FID falls).

    python -m models.gan.wgan --penalty gp --epochs 5
"""
import torch

from models.gan import common, dcgan

__all__ = ["main"]


def main(argv=None):
    """`python -m models.gan.wgan ARGV`; returns the metrics written to DIR/metrics.json."""
    p = common.parser("gan.wgan", "Train a Wasserstein GAN (weight clipping or gradient "
                                  "penalty) with the DCGAN networks.", epochs=5, lr=None)
    p.add_argument("--penalty", choices=("clip", "gp"), default="gp")
    p.add_argument("--n-critic", type=int, default=5)
    p.add_argument("--width", type=int, default=32, help="channels of the first layer")
    args = p.parse_args(argv)
    gen = dcgan.new_generator()
    critic = dcgan.discriminator(args.width, norm=args.penalty == "clip")
    if args.penalty == "clip":
        lr = args.lr or 5e-5
        optimizers = tuple(lambda params: torch.optim.RMSprop(params, lr) for _ in range(2))
        lipschitz = {"clip": 0.01}
    else:
        lr = args.lr or 1e-4
        optimizers = tuple(lambda params: torch.optim.Adam(params, lr, betas=(0.5, 0.9))
                           for _ in range(2))
        lipschitz = {"penalty_weight": 10.}
    return common.run(args, f"wgan-{args.penalty}", gen, critic,
                      lambda batch: gen(len(batch), args.z_dim, args.width),
                      loss="wasserstein", n_critic=args.n_critic, optimizers=optimizers,
                      **lipschitz)


if __name__ == "__main__":
    main()
