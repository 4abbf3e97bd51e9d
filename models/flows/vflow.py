"""VFlow (Chen et al. 2020): a flow on images x augmented with latent channels z.

    y = logit(1e-6 + (1 - 2e-6) x)                 pixels in logit space [1, 28, 28]
    (y, z) ~ Glow on [1 + C_z, 28, 28]             the joint p(y, z), one flow
    q(z | x) = N(mu(y), sigma(y)^2)                the guide, a BayesianNet (CNN encoder)

p(y) = int p(y, z) dz has no closed form: the model is trained by the
variational bound log p(y) >= E_q[log p(y, z) - log q(z | y)] (SGVB, via
`inference.elbo` on the log-joint) and scored by importance sampling with q
as proposal (`inference.is_loglikelihood`, `--is-samples` particles). The
augmented channels widen every layer, so the flow is more expressive than
Glow of the same depth on x alone (`models.flows.glow`, the baseline).

    python -m models.flows.vflow --epochs 10 --aug-channels 1 --out runs/flows/vflow
"""
import torch
from torch import nn

import inference
import ppl
from models import zoo
from models.flows.common import (IMAGE_SHAPE, MAF_PAPER_ALPHA, FlowModel, add_flow_args,
                                 load_images, mean_over, train)
from models.flows.glow import glow_transforms
from ppl.flows import Inverse, Logit, bits_per_dim, dequantize

__all__ = ["VFlow", "build_guide", "main"]


class VFlow(nn.Module):
    """The joint flow p(y, z) on [1 + aug_channels, 28, 28] and the guide's encoder."""

    def __init__(self, aug_channels=1, n_steps=4, hidden=64, n_levels=2, guide_hidden=32):
        super().__init__()
        self.aug_channels = aug_channels
        shape = (1 + aug_channels,) + IMAGE_SHAPE[1:]
        self.joint = FlowModel(glow_transforms(n_steps, hidden, n_levels, image_shape=shape,
                                               logit=False))
        self.encoder = nn.Sequential(
            nn.Conv2d(1, guide_hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(guide_hidden, guide_hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(guide_hidden, 2 * aug_channels, 3, padding=1))
        self.logit = Logit(IMAGE_SHAPE, MAF_PAPER_ALPHA)

    def log_joint(self, values):
        """log p(y, z) for y [n, 1, 28, 28] and z [k, n, C_z, 28, 28]: [k, n]."""
        y, z = values["y"], values["z"]
        return self.joint.log_prob(torch.cat([y.expand(z.shape[:-3] + y.shape[-3:]), z], -3))

    def sample(self, n):
        """n images [n, 1, 28, 28] in [0, 1]: y from the joint flow, through the sigmoid."""
        y = self.joint.sample(n)[:, :1]
        return Inverse(self.logit)(y)[0].clamp(0, 1)


def build_guide(vflow, y, n_particles):
    """q(z | y) as a BayesianNet: z [n_particles, n, C_z, 28, 28], a diagonal Normal."""
    bn = ppl.BayesianNet()
    mean, logstd = vflow.encoder(y).chunk(2, dim=-3)
    bn.normal("z", mean, logstd=logstd, group_ndims=3, n_samples=n_particles)
    return bn


def to_logit_space(vflow, pixels, generator=None):
    """Dequantized pixels u [n, 1, 28, 28], their logits y and log |dy/du| [n]."""
    u = dequantize(pixels, generator=generator)
    y, log_det = vflow.logit(u)
    return u, y, log_det


def elbo_step(vflow):
    """`step_fn(pixels) -> (cost, bound in bits/dim)`: the SGVB gradient of the bound."""
    def step(pixels):
        u, y, log_det = to_logit_space(vflow, pixels)
        bound = inference.elbo(vflow.log_joint, {"y": y},
                               variational=build_guide(vflow, y, 1), axis=0)
        dims = u[0].numel()
        return bound.sgvb().mean() / dims, bits_per_dim(bound.tensor + log_det, dims)
    return step


def vflow_metrics(vflow, test, seed, is_samples, progress=True):
    """The bound and the IS estimate, in bits/dim and in nats in logit space."""
    dims = test[0].numel()
    u_all = dequantize(test, generator=torch.Generator().manual_seed(seed))

    def fn(u):
        y, log_det = vflow.logit(u)
        bound = inference.elbo(vflow.log_joint, {"y": y},
                               variational=build_guide(vflow, y, 1), axis=0).tensor
        log_lik = inference.is_loglikelihood(vflow.log_joint, {"y": y},
                                             proposal=build_guide(vflow, y, is_samples), axis=0)
        return {"test_elbo_bits_per_dim": bits_per_dim(bound + log_det, dims),
                "test_bits_per_dim": bits_per_dim(log_lik + log_det, dims),
                "test_elbo_logit_nats": bound, "test_loglik_logit_nats": log_lik}
    return mean_over(fn, u_all, batch_size=max(1, 2000 // is_samples), progress=progress)


def main(argv=None):
    parser = zoo.parser("flows.vflow", __doc__.splitlines()[0], data="mnist", epochs=10)
    add_flow_args(parser, lr=1e-3, batch_size=64)
    parser.add_argument("--aug-channels", type=zoo.positive_int, default=1,
                        help="C_z, channels of z (1)")
    parser.add_argument("--steps", type=zoo.positive_int, default=4, help="K, steps per level")
    parser.add_argument("--hidden", type=zoo.positive_int, default=64)
    parser.add_argument("--is-samples", type=zoo.positive_int, default=16,
                        help="importance samples per test image (16)")
    args = parser.parse_args(argv)
    zoo.start(args)
    budget = zoo.Budget()
    train_x, test_x = load_images(args)
    vflow = VFlow(args.aug_channels, args.steps, args.hidden)
    settings = {"model": "vflow", "aug_channels": args.aug_channels, "steps": args.steps,
                "hidden": args.hidden, "batch_size": args.batch_size, "lr": args.lr,
                "seed": args.seed, "data": args.data, "is_samples": args.is_samples}
    history, epochs, steps = train(args, {"vflow": vflow}, elbo_step(vflow), train_x, settings)
    vflow.eval()
    metrics = vflow_metrics(vflow, test_x, args.seed, args.is_samples,
                            progress=not args.no_progress)
    metrics["train_elbo_bits_per_dim_last_epoch"] = history[-1]
    metrics["n_parameters"] = sum(p.numel() for p in vflow.parameters())
    with torch.no_grad():
        samples = vflow.sample(args.n_samples)
    zoo.save_samples(args.out, samples.reshape(args.n_samples, -1))
    result = zoo.write_metrics(args.out, metrics, budget.as_dict(epochs, train_steps=steps, **settings))
    print(", ".join(f"{k} = {v:.4g}" for k, v in metrics.items()))
    return result


if __name__ == "__main__":
    main()
