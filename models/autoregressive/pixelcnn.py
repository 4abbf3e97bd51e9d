"""PixelCNN (van den Oord et al. 2016) on binarized MNIST: masked convolutions A and B.

    x [B, 1, 28, 28] -> 7x7 conv, mask A -> n x (ReLU, 3x3 conv, mask B, + residual)
                     -> ReLU, 1x1 conv -> ReLU, 1x1 conv -> Bernoulli logits

Mask A hides the centre pixel and everything after it in raster order; mask B
lets a layer see its own position (already computed only from earlier
pixels), so every output depends on the pixels strictly before it.

    python -m models.autoregressive.pixelcnn --epochs 10 --channels 64 --layers 7
"""
import torch
import torch.nn.functional as F
from torch import nn

from models import zoo
from models.autoregressive import common

__all__ = ["MaskedConv2d", "PixelCNN", "main"]


class MaskedConv2d(nn.Conv2d):
    """A 'same' convolution that sees only the pixels before the centre in raster order
    (mask "A"), or those and the centre itself (mask "B")."""

    def __init__(self, in_channels, out_channels, kernel_size, mask_type):
        if mask_type not in ("A", "B"):
            raise ValueError(f"MaskedConv2d: `mask_type` must be 'A' or 'B', got {mask_type!r}")
        if kernel_size % 2 != 1:
            raise ValueError(f"MaskedConv2d: `kernel_size` must be odd, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        mask = torch.ones(kernel_size, kernel_size)
        centre = kernel_size // 2
        mask[centre, centre + (mask_type == "B"):] = 0
        mask[centre + 1:] = 0
        self.register_buffer("mask", mask)
        self.mask_type = mask_type

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelCNN(nn.Module):
    """x [B, 1, H, W] -> Bernoulli logits [B, 1, 1, H, W] (raster order)."""

    def __init__(self, channels=64, layers=7):
        super().__init__()
        self.first = MaskedConv2d(1, channels, 7, "A")
        self.hidden = nn.ModuleList(MaskedConv2d(channels, channels, 3, "B")
                                    for _ in range(layers - 1))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                  nn.Conv2d(channels, 1, 1))

    def forward(self, x):
        h = self.first(x)
        for conv in self.hidden:
            h = h + conv(torch.relu(h))
        return self.head(h).unsqueeze(1)


def main(argv=None):
    parser = zoo.parser("autoregressive.pixelcnn", __doc__.splitlines()[0],
                        data="binarized_mnist", epochs=10)
    parser.add_argument("--channels", type=zoo.positive_int, default=32)
    parser.add_argument("--layers", type=zoo.positive_int, default=5)
    args = common.add_training_args(parser, lr=1e-3, batch_size=64).parse_args(argv)
    net = PixelCNN(args.channels, args.layers)
    settings = {"model": "pixelcnn", "channels": args.channels, "layers": args.layers,
                "lr": args.lr}
    return common.run_binarized_mnist(args, net, settings,
                                      model_kwargs={"value_shape": (1, 28, 28)})


if __name__ == "__main__":
    main()
