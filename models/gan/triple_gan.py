"""Triple-GAN (Li et al. 2017): semi-supervised classification by a three-player game.

    generator       z ~ N(0, I), x = G(z, y)  for y ~ uniform      (the CGAN's BayesianNet)
    classifier      p_c(y | x): a small CNN, 32c5-pool-64c3-pool-128-10, dropout 0.5; in
                    training each image first moves by a random affine map (`random_affine`)
    discriminator   D(x, y) = sigmoid(f(x, y)): is (x, y) a real labelled pair?  (the CGAN's)

With logits s = f(x, y), alpha = 0.5, per batch of unlabelled images x_u, labelled pairs
(x_l, y_l) and generated pairs (x_g, y_g), and y_u = argmax p_c(y | x_u) with its
probability p_u (the "argmax" objective of the authors' MNIST code):
- D minimizes  softplus(-s(x_l, y_l)) + alpha softplus(s(x_u, y_u))
               + (1 - alpha) softplus(s(x_g, y_g));
- C minimizes  alpha_c p_u softplus(-s(x_u, y_u)) + cross-entropy on (x_l, y_l)
               + 0.3 H(p_c(y | x_u)) + beta CE(uniform, mean_u p_c(y | x_u))
               + alpha_p cross-entropy on (x_g, y_g);
- G minimizes  (1 - alpha) softplus(-s(x_g, y_g)) (the non-saturating form).
The entropy and class-balance terms are the authors' regularizers of C (their
`categorical_crossentropy_ssl_separated`). C is first pretrained alone for `--pretrain`
rounds (D and G wait); then all three play, on a schedule (`schedule`) that lets the game
start where the pretraining left off:
- alpha_c rises linearly from 0 to `--adversarial-weight` (0.5, the authors') over `--ramp`
  rounds (3): C's adversarial gradient flows through p_u only (D's loss held fixed), so
  it lowers C's confidence, the more where D calls the pair fake;
- D's real pairs are the labelled ones and C's pairs on the first half of each unlabelled
  batch, its C-pairs term the second half (`--classified-real`, on by default, as the
  authors' MNIST code). With the labelled pairs alone D can learn the 100 labelled images
  by heart and call every unlabelled pair fake: the term above then works against the
  entropy term, and the error rose with alpha_c (4.44% at 0.1 to 8.0% at 0.4, the largest
  predicted class steady at 11.3%: no class collapse);
- beta stays at `--balance` (0.3, the pretraining's; the authors drop it to 1e-3 after 30
  full epochs of pretraining, ~1/30 of ours);
- alpha_p = 0.1 from round `--pseudo-from` on (default `--pretrain` + 2 `--ramp`, past the
  default 16 rounds; the authors wait 300 epochs): G's pairs carry G's label errors
  until G follows its labels.
By default (10 rounds of C alone, 6 of the game) the test error is 4.49% at 340 CPU s,
below the pretraining's 4.60%; with the authors' weights at once (alpha_c 0.5, beta 1e-3,
labelled real pairs) the game raised it from 5.5% to 14.1% in 4 rounds
(benchmarks/results/gan_mnist_triple_gan.json). The test error is
that of an exponential moving average of C's weights (rate 0.01), as the authors evaluate.

The players take turns through `inference.Trainer` (`inference.adversarial.PlayerOptimizers`:
progress, exact checkpoint/resume of all three and the average, the NaN guard), Adam (betas
0.5, 0.999; lr `--lr` 3e-4 for D and G, `--classifier-lr` 1e-3 for C). A round (the
Trainer's epoch) is `--round` batches of `--batch-size` unlabelled images drawn from the
first 50,000 training images; the test error after each round is written with its CPU
seconds (`test_error_curve`, `cpu_seconds_curve`); the reported `test_error` is the last
round's (the number of rounds is fixed beforehand, never chosen on the test set).
`--labels` labelled images (default 100, 10 per class, drawn with the seed).

    python -m models.gan.triple_gan                # 10 rounds of C alone, 6 of the game
"""
import argparse
import copy
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import inference
from inference.adversarial import PlayerOptimizers, make_optimizer
from models import zoo
from models.gan import cgan, common
from models.latent.cvae import N_CLASSES

__all__ = ["Classifier", "random_affine", "labelled_subset", "losses", "schedule", "test_error",
           "main"]

PLAYERS = ("discriminator", "classifier", "generator")


def random_affine(x, shift=2., rotate=0.2, scale=0.1):
    """Images [n, 784] each moved by up to `shift` pixels in x and y, turned by up to `rotate`
    radians and scaled by up to 1 +- `scale` (uniformly; bilinear, zeros outside)."""
    n = len(x)
    angle, size = (torch.rand(n) * 2 - 1) * rotate, 1 + (torch.rand(n) * 2 - 1) * scale
    move = (torch.rand(n, 2) * 2 - 1) * shift / 14.  # affine_grid's units: half the image
    cos, sin = size * torch.cos(angle), size * torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, move[:, 0]], 1),
                         torch.stack([sin, cos, move[:, 1]], 1)], 1)      # [n, 2, 3]
    grid = F.affine_grid(theta, (n, 1, 28, 28), align_corners=False)
    return F.grid_sample(x.reshape(n, 1, 28, 28), grid, align_corners=False).reshape(n, -1)


class Classifier(nn.Module):
    """p_c(y | x): images [n, 784] -> logits [n, 10]; `random_affine` inputs when training."""

    def __init__(self, augment=True):
        super().__init__()
        self.augment = augment
        self.net = nn.Sequential(
            nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5),
            nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, N_CLASSES))

    def forward(self, x):
        if self.training and self.augment:
            x = random_affine(x)
        return self.net(x)


def labelled_subset(labels, n_labels, seed):
    """Indices of `n_labels` examples, as many of each class, drawn with `seed`."""
    if n_labels % N_CLASSES:
        raise ValueError(f"--labels must be a multiple of {N_CLASSES}, got {n_labels}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), n_labels // N_CLASSES,
                                      replace=False) for c in range(N_CLASSES)])


def _regularizers(p_u):
    """The entropy of p_c(y | x_u) [n, 10] and the cross-entropy of its batch mean against
    the uniform distribution (the authors' class-balance term)."""
    entropy = -(p_u * torch.log(p_u + 1e-8)).sum(-1).mean()
    return entropy, -torch.log(p_u.mean(0) + 1e-8).mean()


def losses(player, gen, disc, clf, batch, z_dim, alpha=0.5, alpha_c=0.5, alpha_p=0.,
           balance=0.3, classified_real=False):
    """The cost of `player` for batch (x_u, x_l, y_l): "discriminator", "generator",
    "classifier" (with weights alpha_c, alpha_p, balance of the module docstring), or
    "pretrain" (C alone: labelled cross-entropy and the regularizers).
    `classified_real`: D's real pairs are (x_l, y_l) and C's pairs on the first half of
    x_u, its C-pairs term the second half (the authors' MNIST code)."""
    x_u, x_l, y_l = batch
    if player == "pretrain":
        entropy, balanced = _regularizers(torch.softmax(clf(x_u), -1))
        return F.cross_entropy(clf(x_l), y_l) + 0.3 * entropy + 0.3 * balanced
    y_g = torch.randint(N_CLASSES, (len(x_u),))
    with torch.set_grad_enabled(player == "generator" and torch.is_grad_enabled()):
        x_g = gen(y_g, z_dim).observe().outputs("x")
    if player == "generator":
        return (1 - alpha) * F.softplus(-disc(x_g, y_g)).mean()
    if player == "discriminator":
        with torch.no_grad():
            y_u = clf(x_u).argmax(-1)
        if classified_real:
            half = len(x_u) // 2
            x_l, y_l = torch.cat([x_l, x_u[:half]]), torch.cat([y_l, y_u[:half]])
            x_u, y_u = x_u[half:], y_u[half:]
        return (F.softplus(-disc(x_l, y_l)).mean() + alpha * F.softplus(disc(x_u, y_u)).mean()
                + (1 - alpha) * F.softplus(disc(x_g, y_g)).mean())
    p_u = torch.softmax(clf(x_u), -1)
    entropy, balanced = _regularizers(p_u)
    cost = F.cross_entropy(clf(x_l), y_l) + 0.3 * entropy + balance * balanced
    if alpha_c:
        confidence, y_u = p_u.max(-1)
        cost = cost + alpha_c * (confidence * F.softplus(-disc(x_u, y_u)).detach()).mean()
    if alpha_p:
        cost = cost + alpha_p * F.cross_entropy(clf(x_g.detach()), y_g)
    return cost


def schedule(epoch, pretrain, ramp, adversarial_weight, pseudo_from):
    """C's weights (alpha_c, alpha_p) in round `epoch` (from 0): none while pretraining,
    then alpha_c rising linearly from 0 to `adversarial_weight` over `ramp` rounds, and
    alpha_p = 0.1 from round `pseudo_from` on."""
    played = epoch - pretrain
    if played < 0:
        return 0., 0.
    alpha_c = adversarial_weight * (min(1., played / ramp) if ramp else 1.)
    return alpha_c, 0.1 if epoch >= pseudo_from else 0.


class _Turns:
    """round -> (player, (x_u, x_l, y_l)) for `n_batches` unlabelled batches drawn from
    `unlabelled` and each player in turn (only "pretrain" in the first `pretrain` rounds);
    the labelled batch is the whole labelled set (at most `labelled_batch` of it), all
    drawn with the global RNG (a resume replays them)."""

    def __init__(self, unlabelled, x_l, y_l, batch_size, labelled_batch, n_batches, pretrain):
        self.unlabelled, self.x_l, self.y_l = unlabelled, x_l, y_l
        self.batch_size, self.labelled_batch = batch_size, labelled_batch
        self.n_batches, self.pretrain = n_batches, pretrain

    def __call__(self, epoch):
        players = ("pretrain",) if epoch < self.pretrain else PLAYERS
        for _ in range(self.n_batches):
            x_u = self.unlabelled[torch.randint(len(self.unlabelled), (self.batch_size,))]
            pick = torch.randperm(len(self.x_l))[:self.labelled_batch]
            for player in players:
                yield player, (x_u, self.x_l[pick], self.y_l[pick])


@torch.no_grad()
def test_error(clf, images, labels):
    """(the fraction of `images` [n, 784] that `clf`, in eval mode, puts in another class,
    the largest fraction it puts in any one class)."""
    was_training = clf.training
    clf.eval()
    predicted = torch.cat([clf(x).argmax(-1) for x in images.split(1000)])
    clf.train(was_training)
    largest = torch.bincount(predicted, minlength=N_CLASSES).max() / len(images)
    return float((predicted != labels).float().mean()), float(largest)


def main(argv=None):
    """`python -m models.gan.triple_gan ARGV`; returns the metrics written to DIR/metrics.json."""
    p = common.parser("gan.triple_gan", "Train Triple-GAN (Li et al. 2017) for semi-supervised "
                                        "MNIST classification.", epochs=16, batch_size=100,
                      lr=3e-4)
    p.add_argument("--labels", type=zoo.positive_int, default=100)
    p.add_argument("--classifier-lr", type=float, default=1e-3)
    p.add_argument("--round", type=zoo.positive_int, default=100,
                   help="unlabelled batches per round (the test error is taken after each)")
    p.add_argument("--pretrain", type=int, default=10,
                   help="rounds of training C alone first (default 10)")
    p.add_argument("--pseudo-from", type=int, default=None,
                   help="the round from which C also learns from G's pairs (alpha_p = 0.1; "
                        "default: --pretrain + 2 --ramp)")
    p.add_argument("--adversarial-weight", type=float, default=0.5,
                   help="C's adversarial weight alpha_c once ramped up (default 0.5)")
    p.add_argument("--ramp", type=int, default=3,
                   help="game rounds over which alpha_c rises from 0 (default 3; 0: at once)")
    p.add_argument("--balance", type=float, default=0.3,
                   help="C's class-balance weight in the game (default 0.3)")
    p.add_argument("--classified-real", action=argparse.BooleanOptionalAction, default=True,
                   help="D also takes C's pairs on half of each unlabelled batch as real "
                        "(the authors' MNIST code; default on)")
    args = p.parse_args(argv)
    zoo.start(args)
    budget = zoo.Budget()
    pseudo_from = (args.pretrain + 2 * args.ramp if args.pseudo_from is None
                   else args.pseudo_from)
    train, labels, _, test, test_labels = common.load(args)
    chosen = torch.from_numpy(labelled_subset(labels.numpy(), args.labels, args.seed))
    gen, disc, clf = cgan.new_generator(), cgan.Discriminator(), Classifier()
    average = copy.deepcopy(clf)
    with torch.no_grad():  # G's layers exist before the first turn (C's pretraining)
        gen.eval()
        gen(torch.arange(2), args.z_dim).observe()
        gen.train()
    state = {"turn": PLAYERS[0], "round": 0}

    def step(turn_batch):
        state["turn"], batch = turn_batch
        alpha_c, alpha_p = schedule(state["round"], args.pretrain, args.ramp,
                                    args.adversarial_weight, pseudo_from)
        return losses(state["turn"], gen, disc, clf, batch, args.z_dim, alpha_c=alpha_c,
                      alpha_p=alpha_p, balance=args.balance,
                      classified_real=args.classified_real), None

    @torch.no_grad()
    def after_step(player):
        if player in ("classifier", "pretrain"):
            for mean, param in zip(average.parameters(), clf.parameters()):
                mean.lerp_(param, 0.01)

    def adam(lr):
        return lambda params: torch.optim.Adam(params, lr, betas=(0.5, 0.999))
    optimizers = {"generator": (gen, adam(args.lr)), "discriminator": (disc, adam(args.lr)),
                  "classifier": (clf, adam(args.classifier_lr))}
    trainer = inference.Trainer(
        {"generator": gen, "discriminator": disc, "classifier": clf, "average": average},
        lambda _: PlayerOptimizers(
            {name: make_optimizer(opt, module.parameters(), name)
             for name, (module, opt) in optimizers.items()},
            lambda: "classifier" if state["turn"] == "pretrain" else state["turn"],
            after_step),
        checkpoint_path=args.checkpoint, progress=not args.no_progress,
        fingerprint={"train": train, "labelled": chosen, "z_dim": args.z_dim,
                     "round": args.round, "pretrain": args.pretrain})
    turns = _Turns(train, train[chosen], labels[chosen], args.batch_size,
                   min(args.batch_size, len(chosen)), args.round, args.pretrain)
    curve, cpu_curve, largest_curve = [], [], []
    for epoch in range(args.epochs):
        state["round"] = epoch
        trainer.fit(step, turns, n_epochs=epoch + 1)
        error, largest = test_error(average, test, test_labels)
        curve.append(error)
        largest_curve.append(round(largest, 4))
        cpu_curve.append(round(time.process_time() - budget.cpu_started, 1))
        print(f"round {epoch + 1}: test error {error:.4f} (largest predicted class "
              f"{largest:.3f}) at {cpu_curve[-1]} CPU s", flush=True)
    y = torch.arange(args.n_samples) % N_CLASSES
    with torch.random.fork_rng():
        samples = common.generated(gen, lambda batch: gen(batch[1], args.z_dim), (None, y))
    zoo.save_samples(args.out, samples, title="Triple-GAN samples: column c is class c")
    return zoo.write_metrics(args.out, {"test_error": curve[-1]},
                             budget.as_dict(args.epochs, labels=args.labels,
                                            test_error_curve=curve,
                                            cpu_seconds_curve=cpu_curve,
                                            largest_predicted_class_curve=largest_curve))


if __name__ == "__main__":
    main()
