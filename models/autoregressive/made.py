"""MADE (Germain et al. 2015) on binarized MNIST: one mask, or order-agnostic with an ensemble.

An MLP made autoregressive by masking its weights (`ppl.flows.MADE`): with
`--masks 1` one natural-order mask; with `--masks K` each training step draws
one of K masks (a random input order and random hidden-unit degrees, as in
the paper's connectivity-agnostic training), and the test log-likelihood is
that of the ensemble, log (1/K) sum_k p_k(x). `--direct` adds masked direct
connections from the inputs to the outputs (each output's logit gains a
linear term in the inputs before it, FVSBN's), as the paper's own MNIST
experiments do (`direct_input_connect=Output` in Germain's code).

    python -m models.autoregressive.made --epochs 40 --direct --checkpoint runs/made.pt
    python -m models.autoregressive.made --masks 32 --hidden 500 500
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from models import zoo
from models.autoregressive import common
from ppl.flows import MADE

__all__ = ["MaskedMADE", "main"]


class MaskedMADE(nn.Module):
    """`ppl.flows.MADE` (x [B, D] -> Bernoulli logits [B, 1, D]) with `n_masks` masks.

    Mask 0 has the natural order and hidden degrees spread evenly over
    1..D-1 (`ppl.flows.MADE`'s own cycle 1, 2, ... leaves the inputs of degree
    above a layer's width unconnected when the layer is narrower than D - 1);
    masks 1.. have a random order and hidden degrees drawn uniformly from
    [min degree below, D - 1]. `use_mask(k)` switches the network (and its
    `order`) to mask k. `direct`: add a linear map from the inputs to the
    logits, masked to the inputs strictly before each output in the order.
    """

    def __init__(self, dim=784, hidden=(500,), n_masks=1, seed=0, direct=False):
        super().__init__()
        self.made = MADE(dim, list(hidden), n_params=1)
        self.layers = [m for m in self.made.net if isinstance(m, nn.Linear)]
        self.direct = None
        if direct:  # zero at the start: the network begins as the plain MADE
            self.direct = nn.Parameter(torch.zeros(dim, dim))
            self.register_buffer("direct_mask", torch.zeros(dim, dim))
        generator = torch.Generator().manual_seed(seed)
        orders, masks = [], []
        for k in range(n_masks):
            order, layer_masks = _masks(dim, hidden, None if k == 0 else generator)
            orders.append(order)
            masks.append(layer_masks)
        self.register_buffer("orders", torch.stack(orders))
        if direct:  # output i sees input j when j comes before i in mask k's order
            place = torch.argsort(self.orders, dim=1)  # [K, D]
            self.register_buffer("direct_masks",
                                 (place[:, :, None] > place[:, None, :]).float())
        for i in range(len(self.layers)):
            self.register_buffer(f"masks_{i}", torch.stack([m[i] for m in masks]))
        self.n_masks = n_masks
        self.use_mask(0)

    def use_mask(self, k):
        """Mask the network with mask `k` (0 <= k < n_masks)."""
        for i, layer in enumerate(self.layers):
            layer.mask.copy_(getattr(self, f"masks_{i}")[k])
        if self.direct is not None:
            self.direct_mask.copy_(self.direct_masks[k])
        self.order = self.orders[k].tolist()
        self.mask_index = k

    def forward(self, x):
        out = self.made(x)
        if self.direct is not None:
            out = out + F.linear(x, self.direct * self.direct_mask).unsqueeze(1)
        return out


def _masks(dim, hidden, generator=None):
    """(order, masks of every layer): the natural order with evenly spread hidden degrees
    without `generator`, else a random order and random hidden degrees."""
    order = torch.arange(dim) if generator is None else torch.randperm(dim, generator=generator)
    degrees = torch.empty(dim, dtype=torch.long)
    degrees[order] = torch.arange(1, dim + 1)
    masks, previous = [], degrees
    for width in hidden:
        low = int(previous.min())
        if generator is None:
            current = torch.linspace(low, max(dim - 1, low), width).round().long()
        else:
            current = torch.randint(low, max(dim, low + 1), (width,), generator=generator)
        masks.append((current[:, None] >= previous[None, :]).float())
        previous = current
    masks.append((degrees[:, None] > previous[None, :]).float())
    return order, masks


def ensemble_log_lik(net, x):
    """log (1/K) sum_k p_k(x) over the K masks of `net`: [b]."""
    per_mask = []
    for k in range(net.n_masks):
        net.use_mask(k)
        per_mask.append(common.build_model(net, value_shape=(net.made.dim,),
                                           observed={"x": x}).log_joint())
    net.use_mask(0)
    return torch.logsumexp(torch.stack(per_mask), 0) - math.log(net.n_masks)


def main(argv=None):
    parser = zoo.parser("autoregressive.made", __doc__.splitlines()[0],
                        data="binarized_mnist", epochs=40)
    parser.add_argument("--hidden", type=zoo.positive_int, nargs="+", default=[500])
    parser.add_argument("--masks", type=zoo.positive_int, default=1,
                        help="masks: 1 (natural order) or K for order-agnostic training")
    parser.add_argument("--direct", action="store_true",
                        help="masked direct connections from the inputs to the outputs")
    args = common.add_training_args(parser, lr=1e-3, batch_size=100).parse_args(argv)
    net = MaskedMADE(784, args.hidden, args.masks, seed=args.seed, direct=args.direct)
    settings = {"model": "made", "hidden": args.hidden, "masks": args.masks, "lr": args.lr,
                **({"direct": True} if args.direct else {})}
    if args.masks == 1:
        return common.run_binarized_mnist(args, net, settings)

    def step(x):
        net.use_mask(int(torch.randint(args.masks, ())))
        return common.log_lik_step(net)(x)

    def one_mask(x):
        net.use_mask(0)
        return common.build_model(net, observed={"x": x}).log_joint()

    return common.run_binarized_mnist(
        args, net, settings, step_fn=step, test_log_lik=lambda x: ensemble_log_lik(net, x),
        extra={"test_loglik_nats_one_mask": lambda x: common.mean_over(one_mask, x)})


if __name__ == "__main__":
    main()
