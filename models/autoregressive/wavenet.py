"""WaveNet (van den Oord et al. 2016) on binarized MNIST read as a 784-step sequence.

    x [B, 784] -> shift right by one -> causal 2-tap conv -> n x gated residual block
               -> ReLU, 1x1 conv (sum of skips) -> ReLU, 1x1 conv -> Bernoulli logits

Each block is a causal convolution of kernel 2 and dilation 1, 2, 4, ... (left
padding only), gated as tanh(f) * sigmoid(g), with residual and skip 1x1
convolutions; ten doublings reach 1024 > 784 steps back.

    python -m models.autoregressive.wavenet --epochs 5 --channels 32 --layers 10
"""
import torch
import torch.nn.functional as F
from torch import nn

from models import zoo
from models.autoregressive import common

__all__ = ["CausalConv1d", "WaveNet", "main"]


class CausalConv1d(nn.Conv1d):
    """A 1-D convolution whose output at t sees inputs t - dilation*(k-1) .. t only."""

    def __init__(self, in_channels, out_channels, kernel_size=2, dilation=1):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        self.left = dilation * (kernel_size - 1)

    def forward(self, x):
        return super().forward(F.pad(x, (self.left, 0)))


class _GatedBlock(nn.Module):
    def __init__(self, channels, dilation):
        super().__init__()
        self.conv = CausalConv1d(channels, 2 * channels, 2, dilation)
        self.residual = nn.Conv1d(channels, channels, 1)
        self.skip = nn.Conv1d(channels, channels, 1)

    def forward(self, h):
        f, g = self.conv(h).chunk(2, dim=1)
        z = torch.tanh(f) * torch.sigmoid(g)
        return h + self.residual(z), self.skip(z)


class WaveNet(nn.Module):
    """x [B, T] -> Bernoulli logits [B, 1, T]: output t sees x_0 .. x_{t-1} only."""

    def __init__(self, channels=32, layers=10):
        super().__init__()
        self.first = CausalConv1d(1, channels, 2)
        self.blocks = nn.ModuleList(_GatedBlock(channels, 2 ** (i % 10)) for i in range(layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(channels, channels, 1), nn.ReLU(),
                                  nn.Conv1d(channels, 1, 1))

    def forward(self, x):
        shifted = F.pad(x, (1, -1)).unsqueeze(1)  # position t holds x_{t-1}
        h = self.first(shifted)
        skips = 0
        for block in self.blocks:
            h, skip = block(h)
            skips = skips + skip
        return self.head(skips)


def main(argv=None):
    parser = zoo.parser("autoregressive.wavenet", __doc__.splitlines()[0],
                        data="binarized_mnist", epochs=5)
    parser.add_argument("--channels", type=zoo.positive_int, default=32)
    parser.add_argument("--layers", type=zoo.positive_int, default=10)
    args = common.add_training_args(parser, lr=1e-3, batch_size=64).parse_args(argv)
    net = WaveNet(args.channels, args.layers)
    settings = {"model": "wavenet", "channels": args.channels, "layers": args.layers,
                "lr": args.lr}
    return common.run_binarized_mnist(args, net, settings)


if __name__ == "__main__":
    main()
