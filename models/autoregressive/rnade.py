"""RNADE (Uria et al. 2013) on UCI red wine: NADE with mixture-of-Gaussians conditionals.

    a_{d+1} = a_d + W[:, d] x_d,  h_d = relu(rho_d a_d)
    p(x_d | x_<d) = sum_k alpha_dk N(x_d; mu_dk, sigma_dk^2),
    (logit alpha_d, mu_d, log sigma_d) = V_d h_d + b_d      (3K numbers per dimension)

on the 11 physicochemical features, standardized with the training split's
mean and std; the test log-likelihood is reported in those units
(`test_loglik_nats`) and in the data's own units (`test_loglik_nats_raw`).

    python -m models.autoregressive.rnade --epochs 200
"""
import math

import torch
from torch import nn

from models import zoo
from models.autoregressive import common
from ppl.distributions.autoregressive import GaussianMixtureFamily

__all__ = ["RNADE", "main"]


class RNADE(nn.Module):
    """x [B, D] -> mixture parameters [B, 3K, D] (logits, means, log-stds; natural order)."""

    def __init__(self, dim, hidden=50, components=10):
        super().__init__()
        self.W = nn.Parameter(torch.empty(hidden, dim).uniform_(-1, 1) / math.sqrt(dim))
        self.c = nn.Parameter(torch.zeros(hidden))
        self.rho = nn.Parameter(torch.ones(dim))
        self.V = nn.Parameter(torch.empty(dim, 3 * components, hidden).uniform_(-1, 1)
                              / math.sqrt(hidden))
        self.b = nn.Parameter(torch.zeros(dim, 3 * components))
        self.components = components

    def forward(self, x):
        a = self.c.expand(x.shape[0], -1)
        params = []
        for d in range(x.shape[1]):
            h = torch.relu(self.rho[d] * a)
            params.append(h @ self.V[d].t() + self.b[d])
            a = torch.addcmul(a, x[:, d:d + 1], self.W[:, d])
        return torch.stack(params, 2)

    def conditional(self, x, d):
        """Dimension d's mixture parameters alone, [B, 3K] (for sampling)."""
        h = torch.relu(self.rho[d] * (self.c + x[:, :d] @ self.W[:, :d].t()))
        return h @ self.V[d].t() + self.b[d]


def main(argv=None):
    from models.data.uci import load_uci
    parser = zoo.parser("autoregressive.rnade", __doc__.splitlines()[0],
                        data="wine-quality-red", epochs=200, quick_epochs=2)
    parser.add_argument("--hidden", type=zoo.positive_int, default=50)
    parser.add_argument("--components", type=zoo.positive_int, default=10)
    parser.add_argument("--split", type=int, default=0, help="UCI split (default 0)")
    args = common.add_training_args(parser, lr=3e-3, batch_size=100,
                                    validation=False).parse_args(argv)
    zoo.start(args)
    budget = zoo.Budget()
    data = load_uci(args.data, split=args.split)
    train_x, test_x = zoo.first(data.x_train, args.train_size), zoo.first(data.x_test,
                                                                          args.test_size)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    dim = train_x.shape[1]
    net = RNADE(dim, args.hidden, args.components)
    model = {"family": GaussianMixtureFamily(args.components), "value_shape": (dim,)}
    settings = {"model": "rnade", "data": args.data, "split": args.split, "hidden": args.hidden,
                "components": args.components, "lr": args.lr, "batch_size": args.batch_size,
                "seed": args.seed}
    history = common.train(args, {"net": net}, common.log_lik_step(net, **model), train_x,
                           settings)
    test = common.mean_over(lambda x: common.build_model(net, observed={"x": x}, **model)
                            .log_joint(), test_x, progress=not args.no_progress)
    metrics = {"test_loglik_nats": test, "test_loglik_nats_raw": test - std.log().sum().item(),
               "train_loglik_nats_last_epoch": history[-1]}
    print(", ".join(f"{k} = {v:.3f}" for k, v in metrics.items()))
    return zoo.write_metrics(args.out, metrics, budget.as_dict(args.epochs, **settings))


if __name__ == "__main__":
    main()
