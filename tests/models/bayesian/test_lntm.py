"""models.bayesian.lntm: the M-step by hand and as a maximizer, the E-step's log joint,
document completion, a short run on 20 Newsgroups, and vocabulary mismatches."""
import json

import pytest
import torch

from models.bayesian import lntm
from models.data.newsgroups import bag_of_words
from models.data.paths import data_root


def test_m_step_by_hand_on_one_document():
    """x = (2, 1, 0), theta = (1/2, 1/2): expected counts x_w theta_k phi_kw / (theta phi)_w."""
    x = torch.tensor([[2., 1., 0.]])
    theta = torch.tensor([[0.5, 0.5]])
    phi = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.4, 0.4]])
    # (theta phi) = (0.35, 0.325, 0.325)
    stats = lntm.topic_statistics(x, theta, phi)
    expected = torch.tensor([[2 * 0.25 / 0.35, 0.125 / 0.325, 0.],
                             [2 * 0.10 / 0.35, 0.200 / 0.325, 0.]])
    torch.testing.assert_close(stats, expected)
    new = lntm.m_step(stats, smoothing=0.1)
    row_totals = expected.sum(1, keepdim=True) + 0.3
    torch.testing.assert_close(new, (expected + 0.1) / row_totals)


def _objective(stats, phi, smoothing):
    return float((stats * phi.log()).sum() + smoothing * phi.log().sum())


def test_m_step_maximizes_the_expected_log_joint_and_raises_the_likelihood():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (6, 8), generator=g).double()
    theta = torch.softmax(torch.randn(3, 6, 4, generator=g, dtype=torch.float64), -1)
    phi = torch.softmax(torch.randn(4, 8, generator=g, dtype=torch.float64), -1)
    stats = lntm.topic_statistics(x, theta, phi)
    assert float(stats.sum()) == pytest.approx(float(x.sum()))  # every word is assigned
    new = lntm.m_step(stats, 0.01)
    best = _objective(stats, new, 0.01)
    for _ in range(20):  # no other topics do better on the EM objective
        other = torch.softmax(new.log() + 0.1 * torch.randn(new.shape, generator=g,
                                                            dtype=torch.float64), -1)
        assert _objective(stats, other, 0.01) < best

    def log_lik(topics):  # mean over the samples, plus the Dirichlet smoothing
        return float((x * (theta @ topics).log()).sum(-1).mean(0).sum()
                     + 0.01 * topics.log().sum())

    assert log_lik(new) > log_lik(phi)


def test_prior_update_is_the_samples_mean_and_log_std():
    eta = torch.tensor([[[0., 1.], [2., 5.]]])
    mean, logstd = lntm.prior_update(eta)
    torch.testing.assert_close(mean, torch.tensor([1., 3.]))
    torch.testing.assert_close(logstd, torch.log(torch.tensor([1., 2.]) + 1e-6))


def test_e_step_log_joint_by_hand():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 3, (2, 5), generator=g).float()
    phi = torch.softmax(torch.randn(3, 5, generator=g), -1)
    eta = torch.randn(1, 2, 3, generator=g)
    mean, logstd = torch.tensor([0.1, -0.2, 0.3]), torch.tensor([0., 0.5, -0.5])
    model = lntm.lntm(1, 2, 3, 5, mean, logstd)
    got = model.observe(x=x, phi=phi, eta=eta).log_joint()
    expected = (torch.distributions.Normal(mean, logstd.exp()).log_prob(eta).sum(-1)
                + (x * torch.log(torch.softmax(eta, -1) @ phi)).sum(-1))
    assert got.shape == (1, 2)
    torch.testing.assert_close(got, expected)


def test_completion_split_halves_every_kept_document():
    x = torch.tensor([[4., 0., 6.], [1., 0., 0.], [0., 10., 10.]])
    observed, held_out = lntm.completion_split(x, seed=0)
    assert len(observed) == 2  # the one-word document cannot be split
    torch.testing.assert_close(observed + held_out, x[[0, 2]])
    perfect = (held_out / held_out.sum(1, keepdim=True)).double()
    # the held-out words' own frequencies are the best possible word distribution
    assert lntm.completion_perplexity(perfect, held_out) < lntm.completion_perplexity(
        torch.full_like(perfect, 1 / 3), held_out)


def test_vocabulary_mismatch_is_refused_naming_the_argument():
    model = lntm.LNTM(2, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"`x` has 4 word columns, but the vocabulary has 3"):
        model.fit(torch.ones(5, 4), epochs=1)
    with pytest.raises(ValueError, match="`x` must hold non-negative integer counts"):
        model.fit(-torch.ones(5, 3), epochs=1)
    with pytest.raises(ValueError, match=r"document 1 has word id 3, outside the vocabulary "
                                         r"of 3 words"):
        bag_of_words([[0, 2], [1, 3]], 3)
    torch.testing.assert_close(bag_of_words([[0, 2, 2], []], 3),
                               torch.tensor([[1., 0., 2.], [0., 0., 0.]]))


@pytest.mark.skipif(not (data_root() / "20newsgroups").is_dir(),
                    reason="20 Newsgroups not found under the data folder (PPL_DATA)")
def test_cli_runs_on_newsgroups_and_writes_metrics_and_topics(tmp_path):
    metrics = lntm.main(["--train-size", "300", "--test-size", "100", "--epochs", "2",
                         "--n-samples", "4", "--n-topics", "4", "--vocab-size", "300",
                         "--out", str(tmp_path), "--no-progress"])
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["test_perplexity"] == pytest.approx(metrics["test_perplexity"])
    assert 1 < written["test_perplexity"] < 300 and 1 < written["train_perplexity"] < 300
    assert written["acceptance"] > 0.3  # the E-step's HMC moves (it once accepted ~0.001)
    assert written["budget"]["n_train_docs"] == 300 and written["budget"]["vocab_size"] == 300
    topics = (tmp_path / "topics.txt").read_text().splitlines()
    assert len(topics) == 4 and all(len(line.split(":")[1].split()) == 10 for line in topics)
