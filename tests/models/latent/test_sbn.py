"""models.latent.sbn: the layer conditionals and the RWS gradient by hand; the command line."""
import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from models.latent import sbn

X_DIM, H_DIM = 5, 3


def bernoulli_log_prob(logits, value):
    """log Bernoulli(value; sigmoid(logits)) summed over the last axis, written out."""
    return (value * F.logsigmoid(logits) + (1 - value) * F.logsigmoid(-logits)).sum(-1)


def binary(*shape):
    return torch.bernoulli(torch.full(shape, 0.5))


def test_model_layer_conditionals_by_hand():
    model, _ = sbn.new_templates()
    k, n = 2, 4
    values = {"h3": binary(k, n, H_DIM), "h2": binary(k, n, H_DIM), "h1": binary(k, n, H_DIM),
              "x": binary(n, X_DIM)}
    bn = model(X_DIM, H_DIM, n, k).observe(**values)
    layer = model.layers
    expected = {
        "h3": bernoulli_log_prob(torch.zeros(k, n, H_DIM), values["h3"]),
        "h2": bernoulli_log_prob(layer["h2_logits"](values["h3"]), values["h2"]),
        "h1": bernoulli_log_prob(layer["h1_logits"](values["h2"]), values["h1"]),
        "x": bernoulli_log_prob(layer["x_logits"](values["h1"]), values["x"]),
    }
    for name, log_p in expected.items():
        torch.testing.assert_close(bn[name].cond_log_p, log_p)
    torch.testing.assert_close(bn.log_joint(), sum(expected.values()))


def test_guide_layer_conditionals_by_hand():
    _, q_net = sbn.new_templates()
    x = binary(4, X_DIM)
    q = q_net(x, H_DIM, 3)
    h1, h2, h3 = (q[name].tensor for name in ("h1", "h2", "h3"))
    assert h1.shape == h2.shape == h3.shape == (3, 4, H_DIM)
    assert set(torch.cat([h1, h2, h3]).unique().tolist()) <= {0., 1.}
    layer = q_net.layers
    torch.testing.assert_close(q["h1"].cond_log_p, bernoulli_log_prob(layer["h1_logits"](x), h1))
    torch.testing.assert_close(q["h2"].cond_log_p, bernoulli_log_prob(layer["h2_logits"](h1), h2))
    torch.testing.assert_close(q["h3"].cond_log_p, bernoulli_log_prob(layer["h3_logits"](h2), h3))


def test_rws_gradients_by_hand():
    """Model: -sum_j w~_j grad log p(x, h_j); guide: -sum_j w~_j grad log q(h_j | x)."""
    model, q_net = sbn.new_templates()
    x = binary(4, X_DIM)
    step = sbn.sbn_step(model, q_net, H_DIM, "rws", n_particles=5)
    step(x)  # creates the layers (their initialization draws random numbers)
    torch.manual_seed(3)
    cost, _ = step(x)
    params = list(model.parameters()) + list(q_net.parameters())
    grads = torch.autograd.grad(cost, params)
    torch.manual_seed(3)
    q = q_net(x, H_DIM, 5)
    h = {name: q[name].tensor for name in ("h1", "h2", "h3")}
    m, g = model.layers, q_net.layers
    log_p = (bernoulli_log_prob(torch.zeros_like(h["h3"]), h["h3"])
             + bernoulli_log_prob(m["h2_logits"](h["h3"]), h["h2"])
             + bernoulli_log_prob(m["h1_logits"](h["h2"]), h["h1"])
             + bernoulli_log_prob(m["x_logits"](h["h1"]), x))
    log_q = (bernoulli_log_prob(g["h1_logits"](x), h["h1"])
             + bernoulli_log_prob(g["h2_logits"](h["h1"]), h["h2"])
             + bernoulli_log_prob(g["h3_logits"](h["h2"]), h["h3"]))
    weights = (log_p - log_q).softmax(0).detach()
    surrogate = -(weights * (log_p + log_q)).sum(0).mean()
    for got, expected in zip(grads, torch.autograd.grad(surrogate, params)):
        torch.testing.assert_close(got, expected)


def test_unknown_estimator_is_refused(capsys):
    model, q_net = sbn.new_templates()
    with pytest.raises(ValueError, match="unknown estimator 'nvil': expected one of vimco, rws"):
        sbn.sbn_step(model, q_net, H_DIM, "nvil")
    with pytest.raises(SystemExit):
        sbn.main(["--estimator", "nvil"])
    assert "invalid choice: 'nvil' (choose from" in capsys.readouterr().err


def test_one_particle_is_refused(capsys):
    with pytest.raises(SystemExit):
        sbn.main(["--particles", "1"])
    assert "--particles must be at least 2" in capsys.readouterr().err


@pytest.mark.parametrize("estimator", sbn.ESTIMATORS)
def test_command_line_trains_and_writes_metrics_and_samples(estimator, tmp_path,
                                                            require_dataset):
    require_dataset("mnist")
    out = tmp_path / estimator
    metrics = sbn.main(["--estimator", estimator, "--epochs", "1", "--train-size", "96",
                        "--test-size", "20", "--z-dim", "8", "--iw-samples", "20",
                        "--n-samples", "12", "--out", str(out), "--no-progress", "--no-trace"])
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["test_loglik_nats"] < 0 and metrics["test_iw_bound_k10_nats"] < 0
    assert metrics["test_elbo_nats"] < 0
    assert json.loads((out / "run.json").read_text())["estimator"] == estimator
    samples = np.load(out / "samples.npy")
    assert samples.shape == (12, 784) and samples.min() >= 0 and samples.max() <= 1
    assert (out / "samples.png").is_file()
