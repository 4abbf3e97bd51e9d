"""Triple-GAN (Li et al. 2017): semi-supervised classification by a three-player game.

    generator       z ~ N(0, I), x = G(z, y)  for y ~ uniform      (the CGAN's BayesianNet)
    classifier      p_c(y | x): 784-500-500-10, ReLU, Gaussian input noise (std 0.3)
    discriminator   D(x, y) = sigmoid(f(x, y)): is (x, y) a real labelled pair?

With logits s = f(x, y) and alpha = 0.5, per batch of unlabelled images x_u,
labelled pairs (x_l, y_l) and generated pairs (x_g, y_g):
- D minimizes  softplus(-s(x_l, y_l)) + alpha E_{p_c(y|x_u)} softplus(s(x_u, y))
               + (1 - alpha) softplus(s(x_g, y_g));
- C minimizes  alpha E_{p_c(y|x_u)} -softplus(s(x_u, y)) (the expectation over y exactly,
               no REINFORCE) + cross-entropy on (x_l, y_l) + alpha_p cross-entropy on (x_g, y_g);
- G minimizes  (1 - alpha) softplus(-s(x_g, y_g)) (the non-saturating form).
The three take turns through `inference.Trainer` (`inference.adversarial.PlayerOptimizers`:
progress, exact checkpoint/resume of all three, the NaN guard), Adam (lr 3e-4, betas 0.5,
0.999). `--labels` labelled images (default 100, 10 per class, drawn with the seed from the
first 50,000 training images); the metric is the classifier's `test_error`.

    python -m models.gan.triple_gan --epochs 100
"""
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import inference
from inference.adversarial import PlayerOptimizers, make_optimizer
from models import zoo
from models.gan import cgan, common
from models.latent.cvae import N_CLASSES

__all__ = ["Classifier", "labelled_subset", "losses", "main"]

PLAYERS = ("discriminator", "classifier", "generator")


class Classifier(nn.Module):
    """p_c(y | x): images [n, 784] -> logits [n, 10]; Gaussian input noise when training."""

    def __init__(self, x_dim=784, noise=0.3):
        super().__init__()
        self.noise = noise
        self.net = nn.Sequential(nn.Linear(x_dim, 500), nn.ReLU(), nn.Linear(500, 500),
                                 nn.ReLU(), nn.Linear(500, N_CLASSES))

    def forward(self, x):
        if self.training and self.noise:
            x = x + self.noise * torch.randn_like(x)
        return self.net(x)


def labelled_subset(labels, n_labels, seed):
    """Indices of `n_labels` examples, as many of each class, drawn with `seed`."""
    if n_labels % N_CLASSES:
        raise ValueError(f"--labels must be a multiple of {N_CLASSES}, got {n_labels}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), n_labels // N_CLASSES,
                                      replace=False) for c in range(N_CLASSES)])


def losses(player, gen, disc, clf, batch, z_dim, alpha=0.5, alpha_p=0.1):
    """The cost of `player` for batch (x_u, x_l, y_l), and the classifier's labelled
    cross-entropy (reported)."""
    x_u, x_l, y_l = batch
    y_g = torch.randint(N_CLASSES, (len(x_u),))
    with torch.set_grad_enabled(player == "generator" and torch.is_grad_enabled()):
        x_g = gen(y_g, z_dim).observe().outputs("x")
    logits_l = clf(x_l)
    labelled_ce = F.cross_entropy(logits_l, y_l)
    if player == "generator":
        return (1 - alpha) * F.softplus(-disc(x_g, y_g)).mean(), labelled_ce.detach()
    p_c = torch.softmax(clf(x_u), -1)                                     # [n, 10]
    every_y = torch.arange(N_CLASSES).repeat_interleave(len(x_u))
    s_u = disc(x_u.repeat(N_CLASSES, 1), every_y).reshape(N_CLASSES, len(x_u)).T  # [n, 10]
    if player == "discriminator":
        fake_u = (p_c.detach() * F.softplus(s_u)).sum(-1).mean()
        cost = (F.softplus(-disc(x_l, y_l)).mean() + alpha * fake_u
                + (1 - alpha) * F.softplus(disc(x_g.detach(), y_g)).mean())
        return cost, labelled_ce.detach()
    adversarial = -(p_c * F.softplus(s_u.detach())).sum(-1).mean()
    pseudo = F.cross_entropy(clf(x_g.detach()), y_g)
    return alpha * adversarial + labelled_ce + alpha_p * pseudo, labelled_ce.detach()


class _Turns:
    """epoch -> (player, (x_u, x_l, y_l)) for each unlabelled batch and each player in turn;
    labelled batches drawn from the labelled set with the global RNG (a resume replays it).
    The last partial batch is dropped (as `common.Batches`)."""

    def __init__(self, unlabelled, x_l, y_l, batch_size, labelled_batch):
        self.unlabelled, self.x_l, self.y_l = unlabelled, x_l, y_l
        self.batch_size, self.labelled_batch = batch_size, labelled_batch

    def __len__(self):
        return len(PLAYERS) * self._n_batches()

    def _n_batches(self):
        return max(1, len(self.unlabelled) // self.batch_size)

    def __call__(self, epoch):
        for idx in torch.randperm(len(self.unlabelled)).split(self.batch_size)[:self._n_batches()]:
            pick = torch.randint(len(self.x_l), (self.labelled_batch,))
            batch = (self.unlabelled[idx], self.x_l[pick], self.y_l[pick])
            for player in PLAYERS:
                yield player, batch


@torch.no_grad()
def test_error(clf, images, labels):
    clf.eval()
    wrong = sum(int((clf(x).argmax(-1) != y).sum()) for x, y in zip(images.split(1000),
                                                                      labels.split(1000)))
    clf.train()
    return wrong / len(images)


def main(argv=None):
    """`python -m models.gan.triple_gan ARGV`; returns the metrics written to DIR/metrics.json."""
    p = common.parser("gan.triple_gan", "Train Triple-GAN (Li et al. 2017) for semi-supervised "
                                        "MNIST classification.", epochs=100, batch_size=100,
                      lr=3e-4)
    p.add_argument("--labels", type=zoo.positive_int, default=100)
    args = p.parse_args(argv)
    zoo.start(args)
    budget = zoo.Budget()
    train, labels, _, test, test_labels = common.load(args)
    chosen = torch.from_numpy(labelled_subset(labels.numpy(), args.labels, args.seed))
    gen, disc, clf = cgan.new_generator(), cgan.Discriminator(), Classifier()
    state = {"turn": PLAYERS[0]}

    def step(turn_batch):
        state["turn"], batch = turn_batch
        return losses(state["turn"], gen, disc, clf, batch, args.z_dim)

    def adam(params):
        return torch.optim.Adam(params, args.lr, betas=(0.5, 0.999))
    modules = {"generator": gen, "discriminator": disc, "classifier": clf}
    trainer = inference.Trainer(
        modules, lambda _: PlayerOptimizers(
            {name: make_optimizer(adam, module.parameters(), name)
             for name, module in modules.items()}, lambda: state["turn"]),
        checkpoint_path=args.checkpoint, progress=not args.no_progress,
        fingerprint={"train": train, "labelled": chosen, "z_dim": args.z_dim})
    turns = _Turns(train, train[chosen], labels[chosen], args.batch_size,
                   min(args.batch_size, len(chosen)))
    curve = []
    for epoch in range(args.epochs):
        trainer.fit(step, turns, n_epochs=epoch + 1)
        curve.append(test_error(clf, test, test_labels))
        print(f"epoch {epoch + 1}: test error {curve[-1]:.4f}", flush=True)
    y = torch.arange(args.n_samples) % N_CLASSES
    with torch.random.fork_rng():
        samples = common.generated(gen, lambda batch: gen(batch[1], args.z_dim), (None, y))
    zoo.save_samples(args.out, samples, title="Triple-GAN samples: column c is class c")
    return zoo.write_metrics(args.out, {"test_error": curve[-1]},
                             budget.as_dict(args.epochs, labels=args.labels,
                                            test_error_curve=curve))


if __name__ == "__main__":
    main()
