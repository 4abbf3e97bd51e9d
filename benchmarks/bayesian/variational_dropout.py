"""The variational_dropout part of `benchmarks.bayesian_zoo`: learned Gaussian dropout on MNIST.

    python -m benchmarks.bayesian_zoo --parts variational_dropout

ZhuSuan's variational dropout classifier (`models.bayesian.variational_dropout`,
784-100-100-100-10 with batch norm) on the first `TRAIN_SIZE` MNIST training
images, test error on the first `TEST_SIZE` test images, beside the network a
user would write instead: the same layers, batch norm and optimizer in plain
torch with standard Bernoulli dropout (`nn.Dropout`, rate 0.2 on the inputs and
0.5 on the hidden units, Srivastava et al. 2014), same epochs and minibatches.
Mean +- standard error over `SEEDS` seeds; CPU seconds per seed, one thread.
No published number exists for this net on a subset: ZhuSuan's example prints
its accuracy without a reference figure, and Kingma et al. (2015) train larger
nets on all of MNIST.
"""
import statistics
import time

import torch
from torch import nn

from models.bayesian import variational_dropout as vd

TRAIN_SIZE, TEST_SIZE, EPOCHS, BATCH_SIZE, SEEDS = 5000, 2000, 10, 100, (0, 1, 2)
PEER = "torch MLP + nn.Dropout (Bernoulli 0.2/0.5)"


def _dropout_net(net_size):
    layers = []
    for i, (n_in, n_out) in enumerate(zip(net_size[:-1], net_size[1:])):
        layers += [nn.Dropout(0.2 if i == 0 else 0.5), nn.Linear(n_in, n_out),
                   nn.BatchNorm1d(n_out)]
        if i < len(net_size) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def peer_error(data, seed, epochs, batch_size):
    """Test error of the plain dropout net trained by cross-entropy (Adam 1e-3, eps 1e-4)."""
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    net = _dropout_net(vd.NET_SIZE)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-4)
    for _ in range(epochs):
        order = torch.randperm(len(x_train))
        for i in range(0, len(x_train) - batch_size + 1, batch_size):
            batch = order[i:i + batch_size]
            loss = nn.functional.cross_entropy(net(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        return float((net(x_test).argmax(-1) != y_test).float().mean())


def ours_error(data, seed, epochs, batch_size):
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    model, variational = vd.new_templates(len(x_train))
    vd.train(model, variational, x_train, y_train, epochs=epochs, batch_size=batch_size,
             progress=False)
    return vd.evaluate(model, variational, x_test, y_test)[0]


def _timed(fn, *args):
    start = time.process_time()
    value = fn(*args)
    return value, time.process_time() - start


def _mean_se(values):
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None
    return statistics.fmean(values), se


def run(quick, root):
    """One row: test error of ours and of the plain dropout net, same data and budget."""
    torch.set_num_threads(1)
    train_size, test_size, epochs, seeds = ((500, 200, 1, (0,)) if quick else
                                            (TRAIN_SIZE, TEST_SIZE, EPOCHS, SEEDS))
    data = vd.load_data(train_size, test_size)
    ours, peer = [], []
    for seed in seeds:
        ours.append(_timed(ours_error, data, seed, epochs, BATCH_SIZE))
        peer.append(_timed(peer_error, data, seed, epochs, BATCH_SIZE))
        print(f"  seed {seed}: variational dropout {ours[-1][0]:.4f} ({ours[-1][1]:.0f} CPU s), "
              f"dropout {peer[-1][0]:.4f} ({peer[-1][1]:.0f} CPU s)", flush=True)
    (mean, se), (peer_mean, peer_se) = _mean_se([e for e, _ in ours]), _mean_se([e for e, _ in peer])
    return [{"model": "variational_dropout", "data": f"mnist ({train_size} train, "
             f"{test_size} test images)", "metric": "test_error", "ours": mean, "ours_se": se,
             "published": None, "published_se": None,
             "published_source": "none for this net and subset (see the module docstring)",
             "peer": PEER, "peer_value": peer_mean, "peer_se": peer_se,
             "ours_seconds": statistics.fmean(s for _, s in ours),
             "peer_seconds": statistics.fmean(s for _, s in peer),
             "note": (f"{epochs} epochs, batches of {BATCH_SIZE}, seeds {list(seeds)}; ours: "
                      f"10 particles per step, 100 for the predictive; CPU s per seed"),
             "per_seed": [e for e, _ in ours], "peer_per_seed": [e for e, _ in peer]}]
