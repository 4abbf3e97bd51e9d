"""FVSBN (fully visible sigmoid belief network; Frey 1998) on binarized MNIST.

    p(x_d = 1 | x_<d) = sigmoid(b_d + sum_{j<d} W_dj x_j)

one logistic regression per pixel: `ppl.flows.MADE` with no hidden layer (a
strictly lower-triangular masked linear map), O(D^2) parameters.

    python -m models.autoregressive.fvsbn --epochs 20
"""
from models import zoo
from models.autoregressive import common
from ppl.flows import MADE

__all__ = ["fvsbn_net", "main"]


def fvsbn_net(dim=784):
    """x [B, dim] -> Bernoulli logits [B, 1, dim], each a logistic regression on x_<d."""
    return MADE(dim, (), n_params=1)


def main(argv=None):
    parser = zoo.parser("autoregressive.fvsbn", __doc__.splitlines()[0],
                        data="binarized_mnist", epochs=20)
    args = common.add_training_args(parser, lr=3e-3, batch_size=100).parse_args(argv)
    return common.run_binarized_mnist(args, fvsbn_net(784), {"model": "fvsbn", "lr": args.lr})


if __name__ == "__main__":
    main()
