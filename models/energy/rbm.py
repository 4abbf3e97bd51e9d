"""A restricted Boltzmann machine on binarized MNIST, learnt by CD-k or PCD, scored by AIS.

    p(v, h) ∝ exp(b.v + c.h + v W h)     v: 784 pixels, h: --n-hidden units (500)

Trained by plain SGD on the contrastive-divergence gradient (`--cd-k` Gibbs
sweeps from the data; `--persistent`: from persistent chains, one per batch
row), then scored as Salakhutdinov & Murray (2008): log Z by AIS from the
base-rate model (visible biases fitted to the training pixels), and
test_loglik_nats = mean over the test set of log sum_h p*(v, h) - log Z.
metrics.json also records log Z, its standard error over the AIS runs, and
the AIS settings; samples.npy holds the visible means at the end of Gibbs
chains started from noise. Salakhutdinov & Murray report about -86.3 nats
with 500 hidden units and CD-25 (far longer training than the defaults here).

    python -m models.energy.rbm --epochs 10 --cd-k 1
    python -m models.energy.rbm --persistent --n-hidden 500 --out runs/rbm_pcd
"""
import time

import torch

from inference import energy
from models import zoo
from models.energy import common

__all__ = ["main"]


def main(argv=None):
    """`python -m models.energy.rbm ARGV`; returns the metrics written to DIR/metrics.json."""
    parser = common.ais_parser("rbm", __doc__, lr=0.05)
    parser.add_argument("--cd-k", type=zoo.positive_int, default=1,
                        help="Gibbs sweeps per step (1; Salakhutdinov & Murray's best: 25)")
    parser.add_argument("--persistent", action="store_true",
                        help="persistent chains (PCD) instead of chains from the data")
    args = parser.parse_args(argv)
    zoo.start(args)
    budget = zoo.Budget()
    train, test = common.load_data(args)
    started = time.process_time()
    _, model = common.fit_rbm("rbm", train, args.n_hidden, args, persistent=args.persistent,
                              checkpoint=args.checkpoint)
    train_cpu = time.process_time() - started
    with torch.no_grad():
        log_z = common.estimate_log_z(model, {"v": energy.base_rate_logits(train)}, args)
        loglik = energy.log_likelihood(model, log_z, {"v": test}, ["h"]).mean()
        start = {"v": torch.bernoulli(torch.full((args.n_samples, train.shape[1]), 0.5)),
                 "h": torch.zeros(args.n_samples, args.n_hidden)}
        _, samples = common.gibbs_samples(model, start, args.gibbs_steps, not args.no_progress)
    return common.write_outputs(args, budget, samples, loglik, log_z, train_cpu,
                                cd_k=args.cd_k, persistent=args.persistent)


if __name__ == "__main__":
    main()
