"""NICE (Dinh et al. 2015) on dequantized MNIST: additive couplings and a diagonal scaling.

    z ~ N(0, I_784) -> 4 additive couplings (alternating halves, ReLU MLPs)
      -> Scaling -> images [1, 28, 28] -> sigmoid (Inverse(Logit))

The paper's net is 5 hidden layers of 1000 units with a logistic prior; the
defaults here are CPU-sized (`--hidden 1000 --depth 5` for the paper's).

    python -m models.flows.nice --epochs 10 --out runs/flows/nice
"""
from models import zoo
from models.flows.common import IMAGE_SHAPE, FlowModel, add_flow_args, run_images
from ppl.flows import AdditiveCoupling, Inverse, Logit, Reshape, Scaling

__all__ = ["nice_transforms", "main"]


def nice_transforms(n_couplings=4, hidden=256, depth=2, alpha=1e-6):
    """NICE's layers base -> value on flat MNIST (784), ending in images [1, 28, 28]."""
    dim = 784
    layers = [AdditiveCoupling(dim, [hidden] * depth, parity=i % 2) for i in range(n_couplings)]
    return [*layers, Scaling(dim), Reshape(dim, IMAGE_SHAPE), Inverse(Logit(IMAGE_SHAPE, alpha))]


def main(argv=None):
    parser = zoo.parser("flows.nice", __doc__.splitlines()[0], data="mnist", epochs=10)
    add_flow_args(parser, lr=1e-3, batch_size=100)
    parser.add_argument("--couplings", type=zoo.positive_int, default=4)
    parser.add_argument("--hidden", type=zoo.positive_int, default=256)
    parser.add_argument("--depth", type=zoo.positive_int, default=2)
    parser.add_argument("--alpha", type=float, default=1e-6, help="the logit's alpha (1e-6)")
    args = parser.parse_args(argv)
    zoo.start(args)
    flow = FlowModel(nice_transforms(args.couplings, args.hidden, args.depth, args.alpha))
    return run_images(args, flow, {"model": "nice", "couplings": args.couplings,
                                   "hidden": args.hidden, "depth": args.depth,
                                   "alpha": args.alpha})


if __name__ == "__main__":
    main()
