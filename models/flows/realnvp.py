"""RealNVP (Dinh et al. 2017) on dequantized MNIST: a multi-scale flow of affine couplings.

Data side -> latent side (the layers below are listed base -> value):

    [1, 28, 28]  3 checkerboard couplings, squeeze -> [4, 14, 14],
                 3 channel couplings, factor out 2 channels -> [2, 14, 14]
    [2, 14, 14]  3 checkerboard couplings, squeeze -> [8, 7, 7],
                 3 channel couplings, factor out 4 channels -> [4, 7, 7]
    [4, 7, 7]    4 checkerboard couplings -> latent

Couplings use a small CNN (`--hidden` channels; the paper: ResNets of 64
features) with tanh-bounded log-scales; a batch-norm bijection follows each
stack (`--no-batch-norm` to drop it); pixels are logit-transformed with
alpha = 0.05 as in the paper.

    python -m models.flows.realnvp --epochs 10 --out runs/flows/realnvp
"""
from models import zoo
from models.flows.common import IMAGE_SHAPE, FlowModel, add_flow_args, run_images
from ppl.flows import (BatchNorm, ConvAffineCoupling, FactorOut, Inverse, Logit, Reshape,
                       Squeeze)

__all__ = ["realnvp_transforms", "main"]


def _couplings(shape, hidden, mask, n, batch_norm):
    """n couplings with alternating parity, base -> value (then a BatchNorm on the value side)."""
    layers = [ConvAffineCoupling(shape, hidden, mask=mask, parity=i % 2) for i in range(n)]
    return layers + ([BatchNorm(shape)] if batch_norm else [])


def _scale(shape, hidden, inner, batch_norm):
    """One scale, base -> value: inner (base side), channel couplings, unsqueeze,
    checkerboard couplings; `inner(squeezed_half_shape)` builds the coarser scales."""
    c, h, w = shape
    squeezed = (4 * c, h // 2, w // 2)
    half = (2 * c, h // 2, w // 2)
    return [FactorOut(squeezed, inner(half)),
            *reversed(_couplings(squeezed, hidden, "channel", 3, batch_norm)),
            Inverse(Squeeze(shape)),
            *reversed(_couplings(shape, hidden, "checkerboard", 3, batch_norm))]


def realnvp_transforms(hidden=32, n_scales=2, batch_norm=True, alpha=0.05):
    """RealNVP's layers base -> value: a flat base (784) to images [1, 28, 28]."""
    def level(shape, scales_left):
        if scales_left == 0:
            c, h, w = shape
            final = _couplings(shape, hidden, "checkerboard", 4, batch_norm)
            return [Reshape(c * h * w, shape), *reversed(final)]
        return _scale(shape, hidden, lambda half: level(half, scales_left - 1), batch_norm)
    layers = level(IMAGE_SHAPE, n_scales)
    return [*layers, Inverse(Logit(IMAGE_SHAPE, alpha))]


def main(argv=None):
    parser = zoo.parser("flows.realnvp", __doc__.splitlines()[0], data="mnist", epochs=10)
    add_flow_args(parser, lr=1e-3, batch_size=64)
    parser.add_argument("--hidden", type=zoo.positive_int, default=32,
                        help="channels of the coupling CNNs (32)")
    parser.add_argument("--scales", type=zoo.positive_int, default=2, choices=[1, 2])
    parser.add_argument("--no-batch-norm", action="store_true")
    parser.add_argument("--alpha", type=float, default=0.05, help="the logit's alpha (0.05)")
    args = parser.parse_args(argv)
    zoo.start(args)
    flow = FlowModel(realnvp_transforms(args.hidden, args.scales, not args.no_batch_norm,
                                        args.alpha))
    return run_images(args, flow, {"model": "realnvp", "hidden": args.hidden,
                                   "scales": args.scales, "batch_norm": not args.no_batch_norm,
                                   "alpha": args.alpha})


if __name__ == "__main__":
    main()
