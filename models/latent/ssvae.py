"""The semi-supervised VAE M2 (Kingma, Rezende, Mohamed & Welling 2014), as ZhuSuan's vae_ssl.

    z ~ N(0, I)                     [k, n, z_dim]
    y ~ OnehotCategorical(uniform)  [k, n, 10]
    x ~ Bernoulli(logits=f_NN(z, y))          f_NN: (z_dim + 10)-500-500-784, ReLU
    q(z | x, y) = N(mu_NN(x, y), exp(logstd_NN(x, y))^2)
    q(y | x) = Categorical(logits=g_NN(x))    the classifier, 784-500-500-10

A labelled image (x, y) has the ELBO L(x, y) = E_q(z|x,y)[log p(x, y, z) - log q(z|x,y)].
For an unlabelled image y is a discrete latent summed out exactly (enumerated over
its 10 values): U(x) = sum_y q(y|x) (L(x, y) - log q(y|x)). Training maximizes
(mean L + mean U + beta * mean log q(y_l | x_l)) / 2, the last term (the classifier
term, beta = 1200 as ZhuSuan) training q(y|x) on the labels too. Each step takes a
batch of unlabelled images and as many labelled ones drawn with replacement from
the 100 (10 per class) labelled images, binarized afresh (dynamic binarization).
Reported: `test_error`, the classifier's error on the 10,000 test images, and
`test_elbo_nats`, the mean U(x) over them.

On a CPU budget the smaller nets learn faster per CPU second: `--batch-size 50
--hidden 250` reached 14.75% test error after 10 epochs, about 470 CPU seconds
(benchmarks/results/latent_zoo_ssvae_long.json).

    python -m models.latent.ssvae                      # MNIST, 100 labels
    python -m models.latent.ssvae --epochs 10 --batch-size 50 --hidden 250
    python -m models.latent.ssvae --epochs 30 --checkpoint runs/ssvae.pt
"""
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import inference
import ppl
from models import experiment, zoo
from models.data import binarize, iterate_batches, load_mnist
from models.latent.vae import bernoulli_images, check_images, image_net, mlp, normal_node

__all__ = ["N_CLASSES", "build_gen", "build_q_z", "build_classifier", "new_templates",
           "labeled_bound", "unlabeled_bound", "ssl_step", "split_labels", "LabeledBatches",
           "error_rate", "test_metrics", "class_samples", "main"]

N_CLASSES = 10


@ppl.meta_bayesian_net(scope="gen", reuse_variables=True)
def build_gen(x_dim, z_dim, n, n_particles=1, hidden=(500, 500)):
    """p(z) p(y) p(x | y, z): z [k, n, z_dim], y [k, n, 10] one-hot, x [k, n, x_dim]."""
    bn = ppl.BayesianNet()
    z = bn.normal("z", torch.zeros(n, z_dim), std=1., group_ndims=1, n_samples=n_particles)
    y = bn.onehot_categorical("y", torch.zeros(n, N_CLASSES), n_samples=n_particles)
    h = ppl.module("decoder", lambda: mlp(z_dim + N_CLASSES, hidden))(torch.cat([z, y], -1))
    bernoulli_images(bn, h, x_dim)
    return bn


@ppl.reuse_variables(scope="q_z")
def build_q_z(x, y, z_dim, n_particles, hidden=(500, 500)):
    """q(z | x, y): a diagonal Normal, z [k, n, z_dim], for images x [n, x_dim], y [n, 10]."""
    h = image_net("encoder", x, hidden, condition=y)
    bn = ppl.BayesianNet()
    normal_node(bn, "z", h, z_dim, n_particles)
    return bn


@ppl.reuse_variables(scope="classifier")
def build_classifier(x, hidden=(500, 500)):
    """q(y | x): the classifier's logits [n, 10] for images x [n, x_dim]."""
    h = image_net("hidden", x, hidden)
    return ppl.module("y_logits", lambda: nn.Linear(hidden[-1], N_CLASSES))(h)


def new_templates():
    """Fresh, untrained copies of (`build_gen`, `build_q_z`, `build_classifier`)."""
    return (ppl.meta_bayesian_net(scope="gen")(build_gen.fn),
            ppl.reuse_variables(scope="q_z")(build_q_z.fn),
            ppl.reuse_variables(scope="classifier")(build_classifier.fn))


def labeled_bound(gen, q_z, x, y, z_dim, n_particles=1, hidden=(500, 500), analytic_kl=False):
    """L(x, y), the ELBO of images `x` [n, x_dim] with labels `y` [n] (ints): [n].

    `analytic_kl`: log p(z) - log q(z|x,y) replaced by -KL(q(z|x,y) || p(z)).
    """
    check_images(x)
    experiment.check_labels(y, N_CLASSES, len(x))
    y_onehot = F.one_hot(torch.as_tensor(y).long(), N_CLASSES).to(x.dtype)
    model = gen(x.shape[1], z_dim, len(x), n_particles, hidden=hidden)
    variational = q_z(x, y_onehot, z_dim, n_particles, hidden=hidden)
    observed = {"x": x, "y": y_onehot.expand(n_particles, *y_onehot.shape)}
    return -inference.elbo(model, observed, variational=variational, axis=0,
                           analytic_kl=analytic_kl).sgvb()


def unlabeled_bound(gen, q_z, classifier, x, z_dim, n_particles=1, hidden=(500, 500),
                    analytic_kl=False):
    """U(x) = sum_y q(y|x) (L(x, y) - log q(y|x)), y summed over its 10 values: [n].

    Every image is paired with every label (n * 10 rows, image-major) and their
    ELBOs computed in one batch, as ZhuSuan's vae_ssl does.
    """
    check_images(x)
    n = len(x)
    labels = torch.arange(N_CLASSES).repeat(n)                       # [n * 10]
    bounds = labeled_bound(gen, q_z, x.repeat_interleave(N_CLASSES, 0), labels, z_dim,
                           n_particles, hidden, analytic_kl).reshape(n, N_CLASSES)
    log_qy = classifier(x, hidden=hidden).log_softmax(-1)            # [n, 10]
    return (log_qy.exp() * (bounds - log_qy)).sum(-1)


def ssl_step(gen, q_z, classifier, z_dim, n_particles=1, beta=1200., hidden=(500, 500),
             analytic_kl=False):
    """A training step function (x_l, y_l, x_u) -> (cost, U(x_u)), as ZhuSuan's vae_ssl:

    cost = -(mean L(x_l, y_l) + mean U(x_u) + beta * mean log q(y_l | x_l)) / 2.
    """
    def step(batch):
        x_l, y_l, x_u = batch
        lower_l = labeled_bound(gen, q_z, x_l, y_l, z_dim, n_particles, hidden, analytic_kl)
        lower_u = unlabeled_bound(gen, q_z, classifier, x_u, z_dim, n_particles, hidden,
                                  analytic_kl)
        log_qy = -F.cross_entropy(classifier(x_l, hidden=hidden), y_l.long())
        cost = -(lower_l.mean() + lower_u.mean() + beta * log_qy) / 2
        return cost, lower_u
    return step


def split_labels(labels, n_labeled, seed):
    """Indices of `n_labeled` labelled examples, n_labeled / 10 of each class, chosen by `seed`."""
    if n_labeled % N_CLASSES:
        raise ValueError(f"--labels must be a multiple of {N_CLASSES} (the same number per "
                         f"class), got {n_labeled}")
    rng = np.random.default_rng(seed)
    per_class = n_labeled // N_CLASSES
    chosen = []
    for c in range(N_CLASSES):
        pool = np.flatnonzero(labels == c)
        if len(pool) < per_class:
            raise ValueError(f"class {c} has {len(pool)} training examples, fewer than the "
                             f"{per_class} labels per class asked for (--train-size too small?)")
        chosen.append(rng.choice(pool, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


class LabeledBatches:
    """Batches (x_l, y_l, x_u) of one epoch: `batches(epoch)`, a pure function of (seed, epoch).

    The unlabelled images are shuffled and cut into batches of `batch_size`
    (the last incomplete one dropped); each batch is paired with `batch_size`
    labelled images drawn with replacement. All images are binarized afresh.
    """

    def __init__(self, x_labeled, y_labeled, x_unlabeled, batch_size, seed=0):
        if not 1 <= batch_size <= len(x_unlabeled):
            raise ValueError(f"batch_size must be in [1, {len(x_unlabeled)}], got {batch_size}")
        self.x_labeled, self.y_labeled = x_labeled, torch.as_tensor(y_labeled, dtype=torch.int64)
        self.x_unlabeled, self.batch_size, self.seed = x_unlabeled, batch_size, seed

    def __len__(self):
        return len(self.x_unlabeled) // self.batch_size

    def __call__(self, epoch):
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.x_unlabeled))[:len(self) * self.batch_size]
        for x_u in iterate_batches(self.x_unlabeled, self.batch_size, order):
            picked = rng.integers(0, len(self.x_labeled), self.batch_size)
            x_l = torch.from_numpy(self.x_labeled[picked])
            noise = torch.from_numpy(rng.random((2 * self.batch_size, x_u.shape[1]),
                                                dtype=np.float32))
            x_l = (noise[:self.batch_size] < x_l).to(torch.float32)
            x_u = (noise[self.batch_size:] < x_u).to(torch.float32)
            yield x_l, self.y_labeled[picked], x_u


@torch.no_grad()
def error_rate(classifier, x, y, hidden=(500, 500)):
    """The fraction of images `x` whose most probable class under q(y|x) is not `y`."""
    return float((classifier(x, hidden=hidden).argmax(-1) != y).double().mean())


@torch.no_grad()
def test_metrics(gen, q_z, classifier, x, y, z_dim, hidden=(500, 500), batch_size=500):
    """{"test_error": the classifier's error rate, "test_elbo_nats": mean U(x)} on `x`, `y`."""
    bound = sum(float(unlabeled_bound(gen, q_z, classifier, x[i:i + batch_size], z_dim, 1,
                                      hidden).sum()) for i in range(0, len(x), batch_size))
    return {"test_error": error_rate(classifier, x, y, hidden), "test_elbo_nats": bound / len(x)}


@torch.no_grad()
def class_samples(gen, x_dim, z_dim, n, hidden=(500, 500)):
    """Pixel probabilities of `n` images from p(x | y, z), z ~ p(z), image i of class i % 10."""
    y = F.one_hot(torch.arange(n) % N_CLASSES, N_CLASSES).float()
    return gen(x_dim, z_dim, n, 1, hidden=hidden).observe(y=y[None])["x_mean"][0]


def load(args):
    """(x_l, y_l, x_u, x_test, y_test): MNIST's first 50,000 training images (the unlabelled
    set, as ZhuSuan), `--labels` of them labelled; the test images binarized once."""
    mnist = load_mnist(None if args.data == "mnist" else args.data)
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32) / 255.  # noqa: E731
    x_train = zoo.first(flat(mnist.train_images[:50000]), args.train_size)
    y_train = zoo.first(mnist.train_labels[:50000], args.train_size)
    labeled = split_labels(y_train, args.labels, args.seed)
    x_test = torch.from_numpy(binarize(zoo.first(flat(mnist.test_images), args.test_size),
                                       args.seed))
    y_test = torch.from_numpy(zoo.first(mnist.test_labels, args.test_size).astype(np.int64))
    return x_train[labeled], y_train[labeled].astype(np.int64), x_train, x_test, y_test


def main(argv=None):
    parser = zoo.parser("latent.ssvae", "The semi-supervised VAE M2 on MNIST with few labels "
                        "(ZhuSuan's vae_ssl).", data="mnist", epochs=30, quick_epochs=1)
    parser.add_argument("--labels", type=zoo.positive_int, default=100,
                        help="labelled training images, the same number per class (default 100)")
    parser.add_argument("--batch-size", type=zoo.positive_int, default=100)
    parser.add_argument("--z-dim", type=zoo.positive_int, default=100)
    parser.add_argument("--hidden", type=zoo.positive_int, default=500,
                        help="width of the two hidden layers of every network (default 500)")
    parser.add_argument("--particles", type=zoo.positive_int, default=1,
                        help="z samples per (image, label) in the training bounds (ZhuSuan: 10)")
    parser.add_argument("--beta", type=float, default=1200.,
                        help="weight of the classifier term (default 1200, as ZhuSuan)")
    parser.add_argument("--analytic-kl", action="store_true",
                        help="the bounds' KL(q(z|x,y) || p(z)) in closed form (ZhuSuan: "
                             "Monte Carlo)")
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="Adam learning rate (default 1e-3; ZhuSuan: 3e-4)")
    args = parser.parse_args(argv)
    zoo.start(args)
    budget = zoo.Budget()
    x_l, y_l, x_u, x_test, y_test = load(args)
    hidden = (args.hidden, args.hidden)
    batches = LabeledBatches(x_l, y_l, x_u, min(args.batch_size, len(x_u)), seed=args.seed)
    step = ssl_step(build_gen, build_q_z, build_classifier, args.z_dim, args.particles,
                    args.beta, hidden, args.analytic_kl)
    settings = {"labels": args.labels, "z_dim": args.z_dim, "hidden": args.hidden,
                "batch_size": batches.batch_size, "particles": args.particles,
                "beta": args.beta, "analytic_kl": args.analytic_kl, "seed": args.seed}
    trainer = inference.Trainer(
        {"model": build_gen, "q_z": build_q_z, "classifier": build_classifier},
        lambda params: torch.optim.Adam(params, lr=args.lr), checkpoint_path=args.checkpoint,
        progress=not args.no_progress,
        fingerprint={"labeled": torch.from_numpy(x_l), "train_images": torch.from_numpy(x_u),
                     "settings": settings})
    history = []
    for epoch in range(1, args.epochs + 1):
        history = trainer.fit(step, batches, n_epochs=epoch)
        error = error_rate(build_classifier, x_test[:1000], y_test[:1000], hidden)
        print(f"epoch {epoch}: unlabelled bound {history[-1]:.2f}, error on the first "
              f"{min(1000, len(x_test))} test images {100 * error:.2f}% "
              f"({budget.as_dict(epoch)['cpu_seconds']:.0f} CPU s)", flush=True)
    metrics = test_metrics(build_gen, build_q_z, build_classifier, x_test, y_test, args.z_dim,
                           hidden)
    zoo.save_samples(args.out, class_samples(build_gen, x_u.shape[1], args.z_dim,
                                             args.n_samples, hidden),
                     title="samples, column = class")
    print(f"test error {100 * metrics['test_error']:.2f}% on {len(x_test)} images, "
          f"test bound U(x) {metrics['test_elbo_nats']:.2f} nats")
    return zoo.write_metrics(args.out, metrics,
                             budget.as_dict(args.epochs, labels=args.labels,
                                            train_size=len(x_u), test_size=len(x_test)))


if __name__ == "__main__":
    main()
