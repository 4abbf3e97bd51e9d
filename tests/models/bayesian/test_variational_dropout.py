"""models.bayesian.variational_dropout: ZhuSuan's learned Gaussian dropout on MNIST (#27)."""
import json
import math

import pytest
import torch

from models.bayesian import variational_dropout as vd

SIZES = (6, 5, 3)


def test_log_joint_and_guide_are_zhusuans():
    """log p = sum_i log N(eps_i; 1, 1) + N log Cat(y; logits); q(eps_i) = N(1, sigmoid(a_i))."""
    torch.manual_seed(0)
    model, variational = vd.new_templates(n_train=50)
    x, y = torch.randn(4, 6), torch.tensor([0, 2, 1, 2])
    q = variational(4, SIZES, 3)
    eps = {name: q.outputs(name) for name in ("layer0/eps", "layer1/eps")}
    assert eps["layer0/eps"].shape == (3, 4, 6) and eps["layer1/eps"].shape == (3, 4, 5)
    alpha = torch.sigmoid(variational.params["layer0_logit_alpha"])
    torch.testing.assert_close(q.cond_log_prob("layer0/eps"),
                               torch.distributions.Normal(1., alpha.sqrt())
                               .log_prob(eps["layer0/eps"]).sum(-1))
    bn = model(x, SIZES, 3).observe(y=y, **eps)
    noise = sum(torch.distributions.Normal(1., 1.).log_prob(e).sum(-1) for e in eps.values())
    log_lik = torch.distributions.Categorical(logits=bn["logits"]).log_prob(y)
    assert bn["logits"].shape == (3, 4, 3)
    torch.testing.assert_close(bn.log_joint(), noise + 50 * log_lik)


def test_evaluate_averages_the_softmax_over_particles():
    torch.manual_seed(1)
    model, variational = vd.new_templates(n_train=10)
    x, y = torch.randn(10, 6), torch.arange(10) % 3
    error, log_lik = vd.evaluate(model, variational, x, y, n_particles=4, net_size=SIZES)
    assert 0 <= error <= 1 and log_lik < 0 and model.training


def test_bad_labels_name_node_y():
    model, variational = vd.new_templates(n_train=4)
    with pytest.raises(ValueError, match="node 'y': expected int64 labels in 0..2"):
        vd.train(model, variational, torch.randn(4, 6), torch.tensor([0, 1, 3, 0]), epochs=1,
                 batch_size=2, net_size=SIZES, progress=False)


def test_command_line_on_mnist(require_dataset, tmp_path, capsys):
    """One epoch on 300 images: metrics.json with a test error below chance."""
    require_dataset("mnist")
    metrics = vd.main(["--epochs", "1", "--train-size", "300", "--test-size", "200",
                       "--batch-size", "50", "--n-samples", "10", "--out", str(tmp_path),
                       "--no-progress"])
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert 0 <= metrics["test_error"] < 0.9 and math.isfinite(metrics["test_loglik_nats"])
    assert "mean alpha per layer" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        vd.main(["--data", "cifar10", "--out", str(tmp_path)])
    assert "only 'mnist' is supported" in capsys.readouterr().err
