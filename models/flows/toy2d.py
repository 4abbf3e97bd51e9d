"""2-D toy densities (two moons, rings, checkerboard) fit by a flow, with pictures.

    python -m models.flows.toy2d --data two-moons --flow maf --out runs/flows/moons

Writes metrics.json (`test_loglik_nats` on fresh draws), samples.npy [N, 2]
and density.png: the data, the learnt density on a grid and the flow's samples.
"""
import math

import numpy as np
import torch

from models import zoo
from models.flows.common import FlowModel, add_flow_args, fit_vectors
from ppl.flows import ActNorm, AdditiveCoupling, AffineCoupling, Scaling, maf

__all__ = ["TOY_DATA", "sample_toy", "toy_transforms", "density_grid", "plot", "main"]

TOY_DATA = ("two-moons", "rings", "checkerboard")
FLOWS = ("maf", "realnvp", "nice")


def sample_toy(name, n, generator=None):
    """n points [n, 2] of toy density `name` (roughly within [-4, 4]^2)."""
    g = generator
    if name == "two-moons":
        t = math.pi * torch.rand(n, generator=g)
        upper = torch.rand(n, generator=g) < 0.5
        x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
        y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
        points = torch.stack([x - 0.5, y - 0.25], -1) * 2
        return points + 0.1 * torch.randn(n, 2, generator=g)
    if name == "rings":
        radius = 1. + torch.randint(0, 4, (n,), generator=g).float() * 0.8
        angle = 2 * math.pi * torch.rand(n, generator=g)
        points = torch.stack([radius * angle.cos(), radius * angle.sin()], -1)
        return points + 0.08 * torch.randn(n, 2, generator=g)
    if name == "checkerboard":
        x = 8 * torch.rand(n, generator=g) - 4
        column = torch.floor(x).long() % 2
        y = 2 * torch.rand(n, generator=g) - 4 + 2 * torch.randint(0, 4, (n,), generator=g) \
            + column
        return torch.stack([x, y], -1)
    raise ValueError(f"unknown toy data {name!r}; expected one of {TOY_DATA}")


def toy_transforms(flow="maf", n_layers=5, hidden=64):
    """A 2-D flow base -> value: MAF (`n_layers` MADEs), RealNVP (2 `n_layers` affine
    couplings and actnorms) or NICE (2 `n_layers` additive couplings and a scaling)."""
    if flow == "maf":
        return list(maf(2, n_layers, [hidden, hidden], batch_norm=True))
    if flow == "realnvp":
        layers = []
        for i in range(2 * n_layers):
            layers += [AffineCoupling(2, [hidden, hidden], parity=i % 2), ActNorm(2)]
        return layers
    if flow == "nice":
        return [*(AdditiveCoupling(2, [hidden, hidden], parity=i % 2)
                  for i in range(2 * n_layers)), Scaling(2)]
    raise ValueError(f"unknown flow {flow!r}; expected one of {FLOWS}")


def density_grid(flow, limit=4.5, n=200):
    """(x-axis [n], y-axis [n], density [n, n] with rows along y) of `flow` on a grid."""
    axis = torch.linspace(-limit, limit, n)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    with torch.no_grad():
        log_p = flow.log_prob(torch.stack([xx, yy], -1).reshape(-1, 2)).reshape(n, n)
    density = torch.nan_to_num(log_p.exp(), nan=0., posinf=0.)   # far tails may overflow
    return axis.numpy(), axis.numpy(), density.numpy()


def plot(path, data, flow, samples, title=""):
    """density.png: the data, the learnt density, the flow's samples, side by side."""
    from matplotlib.figure import Figure       # no pyplot: works headless
    x, y, density = density_grid(flow)
    fig = Figure(figsize=(10.5, 3.5))
    axes = fig.subplots(1, 3)
    for ax, (name, points) in zip(axes[[0, 2]], (("data", data), ("samples", samples))):
        ax.hist2d(points[:, 0], points[:, 1], bins=120, range=[[-4.5, 4.5]] * 2, cmap="magma")
        ax.set_title(name)
    axes[1].pcolormesh(x, y, density, cmap="magma", shading="auto")
    axes[1].set_title(f"learnt density {title}")
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return fig


def main(argv=None):
    parser = zoo.parser("flows.toy2d", __doc__.splitlines()[0], data="two-moons", epochs=20,
                        quick_epochs=2, n_samples=5000)
    add_flow_args(parser, lr=3e-3, batch_size=256)
    parser.add_argument("--flow", choices=FLOWS, default="maf")
    parser.add_argument("--layers", type=zoo.positive_int, default=5)
    parser.add_argument("--hidden", type=zoo.positive_int, default=64)
    args = parser.parse_args(argv)
    if args.data not in TOY_DATA:
        parser.error(f"--data must be one of {TOY_DATA}, got {args.data!r}")
    zoo.start(args)
    budget = zoo.Budget()
    g = torch.Generator().manual_seed(args.seed)
    train_x = sample_toy(args.data, args.train_size or 20000, g)
    test_x = sample_toy(args.data, args.test_size or 5000, g)
    flow = FlowModel(toy_transforms(args.flow, args.layers, args.hidden))
    settings = {"model": f"toy2d-{args.flow}", "data": args.data, "layers": args.layers,
                "hidden": args.hidden, "batch_size": args.batch_size, "lr": args.lr,
                "seed": args.seed}
    metrics, epochs, steps = fit_vectors(args, flow, train_x, test_x, settings)
    with torch.no_grad():
        samples = flow.sample(args.n_samples).numpy().astype(np.float32)
    np.save(f"{args.out}/samples.npy", samples)
    plot(f"{args.out}/density.png", train_x.numpy(), flow, samples, f"({args.flow})")
    result = zoo.write_metrics(args.out, metrics, budget.as_dict(epochs, train_steps=steps, **settings))
    print(", ".join(f"{k} = {v:.4g}" for k, v in metrics.items()))
    return result


if __name__ == "__main__":
    main()
