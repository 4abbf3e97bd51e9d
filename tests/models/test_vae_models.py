"""The VAE, IWAE and Bernoulli-latent VAE: input errors, learning, evaluation, resume."""
import json

import numpy as np
import pytest
import torch

import inference
from models import experiment
from models.data import BinarizedBatches, load_binary_images
from models.latent import bernoulli_vae, iwae, vae

HIDDEN = (64, 64)


@pytest.fixture(scope="module")
def digits():
    return load_binary_images("digits", seed=0)


def fit(modules, step, digits, epochs, lr=3e-3, seed=0):
    """Train for `epochs` of 23 batches of 64 digits."""
    torch.manual_seed(seed)
    trainer = inference.Trainer(modules, lambda params: torch.optim.Adam(params, lr=lr),
                                progress=False)
    trainer.fit(step, BinarizedBatches(digits.train, 64, seed=seed), n_epochs=epochs)


def per_image_elbo(gen, q_net, x, z_dim, particles=10):
    """The ELBO of each image, averaged over `particles` draws: [n]."""
    with torch.no_grad():
        model = gen(x.shape[1], z_dim, x.shape[0], particles)
        variational = q_net(x, z_dim, particles)
        return inference.elbo(model, {"x": x}, variational=variational, axis=0).tensor


def assert_improves(before, after, margin):
    """`after` beats `before` by `margin` nats and by 5 standard errors of the difference."""
    gain = after - before
    se = float(gain.std() / np.sqrt(len(gain)))
    assert float(gain.mean()) > max(margin, 5 * se), (float(gain.mean()), se)


@pytest.mark.parametrize("make_bad, message", [
    (lambda x: x[:, :63], r"node 'x'.*shape \[n, 64\].*\(16, 63\)"),
    (lambda x: x.to(torch.uint8), r"node 'x'.*floating-point.*uint8"),
    (lambda x: x[None], r"node 'x'.*\(1, 16, 64\)"),
    (lambda x: 0.5 * x, r"node 'x'.*outside the support"),
])
def test_bad_images_name_node_x(digits, make_bad, message):
    gen, q_net = vae.new_templates()
    step = vae.elbo_step(gen, q_net, z_dim=4, hidden=HIDDEN)
    x = torch.from_numpy(digits.test[:16])
    step(x)  # creates the layers: 64 inputs
    with pytest.raises(ValueError, match=message):
        step(make_bad(x))


def test_vae_training_improves_test_elbo(digits):
    gen, q_net = vae.new_templates()
    x_test = torch.from_numpy(digits.test)
    step = vae.elbo_step(gen, q_net, z_dim=8, hidden=HIDDEN)
    step(x_test[:2])
    torch.manual_seed(1)
    before = per_image_elbo(gen, q_net, x_test, 8)
    fit({"model": gen, "guide": q_net}, step, digits, epochs=2)
    after = per_image_elbo(gen, q_net, x_test, 8)
    assert_improves(before, after, margin=8.0)


def test_importance_sampling_chunks_merge_exactly(digits):
    gen, q_net = vae.new_templates()
    step = vae.elbo_step(gen, q_net, z_dim=8, hidden=HIDDEN)
    fit({"model": gen, "guide": q_net}, step, digits, epochs=2)
    x = torch.from_numpy(digits.test)
    torch.manual_seed(2)
    elbo = per_image_elbo(gen, q_net, x, 8, particles=200)
    model = experiment.zhusuan_model(gen, q_net, x.shape[1], 8, step=None)
    whole = experiment.is_loglikelihood(model, x, n_samples=200)
    # one sample per chunk: 200 chunks merged by logsumexp
    chunked = experiment.is_loglikelihood(model, x, n_samples=200, max_elements=x.numel())
    assert whole.shape == chunked.shape == (300,)
    diff = chunked - whole
    assert abs(float(diff.mean())) < 5 * float(diff.std() / np.sqrt(len(diff)))
    # ... and both are tighter than the ELBO (averaging chunk estimates would not be).
    assert_improves(elbo, chunked, margin=0.05)


def test_iwae_training_improves_bound(digits):
    gen, q_net = iwae.new_templates()
    x_test = torch.from_numpy(digits.test[:100])
    step = iwae.iw_step(gen, q_net, z_dim=8, n_particles=10, hidden=HIDDEN)
    step(x_test[:2])
    torch.manual_seed(1)
    with torch.no_grad():
        before = iwae.iw_objective(gen, q_net, x_test, 8, 10).tensor
    fit({"model": gen, "guide": q_net}, step, digits, epochs=2)
    with torch.no_grad():
        after = iwae.iw_objective(gen, q_net, x_test, 8, 10).tensor
    assert_improves(before, after, margin=5.0)


@pytest.mark.parametrize("estimator", ["reinforce", "vimco"])
def test_bernoulli_vae_learns_with_score_function_gradients(digits, estimator):
    gen, q_net, baseline = bernoulli_vae.new_templates()
    if estimator == "reinforce":
        modules = {"model": gen, "guide": q_net, "baseline": baseline}
        step = bernoulli_vae.reinforce_step(gen, q_net, baseline, z_dim=16, hidden=HIDDEN)
    else:
        modules = {"model": gen, "guide": q_net}
        step = bernoulli_vae.vimco_step(gen, q_net, z_dim=16, n_particles=5, hidden=HIDDEN)
    x_test = torch.from_numpy(digits.test)
    step(x_test[:2])
    torch.manual_seed(1)
    before = per_image_elbo(gen, q_net, x_test, 16)
    fit(modules, step, digits, epochs=3)
    after = per_image_elbo(gen, q_net, x_test, 16)
    assert_improves(before, after, margin=5.0)
    if estimator == "reinforce":  # the moving-average baseline lives in the model template
        assert int(gen.layers["reinforce_moving_mean"].n_updates) == 1 + 3 * 23


def test_cli_checkpoint_resume_replays_the_uninterrupted_run(tmp_path, monkeypatch):
    args = ["--epochs", "3", "--batch-size", "128", "--hidden", "16", "--z-dim", "4",
            "--iw-samples", "5", "--test-size", "20", "--no-progress", "--seed", "5"]

    def run(extra, epochs=None):
        gen, q_net = vae.new_templates()  # main() trains the module's templates: use fresh ones
        monkeypatch.setattr(vae, "build_gen", gen)
        monkeypatch.setattr(vae, "build_q_net", q_net)
        argv = args + extra + ([] if epochs is None else ["--epochs", str(epochs)])
        return vae.main(argv), gen

    straight, gen_straight = run(["--out", str(tmp_path / "a")])
    checkpoint = tmp_path / "vae.pt"
    run(["--out", str(tmp_path / "b"), "--checkpoint", str(checkpoint)], epochs=2)
    assert checkpoint.exists()
    resumed, gen_resumed = run(["--out", str(tmp_path / "b"), "--checkpoint", str(checkpoint)])
    histories = [json.loads((tmp_path / run / "run.json").read_text())["history"]
                 for run in "ab"]
    assert len(histories[0]) == len(histories[1]) == 3
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-6)
    for (name, a), b in zip(gen_straight.state_dict().items(), gen_resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    assert resumed["test_loglik_nats"] == pytest.approx(straight["test_loglik_nats"])
    saved = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert saved == resumed and saved["budget"]["epochs"] == 3
    assert saved["test_loglik_nats"] >= saved["test_elbo_nats"] - 1.0
    assert json.loads((tmp_path / "b" / "run.json").read_text())["hidden"] == [16]
    assert np.load(tmp_path / "b" / "samples.npy").shape == (100, 64)
    assert (tmp_path / "b" / "samples.png").stat().st_size > 5000
