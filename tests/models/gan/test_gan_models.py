"""Each GAN of the zoo runs from its command line for a few steps on a small subset and writes
metrics.json (with a budget), samples.npy [N, 784] in [0, 1], samples.png and progress.png;
with a classifier in the cache (an untrained stand-in here) the classifier metrics too."""
import importlib
import json

import numpy as np
import pytest
import torch

from models.data import data_root
from models.gan import metrics

MNIST, FASHION = data_root() / "mnist", data_root() / "fashion-mnist"
SMALL = ["--epochs", "1", "--train-size", "49", "--batch-size", "16", "--test-size", "30",
         "--n-samples", "12", "--fid-samples", "20", "--z-dim", "4", "--no-progress"]
needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason=f"MNIST not found at {MNIST}")


@needs_mnist
@pytest.mark.parametrize("name, extra", [
    ("gan", ["--loss", "minimax"]),
    ("dcgan", ["--width", "4"]),
    ("wgan", ["--width", "4", "--penalty", "clip", "--n-critic", "2"]),
    ("wgan", ["--width", "4", "--penalty", "gp", "--n-critic", "2"]),
    pytest.param("dcgan", ["--width", "4", "--data", "fashion-mnist"], marks=pytest.mark.skipif(
        not FASHION.is_dir(), reason=f"Fashion-MNIST not found at {FASHION}")),
])
def test_each_gan_runs_and_writes_its_outputs(name, extra, tmp_path, empty_cache):
    module = importlib.import_module(f"models.gan.{name}")
    written = module.main(SMALL + extra + ["--out", str(tmp_path)])
    assert json.loads((tmp_path / "metrics.json").read_text()) == written
    assert {"critic_loss", "parzen_loglik_nats", "parzen_sigma"} <= set(written)
    assert "classifier_fid" not in written  # no classifier cached: said in the budget entry
    assert ("not cached" in written["budget"]["classifier"]
            or "Fashion" in written["budget"]["classifier"])
    samples = np.load(tmp_path / "samples.npy")
    assert samples.shape == (12, 784) and samples.dtype == np.float32
    assert samples.min() >= 0 and samples.max() <= 1
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "progress.png").is_file()


@needs_mnist
def test_cgan_with_a_cached_classifier_writes_the_classifier_metrics(tmp_path, empty_cache):
    metrics.classifier_path().parent.mkdir(parents=True)
    torch.save({"format": 1, "state_dict": metrics.Classifier().state_dict(),
                "test_accuracy": 0.5}, metrics.classifier_path())
    from models.gan import cgan
    written = cgan.main(SMALL + ["--epochs", "3", "--out", str(tmp_path)])
    assert {"classifier_fid", "inception_score", "precision", "recall", "max_class_fraction",
            "conditional_error", "critic_loss_fid_correlation",
            "critic_loss_fid_spearman"} <= set(written)
    assert len(written["budget"]["fid_curve"]) == 3
    assert 0 < written["budget"]["train_cpu_seconds"] <= written["budget"]["cpu_seconds"]
    assert np.load(tmp_path / "samples.npy").shape == (12, 784)


def test_unknown_data_is_refused(tmp_path):
    from models.gan import gan
    with pytest.raises(ValueError, match="--data must be one of"):
        gan.main(SMALL + ["--data", "cifar", "--out", str(tmp_path)])


@needs_mnist
def test_triple_gan_runs_and_writes_its_test_error(tmp_path):
    from models.gan import triple_gan
    written = triple_gan.main(SMALL + ["--labels", "20", "--epochs", "3", "--round", "2",
                                       "--pretrain", "1", "--pseudo-from", "2",
                                       "--out", str(tmp_path)])
    assert 0 <= written["test_error"] <= 1 and len(written["budget"]["test_error_curve"]) == 3
    assert len(written["budget"]["cpu_seconds_curve"]) == 3
    assert np.load(tmp_path / "samples.npy").shape == (12, 784)
    chosen = triple_gan.labelled_subset(np.arange(200) % 10, 20, seed=0)
    assert np.bincount(np.arange(200)[chosen] % 10).tolist() == [2] * 10
    with pytest.raises(ValueError, match="multiple of 10"):
        triple_gan.labelled_subset(np.arange(200) % 10, 15, seed=0)


def test_the_cgan_discriminator_projects_the_label():
    """f(x, y) = w . h + embed(y) . h, h = phi([x, onehot(y)]): a wrong label moves the score
    through the projection (the concatenated label alone was ignored in training)."""
    from models.gan import cgan
    disc = cgan.Discriminator().eval()
    x, y = torch.rand(5, 784), torch.tensor([0, 3, 3, 7, 9])
    h = disc.body(torch.cat([x, torch.nn.functional.one_hot(y, 10).float()], dim=-1))
    by_hand = disc.out(h) + (disc.embed(y) * h).sum(-1, keepdim=True)
    torch.testing.assert_close(disc(x, y), by_hand)


def test_random_affine_moves_images_and_the_identity_leaves_them():
    from models.gan import triple_gan
    torch.manual_seed(0)
    x = torch.zeros(2, 784)
    x.view(2, 28, 28)[:, 10:18, 12:16] = 1.
    torch.testing.assert_close(triple_gan.random_affine(x, shift=0., rotate=0., scale=0.), x)
    moved = triple_gan.random_affine(x)
    assert moved.shape == x.shape and not torch.allclose(moved, x)
    assert moved.sum(1).sub(32.).abs().max() < 32 * 0.25  # the mass moves, scaled by <= 10%


def test_triple_gan_pretraining_cost_by_hand():
    """C alone: labelled cross-entropy + 0.3 entropy of p_c(y | x_u) + 0.3 cross-entropy of
    the batch's mean prediction against the uniform distribution."""
    from models.gan import triple_gan
    clf = triple_gan.Classifier().eval()
    x_u, x_l, y_l = torch.rand(6, 784), torch.rand(4, 784), torch.tensor([1, 2, 3, 1])
    p = torch.softmax(clf(x_u), -1)
    by_hand = (torch.nn.functional.cross_entropy(clf(x_l), y_l)
               - 0.3 * (p * p.log()).sum(-1).mean() - 0.3 * p.mean(0).log().mean())
    cost = triple_gan.losses("pretrain", None, None, clf, (x_u, x_l, y_l), z_dim=4)
    torch.testing.assert_close(cost, by_hand, rtol=1e-5, atol=1e-6)


@needs_mnist
def test_a_resumed_run_does_not_score_the_epochs_it_skipped(tmp_path, empty_cache):
    """The FID curve's epochs before the checkpoint hold None, not the resumed generator's FID
    (which made a resumed WGAN-GP's curve start flat and its correlation meaningless)."""
    metrics.classifier_path().parent.mkdir(parents=True)
    torch.save({"format": 1, "state_dict": metrics.Classifier().state_dict(),
                "test_accuracy": 0.5}, metrics.classifier_path())
    from models.gan import gan
    argv = SMALL + ["--checkpoint", str(tmp_path / "gan.pt"), "--out", str(tmp_path)]
    first = gan.main(argv + ["--epochs", "2"])["budget"]["fid_curve"]
    resumed = gan.main(argv + ["--epochs", "4"])
    curve = resumed["budget"]["fid_curve"]
    assert curve[0] is None and curve[1] == pytest.approx(first[1])
    assert all(value is not None for value in curve[1:])
    assert "fid_after_first_epoch" not in resumed and "critic_loss_fid_spearman" in resumed


def test_the_triple_gan_game_starts_where_the_pretraining_left_off():
    """In the first game round C's adversarial weight is 0 and its balance weight the
    pretraining's, so C's cost is the pretraining cost (the game with alpha_c = 0.5 and
    balance 1e-3 at once raised the test error from 5.5% to 14.1%); alpha_c then rises
    linearly over `ramp` rounds and G's pairs join from `pseudo_from`."""
    from models.gan import cgan, triple_gan
    torch.manual_seed(0)
    clf, disc, gen = triple_gan.Classifier().eval(), cgan.Discriminator(), cgan.new_generator()
    batch = (torch.rand(6, 784), torch.rand(4, 784), torch.tensor([1, 2, 3, 1]))
    alpha_c, alpha_p = triple_gan.schedule(10, pretrain=10, ramp=5, adversarial_weight=0.5,
                                           pseudo_from=20)
    assert (alpha_c, alpha_p) == (0., 0.)
    torch.testing.assert_close(
        triple_gan.losses("classifier", gen, disc, clf, batch, z_dim=4, alpha_c=alpha_c),
        triple_gan.losses("pretrain", None, None, clf, batch, z_dim=4))
    assert triple_gan.schedule(3, 10, 5, 0.5, 20) == (0., 0.)
    assert triple_gan.schedule(12, 10, 5, 0.5, 20) == (pytest.approx(0.2), 0.)
    assert triple_gan.schedule(20, 10, 5, 0.5, 20) == (0.5, 0.1)
    assert triple_gan.schedule(10, 10, 0, 0.5, 20) == (0.5, 0.)


def test_minibatch_std_appends_the_batch_spread_as_a_channel():
    from models.gan import dcgan
    h = torch.tensor([0., 2.]).reshape(2, 1, 1, 1).expand(2, 3, 2, 2).clone()
    out = dcgan.MinibatchStd()(h)
    assert out.shape == (2, 4, 2, 2) and torch.equal(out[:, :3], h)
    assert torch.allclose(out[:, 3], torch.ones(2, 2, 2))  # std of {0, 2} is 1
    assert torch.equal(dcgan.MinibatchStd()(h[:1])[:, 3], torch.zeros(1, 2, 2))
    assert dcgan.discriminator(4, minibatch_std=True)(torch.rand(3, 784)).shape == (3, 1)


def test_triple_gan_discriminator_cost_with_classified_pairs_as_real():
    """`classified_real` (the authors' MNIST code): D's real pairs are the labelled ones and
    C's pairs on the first half of x_u; C's pairs on the second half are the fake ones."""
    from models.gan import cgan, triple_gan
    torch.manual_seed(0)
    clf, disc, gen = triple_gan.Classifier().eval(), cgan.Discriminator().eval(), \
        cgan.new_generator()
    x_u, x_l, y_l = torch.rand(6, 784), torch.rand(4, 784), torch.tensor([1, 2, 3, 1])
    gen(torch.arange(2), 4).observe()  # G's layers exist (their initialization draws)
    with torch.random.fork_rng():
        cost = triple_gan.losses("discriminator", gen, disc, clf, (x_u, x_l, y_l), z_dim=4,
                                 classified_real=True)
    y_g = torch.randint(10, (6,))
    x_g = gen(y_g, 4).observe().outputs("x")
    y_u = clf(x_u).argmax(-1)
    softplus = torch.nn.functional.softplus
    by_hand = (softplus(-disc(torch.cat([x_l, x_u[:3]]), torch.cat([y_l, y_u[:3]]))).mean()
               + 0.5 * softplus(disc(x_u[3:], y_u[3:])).mean()
               + 0.5 * softplus(disc(x_g, y_g)).mean())
    torch.testing.assert_close(cost, by_hand)
