"""Glow (Kingma & Dhariwal 2018) on dequantized MNIST: actnorm, 1x1 convolutions, couplings.

Data side -> latent side, L = 2 levels of K steps (listed base -> value below):

    [1, 28, 28]  squeeze -> [4, 14, 14], K steps, factor out 2 channels
    [2, 14, 14]  squeeze -> [8, 7, 7], K steps -> latent

A step is ActNorm (data-dependent init), an LU-parametrized invertible 1x1
convolution, and an affine coupling on half the channels (a 3x3-1x1-3x3 CNN
of `--hidden` channels, zero-initialized; the paper: 512). Factored-out
channels get a standard normal (the paper learns a conditional prior).

    python -m models.flows.glow --epochs 10 --steps 8 --out runs/flows/glow
"""
from models import zoo
from models.flows.common import IMAGE_SHAPE, FlowModel, add_flow_args, run_images
from ppl.flows import (ActNorm, ConvAffineCoupling, FactorOut, InvertibleConv1x1, Inverse,
                       Logit, Reshape, Squeeze)

__all__ = ["glow_steps", "glow_transforms", "main"]


def glow_steps(shape, n_steps, hidden):
    """K flow steps on `shape`, base -> value: per step (value side first) actnorm,
    1x1 convolution, coupling; listed reversed so the data meet actnorm first."""
    layers = []
    for i in range(n_steps):
        layers += [ActNorm(shape), InvertibleConv1x1(shape),
                   ConvAffineCoupling(shape, hidden, mask="channel", parity=i % 2)]
    return layers[::-1]


def glow_transforms(n_steps=4, hidden=64, n_levels=2, alpha=1e-6, image_shape=IMAGE_SHAPE,
                    logit=True):
    """Glow's layers base -> value: a flat base (784) to images [1, 28, 28] (or to values
    of `image_shape`, in logit space when `logit` is False)."""
    def level(shape, levels_left):
        c, h, w = shape
        squeezed = (4 * c, h // 2, w // 2)
        steps = glow_steps(squeezed, n_steps, hidden)
        if levels_left == 1:
            inner = [Reshape(4 * c * (h // 2) * (w // 2), squeezed)]
        else:
            inner = [FactorOut(squeezed, level((2 * c, h // 2, w // 2), levels_left - 1))]
        return [*inner, *steps, Inverse(Squeeze(shape))]
    layers = level(tuple(image_shape), n_levels)
    return [*layers, Inverse(Logit(image_shape, alpha))] if logit else layers


def main(argv=None):
    parser = zoo.parser("flows.glow", __doc__.splitlines()[0], data="mnist", epochs=10)
    add_flow_args(parser, lr=1e-3, batch_size=64)
    parser.add_argument("--steps", type=zoo.positive_int, default=4, help="K, steps per level")
    parser.add_argument("--hidden", type=zoo.positive_int, default=64)
    parser.add_argument("--levels", type=zoo.positive_int, default=2, choices=[1, 2])
    parser.add_argument("--alpha", type=float, default=1e-6, help="the logit's alpha (1e-6)")
    args = parser.parse_args(argv)
    zoo.start(args)
    flow = FlowModel(glow_transforms(args.steps, args.hidden, args.levels, args.alpha))
    return run_images(args, flow, {"model": "glow", "steps": args.steps, "hidden": args.hidden,
                                   "levels": args.levels, "alpha": args.alpha})


if __name__ == "__main__":
    main()
