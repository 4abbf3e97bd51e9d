"""NADE (Larochelle & Murray 2011) on binarized MNIST.

    h_d = sigmoid(c + W[:, :d] x_<d)              [H]: one hidden layer per dimension,
    p(x_d = 1 | x_<d) = sigmoid(b_d + V_d . h_d)  sharing W across all of them

The shared weights give the O(DH) recurrence a_{d+1} = a_d + W[:, d] x_d, which
`NADE.forward` follows: one pass scores all 784 conditionals.

    python -m models.autoregressive.nade --epochs 20 --checkpoint runs/nade.pt
"""
import math

import torch
from torch import nn

from models import zoo
from models.autoregressive import common

__all__ = ["NADE", "main"]


class NADE(nn.Module):
    """The conditional network: x [B, D] -> Bernoulli logits [B, 1, D] (natural order)."""

    def __init__(self, dim=784, hidden=500):
        super().__init__()
        self.W = nn.Parameter(torch.empty(hidden, dim).uniform_(-1, 1) / math.sqrt(dim))
        self.c = nn.Parameter(torch.zeros(hidden))
        self.V = nn.Parameter(torch.empty(dim, hidden).uniform_(-1, 1) / math.sqrt(hidden))
        self.b = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        a = self.c.expand(x.shape[0], -1)
        logits = []
        for d in range(x.shape[1]):
            logits.append(torch.sigmoid(a) @ self.V[d])
            a = torch.addcmul(a, x[:, d:d + 1], self.W[:, d])
        return (torch.stack(logits, 1) + self.b).unsqueeze(1)

    def conditional(self, x, d):
        """Dimension d's logit alone, [B, 1] (for sampling: O(dH), not a full pass)."""
        h = torch.sigmoid(self.c + x[:, :d] @ self.W[:, :d].t())
        return (h @ self.V[d] + self.b[d]).unsqueeze(1)


def main(argv=None):
    parser = zoo.parser("autoregressive.nade", __doc__.splitlines()[0],
                        data="binarized_mnist", epochs=20)
    parser.add_argument("--hidden", type=zoo.positive_int, default=500)
    args = common.add_training_args(parser, lr=2e-3, batch_size=100).parse_args(argv)
    net = NADE(784, args.hidden)
    return common.run_binarized_mnist(args, net, {"model": "nade", "hidden": args.hidden,
                                                  "lr": args.lr})


if __name__ == "__main__":
    main()
